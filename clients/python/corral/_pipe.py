"""Pipe, SimpleQueue and JoinableQueue (multiprocessing's), built on corrald's queues.

Every object here pickles by reference (the names of its queues and counter), so the
ends of a Pipe and the queues can be passed to Process args, Pool tasks and through
other queues.
"""

import time
from typing import Any, Optional, Tuple

from . import _anon, _client
from ._queue import Queue
from ._shared import Value
from .errors import Empty

__all__ = ["Pipe", "PipeConnection", "SimpleQueue", "JoinableQueue"]

# How often poll()/join() look again while they wait (corrald has no wait for these).
_POLL_INTERVAL = 0.005


class PipeConnection:
    """One end of a :func:`Pipe`: ``send``/``recv`` any picklable object, ``poll``."""

    def __init__(self, incoming: Optional[Queue], outgoing: Optional[Queue]) -> None:
        self._in = incoming
        self._out = outgoing
        self.closed = False

    def __reduce__(self) -> Tuple[Any, ...]:
        return (PipeConnection, (self._in, self._out))

    def _check(self, queue: Optional[Queue], what: str) -> Queue:
        if self.closed:
            raise OSError("handle is closed")
        if queue is None:
            raise OSError("connection is %s-only" % what)
        return queue

    def send(self, obj: Any) -> None:
        """Sends ``obj`` to the other end (returns once corrald has it)."""
        self._check(self._out, "read").put(obj)

    def recv(self) -> Any:
        """Waits for, and returns, the next object sent by the other end."""
        return self._check(self._in, "write").get()

    def send_bytes(self, buf: Any, offset: int = 0, size: Optional[int] = None) -> None:
        data = bytes(memoryview(buf)[offset:None if size is None else offset + size])
        self.send(data)

    def recv_bytes(self, maxlength: Optional[int] = None) -> Any:
        data = self.recv()
        if maxlength is not None and len(data) > maxlength:
            raise OSError("bad message length")
        return data

    def poll(self, timeout: Optional[float] = 0.0) -> bool:
        """Whether there is something to ``recv``, waiting up to ``timeout`` seconds
        (None: forever)."""
        incoming = self._check(self._in, "write")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if incoming.qsize() > 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    def fileno(self) -> int:
        raise OSError("a corral pipe has no file descriptor")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "PipeConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def Pipe(
    duplex: bool = True, *, socket: Optional[str] = None
) -> Tuple[PipeConnection, PipeConnection]:
    """``(conn1, conn2)`` as multiprocessing's: with ``duplex``, both ends send and
    receive; else ``conn1`` only receives and ``conn2`` only sends. Backed by
    anonymous corrald queues, removed when this program exits."""
    a = Queue(socket=socket)
    if not duplex:
        return PipeConnection(a, None), PipeConnection(None, a)
    b = Queue(socket=socket)
    return PipeConnection(a, b), PipeConnection(b, a)


class SimpleQueue(Queue):
    """multiprocessing's ``SimpleQueue``: ``put``, ``get``, ``empty``, ``close``."""

    def __init__(
        self, *, ctx: Any = None, name: Optional[str] = None, socket: Optional[str] = None
    ) -> None:
        super().__init__(name, socket=socket)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach_simple, (self.name, self._socket))


def _attach_simple(name: str, socket: Optional[str]) -> SimpleQueue:
    return SimpleQueue(name=name, socket=socket)


class JoinableQueue(Queue):
    """multiprocessing's ``JoinableQueue``: a :class:`Queue` with ``task_done()`` and
    ``join()`` (waits until every item put has been marked done). The count of
    unfinished tasks is a counter in corrald, so producers and consumers may be in
    any processes."""

    def __init__(
        self,
        maxsize: int = 0,
        *,
        ctx: Any = None,
        name: Optional[str] = None,
        socket: Optional[str] = None,
    ) -> None:
        anonymous = name is None
        super().__init__(name, maxsize, socket=socket)
        self._unfinished = Value(self.name + ".unfinished", socket=socket)
        if anonymous:
            _anon.made("counter", self._unfinished.name, socket)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_attach_joinable, (self.name, self._socket))

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        self._unfinished.add(1)
        try:
            super().put(obj, block, timeout)
        except BaseException:
            self._unfinished.add(-1)
            raise

    def task_done(self) -> None:
        """Marks one item got from the queue as processed."""
        if self._unfinished.add(-1) < 0:
            self._unfinished.add(1)
            raise ValueError("task_done() called too many times")

    def join(self) -> None:
        """Waits until every item put has been marked done."""
        while self._unfinished.value > 0:
            time.sleep(_POLL_INTERVAL)


def _attach_joinable(name: str, socket: Optional[str]) -> JoinableQueue:
    q = JoinableQueue.__new__(JoinableQueue)
    Queue.__init__(q, name, socket=socket)
    q._unfinished = Value(name + ".unfinished", socket=socket)
    return q


del _client, Empty
