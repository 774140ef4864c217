"""Semaphore, BoundedSemaphore and Event (multiprocessing's), on corrald's counters.

The state is one counter (``NAME``): the free permits of a semaphore, 0/1 for an event;
changes are atomic (``counter_cas``, ``counter_add``). corrald has no wait operation for
them yet, so a blocked ``acquire`` or ``wait`` looks again every 5 ms. Anonymous when made
without a name (removed when the program exits), pickled by reference.
"""

import time
from typing import Any, Optional, Tuple, Type, TypeVar

from . import _anon
from ._shared import Value

__all__ = ["Semaphore", "BoundedSemaphore", "Event"]

_POLL_INTERVAL = 0.005

_S = TypeVar("_S", bound="Semaphore")


def _deadline(block: bool, timeout: Optional[float]) -> Optional[float]:
    if not block:
        return 0.0
    if timeout is None or timeout < 0:
        return None
    return time.monotonic() + timeout


class Semaphore:
    """``Semaphore(value=1)``: ``acquire(block=True, timeout=None)``, ``release()``,
    ``get_value()``, ``with``."""

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
        self._counter = Value(self.name, socket=socket)
        if not _attach:
            self._counter.value = int(value)
            if anonymous:
                _anon.made(self._counter.delete)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach, (type(self), self.name, self._bound, self._socket))

    def __repr__(self) -> str:
        return "<corral.%s %r value=%d>" % (type(self).__name__, self.name, self.get_value())

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        deadline = _deadline(block, timeout)
        while True:
            free = self._counter.value
            if free > 0 and self._counter.compare_and_swap(free, free - 1):
                return True
            if free > 0:
                continue  # another process took one meanwhile: look again at once
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    def release(self) -> None:
        self._counter.add(1)

    def get_value(self) -> int:
        return self._counter.value

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` whose ``release()`` raises ``ValueError`` past its initial
    value."""

    def release(self) -> None:
        while True:
            free = self._counter.value
            if free >= self._bound:
                raise ValueError("semaphore or lock released too many times")
            if self._counter.compare_and_swap(free, free + 1):
                return


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
        self._counter = Value(self.name, socket=socket)
        if not _attach:
            self._counter.value = 0
            if anonymous:
                _anon.made(self._counter.delete)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach_event, (self.name, self._socket))

    def is_set(self) -> bool:
        return self._counter.value != 0

    def set(self) -> None:
        self._counter.value = 1

    def clear(self) -> None:
        self._counter.value = 0

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = _deadline(True, timeout)
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)
        return True


def _attach(cls: Type[_S], name: str, bound: int, socket: Optional[str]) -> _S:
    s = cls.__new__(cls)
    Semaphore.__init__(s, bound, name=name, socket=socket, _attach=True)
    return s


def _attach_event(name: str, socket: Optional[str]) -> Event:
    return Event(name=name, socket=socket, _attach=True)
