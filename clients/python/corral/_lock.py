"""Lock: a named lock served by corrald (``multiprocessing.Lock``)."""

import os
import threading
import time
import weakref
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

from . import _anon, _client
from ._queue import timeout_ms
from .errors import Locked, NotHeld, Timeout

__all__ = ["Lock", "RLock"]

_L = TypeVar("_L", bound="Lock")


class Lock:
    """A named lock shared by every program that uses the same corrald.

    First come, first served. The lock belongs to this object's own connection to
    corrald, so it is released the moment this process exits, crashes or is killed
    (or the object is closed or garbage-collected). Not re-entrant, like
    ``multiprocessing.Lock``; threads of one process that share a ``Lock`` object
    take turns on it as they would with ``multiprocessing.Lock``.

    Each grant carries a fencing ``token`` (``lock.token`` after ``acquire``) that
    grows with every grant, across restarts of corrald: hand it to the resource the
    lock protects so it can refuse a stale holder.
    """

    def __init__(
        self, name: Optional[str] = None, *, socket: Optional[str] = None, ctx: Any = None
    ) -> None:
        if name is None:
            name = _anon.name("lock")
        if not isinstance(name, str):
            raise TypeError("lock name must be a string, not %r" % (name,))
        self.name = name
        self._conn = _client.Connection(socket)
        # Threads of this process queue here first: corrald sees one client per Lock.
        self._local = threading.Lock()
        self.token: Optional[int] = None
        _LOCKS.add(self)

    def __reduce__(self) -> Tuple[Any, ...]:
        # By reference: the unpickled Lock is the same lock, through its own connection.
        return (_attach, (type(self), self.name, self._conn._path))

    def __repr__(self) -> str:
        state = "held, token %d" % self.token if self.token is not None else "not held"
        return "<corral.Lock %r %s>" % (self.name, state)

    def acquire(self, block: bool = True, timeout: Optional[float] = -1) -> bool:
        """Takes the lock; returns True, or False if ``block`` is false and it is held,
        or if ``timeout`` seconds passed (``None`` or negative: wait forever)."""
        if timeout is None or (timeout is not None and timeout < 0):
            timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        if not block:
            if not self._local.acquire(False):
                return False
        elif timeout is None:
            self._local.acquire()
        elif not self._local.acquire(True, timeout):
            return False
        try:
            fields: Dict[str, Any] = {"lock": self.name}
            if not block:
                fields["block"] = False
            elif deadline is not None:
                fields["timeout_ms"] = timeout_ms(max(0.0, deadline - time.monotonic()))
            try:
                grant = self._conn.request("lock_acquire", fields)
            except (Locked, Timeout):
                self._local.release()
                return False
        except BaseException:
            self._local.release()
            raise
        self.token = grant["token"]
        return True

    def release(self) -> None:
        """Releases the lock (``ValueError`` if this object does not hold it)."""
        if self.token is None:
            raise NotHeld(
                "lock `%s` is not held by this object (released too many times?)" % self.name,
                "not_held",
            )
        self.token = None
        try:
            self._conn.request("lock_release", {"lock": self.name})
        except NotHeld:
            # corrald lost our connection (e.g. it restarted): the lock is not held.
            pass
        finally:
            self._local.release()

    def locked(self) -> bool:
        """Whether anyone holds the lock now (asks corrald)."""
        result = _client.call("lock_status", socket=self._conn._path, lock=self.name)
        return any(info.get("holder") for info in result.get("locks", []))

    def status(self) -> Dict[str, Any]:
        """corrald's view of the lock: holder (pid, uid, unit, token, held_ms) and waiters."""
        result = _client.call("lock_status", socket=self._conn._path, lock=self.name)
        locks = result.get("locks", [])
        return locks[0] if locks else {"lock": self.name, "waiters": 0}

    def close(self) -> None:
        """Closes the connection; a held lock is released by corrald."""
        self._conn.close()
        if self.token is not None:
            self.token = None
            self._local.release()

    def __enter__(self: _L) -> _L:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _attach(cls: Type[_L], name: str, socket: Optional[str]) -> _L:
    return cls(name, socket=socket)


class RLock(Lock):
    """A re-entrant :class:`Lock` (``multiprocessing.RLock``): the thread holding it may
    acquire it again, and must release it as many times."""

    def __init__(
        self, name: Optional[str] = None, *, socket: Optional[str] = None, ctx: Any = None
    ) -> None:
        super().__init__(name, socket=socket)
        self._owner: Optional[Tuple[int, int]] = None
        self._count = 0

    def acquire(self, block: bool = True, timeout: Optional[float] = -1) -> bool:
        me = (os.getpid(), threading.get_ident())
        if self._owner == me:
            self._count += 1
            return True
        if not super().acquire(block, timeout):
            return False
        self._owner, self._count = me, 1
        return True

    def release(self) -> None:
        me = (os.getpid(), threading.get_ident())
        if self._owner != me:
            raise AssertionError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            super().release()

    def __repr__(self) -> str:
        return "<corral.RLock %r count=%d>" % (self.name, self._count)


# A forked child does not hold its parent's locks (its connections are new): it starts
# with every Lock object released, and an acquire waits for the parent's release.
_LOCKS: "weakref.WeakSet[Lock]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_LOCKS):
        lock._local = threading.Lock()
        lock.token = None
        if isinstance(lock, RLock):
            lock._owner, lock._count = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
