"""Anonymous objects: made without a name, they get a unique one and are removed when
the program that made them exits (after its children have been joined).

A program killed with ``kill -9`` leaves its anonymous queues, counters and arrays
behind under their generated names (``py-anon-...``); ``corralctl queue list`` shows
them and ``corralctl queue delete`` removes them.
"""

import os
import threading
import uuid
from typing import Callable, List, Tuple

_LOCK = threading.Lock()
_MADE: List[Tuple[int, Callable[[], object]]] = []  # (pid, delete function)


def name(kind: str) -> str:
    """A fresh unique name for an anonymous object of ``kind``."""
    return "py-anon-%s-%s" % (kind, uuid.uuid4().hex)


def made(delete: Callable[[], object]) -> None:
    """Records that this process made an anonymous object; ``delete()`` removes it."""
    with _LOCK:
        _MADE.append((os.getpid(), delete))


def cleanup() -> None:
    """Removes the anonymous objects this process made (called at exit)."""
    pid = os.getpid()
    with _LOCK:
        mine = [d for p, d in _MADE if p == pid]
        _MADE[:] = [(p, d) for p, d in _MADE if p != pid]
    for delete in mine:
        try:
            delete()
        except Exception:
            pass
