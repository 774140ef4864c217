"""Anonymous objects: made without a name, they get a unique one and belong to the
program's anonymous session, which corrald removes once the program and every child it
started are gone — exited, or killed, even with ``kill -9``.

The session is a token chosen here (or inherited from a parent through
``CORRAL_ANON_SESSION``, so that a child's own anonymous objects join its parent's
session). corrald watches the session's holders: each process that makes an anonymous
object holds it for its own pid (``anon_hold``), and each child ``Process.start`` starts
holds it from before it is spawned (``run``'s ``anon_session``: corrald makes the child a
holder itself, so a parent killed right after ``start()`` leaves nothing unheld); every
anonymous object is tied to it (``anon_add``). When the last
holder exits, corrald deletes the objects. Nothing is left to the program's ``atexit``.
"""

import os
import threading
import uuid
from typing import Dict, Optional

from . import _client

__all__ = ["ENV", "name", "session", "made"]

ENV = "CORRAL_ANON_SESSION"

_LOCK = threading.Lock()
_TOKEN: Optional[str] = None
# Per socket: the pid that holds the session there (a forked child holds for itself).
_HELD: Dict[Optional[str], int] = {}


def name(kind: str) -> str:
    """A fresh unique name for an anonymous object of ``kind``."""
    return "py-anon-%s-%s" % (kind, uuid.uuid4().hex)


def session() -> str:
    """This program's session token (its parent's, in a child of a corral program)."""
    global _TOKEN
    with _LOCK:
        if _TOKEN is None:
            _TOKEN = os.environ.get(ENV) or "py-session-%s" % uuid.uuid4().hex
        return _TOKEN


def _hold_here(socket: Optional[str]) -> None:
    pid = os.getpid()
    with _LOCK:
        if _HELD.get(socket) == pid:
            return
    _client.call("anon_hold", socket=socket, session=session(), pid=pid)
    with _LOCK:
        _HELD[socket] = pid


def made(kind: str, object_name: str, socket: Optional[str]) -> None:
    """Ties the anonymous object ``object_name`` of ``kind`` (``queue``, ``counter``,
    ``array``, ``semaphore``, ``event``) to the session, held by this process."""
    _hold_here(socket)
    _client.call("anon_add", socket=socket, session=session(), kind=kind, name=object_name)

