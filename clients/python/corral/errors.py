"""Exceptions raised by the corral client.

Every error corrald reports arrives as a :class:`CorralError` carrying the
protocol's ``code``, ``message`` and ``details``. Most codes are raised as a
subclass that is *also* the standard exception a Python program already
catches, so code written for :mod:`multiprocessing` and :mod:`queue` keeps
working:

==========================================  ==========================================
corrald error code                          raised as (also an instance of)
==========================================  ==========================================
(cannot reach the socket)                   :class:`CorralConnectionError` (``ConnectionError``)
``permission_denied``                       :class:`CorralPermissionError` (``PermissionError``)
``bad_request``, ``type_mismatch``,         :class:`InvalidArgument` (``ValueError``)
``too_large``, ``frame_too_large``
``out_of_range``                            :class:`OutOfRange` (``IndexError``, ``ValueError``)
``overflow``                                :class:`Overflow` (``OverflowError``, ``ValueError``)
``not_found``                               :class:`NotFound` (``LookupError``)
``empty``                                   :class:`Empty` (``queue.Empty``)
``full``                                    :class:`Full` (``queue.Full``)
``timeout``                                 :class:`Timeout` (``TimeoutError``)
``not_held``                                :class:`NotHeld` (``ValueError``, as multiprocessing)
``shutting_down``                           :class:`ShuttingDown`
anything else                               :class:`CorralError`
==========================================  ==========================================

A failed pool item raises :class:`PoolItemError` (index, input, exit, stderr).
"""

import queue as _queue
from typing import Any, Dict, Iterable, List, Optional

__all__ = [
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
    "error_from_reply",
]


class CorralError(Exception):
    """An error reported by corrald (``code`` is the protocol's error code)."""

    def __init__(
        self, message: str, code: Optional[str] = None, details: Iterable[str] = ()
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: Optional[str] = code
        self.details: List[str] = list(details or ())

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "".join("\n  " + line for line in self.details)


class CorralConnectionError(CorralError, ConnectionError):
    """corrald cannot be reached (not running, wrong socket) or went away."""

    def __init__(self, message: str, socket_path: Optional[str] = None) -> None:
        super().__init__(message, "connection")
        self.socket_path: Optional[str] = socket_path


class CorralPermissionError(CorralError, PermissionError):
    """The client may not do this (``permission_denied``), or may not use the socket."""


class InvalidArgument(CorralError, ValueError):
    """A bad argument: invalid name, wrong type, value too large (``bad_request``...)."""


class OutOfRange(CorralError, IndexError, ValueError):
    """An array index past the end (``out_of_range``)."""


class Overflow(CorralError, OverflowError, ValueError):
    """An i64 overflow or a non-finite float result (``overflow``)."""


class NotFound(CorralError, LookupError):
    """No such unit, array, pool job... (``not_found``)."""


class Empty(CorralError, _queue.Empty):
    """The queue stayed empty (non-blocking get, or the timeout passed)."""


class Full(CorralError, _queue.Full):
    """The queue stayed full (non-blocking put, or the timeout passed)."""


class Timeout(CorralError, TimeoutError):
    """A deadline passed (``timeout``)."""


class NotHeld(CorralError, ValueError):
    """Releasing a lock this client does not hold (``not_held``)."""


class Locked(CorralError):
    """A non-blocking acquire found the lock held (``locked``); Lock.acquire returns False instead."""


class ShuttingDown(CorralError):
    """corrald is shutting down and takes no new work (``shutting_down``)."""


class PoolItemError(CorralError):
    """One item of a pool job failed (after its retries).

    Attributes: ``index`` (position in the inputs, from 0), ``input``, ``exitcode``
    (exit code, or the negative signal number, or None), ``stdout``, ``stderr``,
    ``error`` (why, when it did not simply exit non-zero: timeout, exec error, worker
    died), ``job`` (the pool job id) and ``item`` (the whole result record).
    """

    def __init__(self, item: Dict[str, Any], job: Optional[int] = None) -> None:
        self.item: Dict[str, Any] = dict(item)
        self.job: Optional[int] = job
        self.index: Optional[int] = item.get("index")
        self.input: Optional[str] = item.get("input")
        self.stdout: str = item.get("stdout", "")
        self.stderr: str = item.get("stderr", "")
        self.error: Optional[str] = item.get("error")
        self.exitcode: Optional[int] = _exitcode(item.get("exit"))
        why = []
        if self.error:
            why.append(self.error)
        if self.exitcode is not None:
            why.append(
                "exit %d" % self.exitcode
                if self.exitcode >= 0
                else "killed by signal %d" % -self.exitcode
            )
        message = "pool item %s (input %r) failed: %s" % (
            self.index,
            self.input,
            "; ".join(why) or "no answer",
        )
        details = []
        stderr = (self.stderr or "").rstrip("\n")
        if stderr:
            lines = stderr.splitlines()
            if len(lines) > 20:
                lines = ["..."] + lines[-20:]
            details = ["stderr: " + line for line in lines]
        super().__init__(message, "item_failed", details)


def _exitcode(exit: Optional[Dict[str, Any]]) -> Optional[int]:
    """multiprocessing's convention: the exit code, or minus the signal number."""
    if not exit:
        return None
    if exit.get("code") is not None:
        return exit["code"]
    if exit.get("signal") is not None:
        return -exit["signal"]
    return None


_BY_CODE = {
    "permission_denied": CorralPermissionError,
    "bad_request": InvalidArgument,
    "type_mismatch": InvalidArgument,
    "too_large": InvalidArgument,
    "frame_too_large": InvalidArgument,
    "out_of_range": OutOfRange,
    "overflow": Overflow,
    "not_found": NotFound,
    "empty": Empty,
    "full": Full,
    "timeout": Timeout,
    "not_held": NotHeld,
    "locked": Locked,
    "shutting_down": ShuttingDown,
}


def error_from_reply(error: Dict[str, Any]) -> CorralError:
    """The exception for an ``error`` object of a reply."""
    code: Any = error.get("code")
    cls = _BY_CODE.get(code, CorralError)
    return cls(error.get("message") or str(code), code, error.get("details") or ())
