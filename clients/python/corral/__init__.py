"""corral: Python's multiprocessing API, backed by corrald.

    from corral import Queue, Value, Array, Lock, Pool, Process

    q = Queue("results")            # named, shared by every program on the machine, durable
    q.put({"n": 1}); q.get(timeout=5)
    n = Value("hits")               # a named counter: n.value, n.add(1)
    with Lock("printer"):           # released if this process dies
        print("only one at a time")
    with Pool(4) as pool:           # a pool job run by corrald
        print(pool.map("python3 square.py {}", [1, 2, 3, 4, 5]))
    p = Process(["python3", "worker.py"], daemon=True); p.start(); p.join()

Pure Python, standard library only. Every object talks to corrald over its Unix
socket: ``$CORRAL_SOCKET``, else the default socket (see :func:`socket_path`).
"""

from ._client import PROTOCOL_VERSION, Connection, call, socket_path
from ._lock import Lock
from ._pool import AsyncResult, Pool, PoolIterator
from ._process import Process
from ._queue import Message, Queue
from ._shared import Array, Value
from .errors import (
    CorralConnectionError,
    CorralError,
    CorralPermissionError,
    Empty,
    Full,
    InvalidArgument,
    Locked,
    NotFound,
    NotHeld,
    OutOfRange,
    Overflow,
    PoolItemError,
    ShuttingDown,
    Timeout,
)

__version__ = "0.1.0"

__all__ = [
    "Queue",
    "Message",
    "Value",
    "Array",
    "Lock",
    "Pool",
    "Process",
    "AsyncResult",
    "PoolIterator",
    "socket_path",
    "call",
    "Connection",
    "PROTOCOL_VERSION",
    "CorralError",
    "CorralConnectionError",
    "CorralPermissionError",
    "InvalidArgument",
    "OutOfRange",
    "Overflow",
    "NotFound",
    "Empty",
    "Full",
    "Timeout",
    "NotHeld",
    "Locked",
    "ShuttingDown",
    "PoolItemError",
    "cpu_count",
    "status",
]


def cpu_count():
    """The number of CPUs of this machine (``os.cpu_count()``), as multiprocessing."""
    import os

    return os.cpu_count() or 1


def status(unit=None, socket=None):
    """corrald's ``status``: units and their instances (one unit if ``unit`` is given)."""
    fields = {} if unit is None else {"unit": unit}
    return call("status", socket=socket, **fields)
