"""corral: a drop-in for multiprocessing, backed by corrald.

    from corral import Process, Queue, Pool   # was: from multiprocessing import ...

    def worker(q):
        q.put("Data from process")

    q = Queue()                     # anonymous: removed when this program exits
    p = Process(target=worker, args=(q,)); p.start(); p.join()
    print(q.get())
    with Pool(4) as pool:           # workers of a pool job run by corrald
        print(pool.map(abs, [-1, -2, 3]))

Children are started by corrald (the main script is not re-run, so no ``__main__``
guard is needed), write to this program's stdout and stderr, and daemon children die
with this program even on ``kill -9``. Named objects (``Queue("results")``,
``Value("hits")``, ``Lock("printer")``) are corrald's durable, machine-wide ones; command
forms (``Process(["python3", "worker.py"])``, ``Pool.map("cmd {}", inputs)``) run any
program. Needs cloudpickle. Every object talks to corrald over its Unix socket:
``$CORRAL_SOCKET``, else the default socket (see :func:`socket_path`).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    from ._client import PROTOCOL_VERSION, Connection, call, socket_path
    from ._lock import Lock, RLock
    from ._mp import AuthenticationError, BufferTooShort, ProcessError, TimeoutError
    from ._pipe import JoinableQueue, Pipe, PipeConnection, SimpleQueue
    from ._pool import AsyncResult, Pool, PoolIterator
    from ._process import Process, active_children, current_process, parent_process
    from ._queue import Message, Queue
    from ._shared import Array, SharedValue, Value
    from ._sync import BoundedSemaphore, Event, Semaphore
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

# Where each name of the API lives. They are imported on first use (PEP 562), so that a
# Pool worker or a child, which imports this package first, loads only what it runs:
# interpreter start-up is most of what a Pool's first map costs.
_LAZY: Dict[str, str] = {}
for _module, _names in (
    ("_client", "PROTOCOL_VERSION Connection call socket_path"),
    ("_lock", "Lock RLock"),
    ("_mp", "AuthenticationError BufferTooShort ProcessError TimeoutError"),
    ("_pipe", "JoinableQueue Pipe PipeConnection SimpleQueue"),
    ("_pool", "AsyncResult Pool PoolIterator"),
    ("_process", "Process active_children current_process parent_process"),
    ("_queue", "Message Queue"),
    ("_shared", "Array SharedValue Value"),
    ("_sync", "BoundedSemaphore Event Semaphore"),
    (
        "errors",
        "CorralConnectionError CorralError CorralPermissionError Empty Full InvalidArgument "
        "Locked NotFound NotHeld OutOfRange Overflow PoolItemError ShuttingDown Timeout",
    ),
):
    for _name in _names.split():
        _LAZY[_name] = _module
del _module, _names, _name


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'corral' has no attribute %r" % (name,))
    value = getattr(import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Queue",
    "Message",
    "SimpleQueue",
    "JoinableQueue",
    "Pipe",
    "PipeConnection",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "SharedValue",
    "TimeoutError",
    "ProcessError",
    "AuthenticationError",
    "BufferTooShort",
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
    "current_process",
    "parent_process",
    "active_children",
    "get_context",
    "set_start_method",
    "get_start_method",
    "get_all_start_methods",
    "freeze_support",
]


def get_start_method(allow_none: bool = False) -> str:
    """corral has one way to start a process (corrald starts a fresh interpreter that
    does not re-run the main script); it is reported as ``"spawn"``."""
    return "spawn"


def get_all_start_methods() -> List[str]:
    return ["spawn", "fork", "forkserver"]


def set_start_method(method: Optional[str], force: bool = False) -> None:
    """Accepted for compatibility: every method means corral's own start."""
    if method not in (None, "spawn", "fork", "forkserver"):
        raise ValueError("cannot find context for %r" % (method,))


def freeze_support() -> None:
    """Nothing to do (multiprocessing needs it for frozen Windows programs)."""


class _Context:
    """What ``get_context()`` returns: the corral module's API under any method name."""

    def __init__(self, method: str) -> None:
        self._method = method

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._method

    def __getattr__(self, name: str) -> Any:
        import corral

        if name.startswith("_") or name not in corral.__all__:
            raise AttributeError(name)
        return getattr(corral, name)


def get_context(method: Optional[str] = None) -> _Context:
    """A context object with this module's API (``ctx.Process``, ``ctx.Queue``...)."""
    set_start_method(method)
    return _Context(method or "spawn")


def cpu_count() -> int:
    """The number of CPUs of this machine (``os.cpu_count()``), as multiprocessing."""
    import os

    return os.cpu_count() or 1


def status(unit: Optional[str] = None, socket: Optional[str] = None) -> Any:
    """corrald's ``status``: units and their instances (one unit if ``unit`` is given)."""
    from ._client import call

    fields: Dict[str, Any] = {} if unit is None else {"unit": unit}
    return call("status", socket=socket, **fields)
