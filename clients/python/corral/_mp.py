"""multiprocessing's exceptions, as corral raises them (imported on first use: the
multiprocessing package is not needed to start a worker or a child)."""

import builtins
from multiprocessing import AuthenticationError, BufferTooShort, ProcessError
from multiprocessing import TimeoutError as _mp_TimeoutError

__all__ = ["TimeoutError", "ProcessError", "AuthenticationError", "BufferTooShort"]


class TimeoutError(_mp_TimeoutError, builtins.TimeoutError):  # noqa: A001
    """``AsyncResult.get(timeout)`` ran out of time: a ``multiprocessing.TimeoutError``
    (so ``except multiprocessing.TimeoutError`` catches it) and a builtin
    ``TimeoutError``."""
