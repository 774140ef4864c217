"""Semaphore, BoundedSemaphore and Event (multiprocessing's), served by corrald.

corrald keeps each one's state (durable) and its waiters: a blocked ``acquire`` is
answered by the ``release`` that frees a permit, a ``wait`` by the ``set`` (no polling).
A semaphore's permits are not tied to a connection: one taken by a process that dies
stays taken, as with multiprocessing. Anonymous when made without a name (removed by
corrald once the program and its children are gone), pickled by reference.
"""

import math
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

from . import _anon, _client
from .errors import Locked, Overflow, Timeout

__all__ = ["Semaphore", "BoundedSemaphore", "Event"]

_S = TypeVar("_S", bound="Semaphore")


def _wait_fields(block: bool, timeout: Optional[float]) -> Dict[str, Any]:
    """``block``/``timeout`` as the protocol's ``block``/``timeout_ms``."""
    if not block:
        return {"block": False}
    if timeout is None:
        return {}
    # A short positive timeout must not round to 0 ("do not wait").
    return {"timeout_ms": max(0, math.ceil(float(timeout) * 1000))}


class Semaphore:
    """``Semaphore(value=1)``: ``acquire(block=True, timeout=None)``, ``release()``,
    ``get_value()``, ``with``. ``name=`` makes (or attaches to) a durable named one."""

    _bounded = False

    def __init__(
        self,
        value: int = 1,
        *,
        name: Optional[str] = None,
        socket: Optional[str] = None,
        ctx: Any = None,
        _attach: bool = False,
    ) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        anonymous = name is None
        self.name = name or _anon.name("semaphore")
        self._socket = socket
        self._bound = int(value)
        if not _attach:
            fields: Dict[str, Any] = {"value": int(value)}
            if self._bounded:
                fields["bound"] = int(value)
            self._call("semaphore_create", **fields)
            if anonymous:
                _anon.made("semaphore", self.name, socket)

    def _call(self, op: str, **fields: Any) -> Any:
        return _client.call(op, socket=self._socket, semaphore=self.name, **fields)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach, (type(self), self.name, self._bound, self._socket))

    def __repr__(self) -> str:
        return "<corral.%s %r value=%d>" % (type(self).__name__, self.name, self.get_value())

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        try:
            self._call("semaphore_acquire", **_wait_fields(block, timeout))
        except (Locked, Timeout):
            return False
        return True

    def release(self) -> None:
        try:
            self._call("semaphore_release")
        except Overflow:
            raise ValueError("semaphore or lock released too many times") from None

    def get_value(self) -> int:
        return int(self._call("semaphore_get")["value"])

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` whose ``release()`` raises ``ValueError`` past its initial
    value (corrald refuses the release)."""

    _bounded = True


class Event:
    """``Event()``: ``set()``, ``clear()``, ``is_set()``, ``wait(timeout=None)``."""

    def __init__(
        self,
        *,
        name: Optional[str] = None,
        socket: Optional[str] = None,
        ctx: Any = None,
        _attach: bool = False,
    ) -> None:
        anonymous = name is None
        self.name = name or _anon.name("event")
        self._socket = socket
        if not _attach and anonymous:
            self._call("event_clear")
            _anon.made("event", self.name, socket)

    def _call(self, op: str, **fields: Any) -> Any:
        return _client.call(op, socket=self._socket, event=self.name, **fields)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach_event, (self.name, self._socket))

    def __repr__(self) -> str:
        return "<corral.Event %r %s>" % (self.name, "set" if self.is_set() else "unset")

    def is_set(self) -> bool:
        return bool(self._call("event_get")["set"])

    def set(self) -> None:
        self._call("event_set")

    def clear(self) -> None:
        self._call("event_clear")

    def wait(self, timeout: Optional[float] = None) -> bool:
        return bool(self._call("event_wait", **_wait_fields(True, timeout))["set"])


def _attach(cls: Type[_S], name: str, bound: int, socket: Optional[str]) -> _S:
    s = cls.__new__(cls)
    Semaphore.__init__(s, bound, name=name, socket=socket, _attach=True)
    return s


def _attach_event(name: str, socket: Optional[str]) -> Event:
    return Event(name=name, socket=socket, _attach=True)
