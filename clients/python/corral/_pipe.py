"""Pipe, SimpleQueue and JoinableQueue (multiprocessing's), built on corrald's queues.

Every object here pickles by reference (the names of its queues and counter), so the
ends of a Pipe and the queues can be passed to Process args, Pool tasks and through
other queues.
"""

import time

from . import _anon, _client
from ._queue import Queue
from ._shared import Value
from .errors import Empty

__all__ = ["Pipe", "PipeConnection", "SimpleQueue", "JoinableQueue"]

# How often poll()/join() look again while they wait (corrald has no wait for these).
_POLL_INTERVAL = 0.005


class PipeConnection:
    """One end of a :func:`Pipe`: ``send``/``recv`` any picklable object, ``poll``."""

    def __init__(self, incoming, outgoing):
        self._in = incoming
        self._out = outgoing
        self.closed = False

    def __reduce__(self):
        return (PipeConnection, (self._in, self._out))

    def _check(self, queue, what):
        if self.closed:
            raise OSError("handle is closed")
        if queue is None:
            raise OSError("connection is %s-only" % what)

    def send(self, obj):
        """Sends ``obj`` to the other end (returns once corrald has it)."""
        self._check(self._out, "read")
        self._out.put(obj)

    def recv(self):
        """Waits for, and returns, the next object sent by the other end."""
        self._check(self._in, "write")
        return self._in.get()

    def send_bytes(self, buf, offset=0, size=None):
        data = bytes(memoryview(buf)[offset:None if size is None else offset + size])
        self.send(data)

    def recv_bytes(self, maxlength=None):
        data = self.recv()
        if maxlength is not None and len(data) > maxlength:
            raise OSError("bad message length")
        return data

    def poll(self, timeout=0.0):
        """Whether there is something to ``recv``, waiting up to ``timeout`` seconds
        (None: forever)."""
        self._check(self._in, "write")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._in.qsize() > 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    def fileno(self):
        raise OSError("a corral pipe has no file descriptor")

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def Pipe(duplex=True, *, socket=None):
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

    def __init__(self, *, ctx=None, name=None, socket=None):
        super().__init__(name, socket=socket)

    def __reduce__(self):
        return (_attach_simple, (self.name, self._socket))


def _attach_simple(name, socket):
    return SimpleQueue(name=name, socket=socket)


class JoinableQueue(Queue):
    """multiprocessing's ``JoinableQueue``: a :class:`Queue` with ``task_done()`` and
    ``join()`` (waits until every item put has been marked done). The count of
    unfinished tasks is a counter in corrald, so producers and consumers may be in
    any processes."""

    def __init__(self, maxsize=0, *, ctx=None, name=None, socket=None):
        anonymous = name is None
        super().__init__(name, maxsize, socket=socket)
        self._unfinished = Value(self.name + ".unfinished", socket=socket)
        if anonymous:
            _anon.made(self._unfinished.delete)

    def __reduce__(self):
        return (_attach_joinable, (self.name, self._socket))

    def put(self, obj, block=True, timeout=None):
        self._unfinished.add(1)
        try:
            super().put(obj, block, timeout)
        except BaseException:
            self._unfinished.add(-1)
            raise

    def task_done(self):
        """Marks one item got from the queue as processed."""
        if self._unfinished.add(-1) < 0:
            self._unfinished.add(1)
            raise ValueError("task_done() called too many times")

    def join(self):
        """Waits until every item put has been marked done."""
        while self._unfinished.value > 0:
            time.sleep(_POLL_INTERVAL)


def _attach_joinable(name, socket):
    q = JoinableQueue.__new__(JoinableQueue)
    Queue.__init__(q, name, socket=socket)
    q._unfinished = Value(name + ".unfinished", socket=socket)
    return q


del _client, Empty
