"""The wire protocol: newline-delimited JSON over corrald's Unix socket.

A request is one line ``{"id": N, "op": "...", ...}``; each reply echoes the id and
carries exactly one of ``result``, ``error`` or ``event`` (an item of a streamed
answer, before the final result or error). See proto/src/lib.rs in the corral
repository.

Connections are plain blocking sockets. :func:`call` borrows one from a small
per-process pool (so threads never share a socket and a blocking ``queue_get`` in
one thread does not hold up a ``queue_put`` in another); :class:`Lock` keeps a
dedicated :class:`Connection`, because corrald binds a lock to the connection that
took it. After ``os.fork()`` the child drops every inherited connection (closing
only its own copy of the descriptor) and connects afresh on first use.
"""

import json
import os
import socket
import threading
import weakref
from typing import IO, Any, Callable, Dict, Generator, List, Optional, Tuple, TypeVar, cast

from .errors import CorralConnectionError, CorralError, error_from_reply

PROTOCOL_VERSION = 1
CLIENT_NAME = "corral-python"

__all__ = ["socket_path", "Connection", "call", "stream", "PROTOCOL_VERSION"]

_T = TypeVar("_T")


SYSTEM_SOCKET = "/run/corral/corral.sock"


def socket_path() -> str:
    """The socket a client uses when none is given.

    ``$CORRAL_SOCKET``, else ``/run/corral/corral.sock`` for root, else the user's own
    corrald's: ``$XDG_RUNTIME_DIR/corral.sock``, else ``$XDG_STATE_HOME/corral/corral.sock``
    (``~/.local/state/corral/corral.sock``) -- unless the user runs no corrald of their
    own and the system one's socket exists (a member of the ``corral`` group): then the
    system socket. The same rule as corralctl.
    """
    path = os.environ.get("CORRAL_SOCKET")
    if path:
        return path
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    own = _user_socket()
    if not os.path.exists(own) and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return own


def _user_socket() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "corral.sock")
    state = os.environ.get("XDG_STATE_HOME")
    if not state:
        home = os.environ.get("HOME")
        state = os.path.join(home, ".local", "state") if home else "/tmp"
    return os.path.join(state, "corral", "corral.sock")


def _start_hint(path: Optional[str]) -> str:
    return (
        "Is corrald running? Start it with `corrald --socket %s --units DIR --state DIR` "
        "(or `systemctl start corrald`), or set CORRAL_SOCKET to the socket of a running "
        "corrald." % path
    )


# Every live connection, so a forked child can drop the ones it inherited.
_ALL: "weakref.WeakSet[Connection]" = weakref.WeakSet()
_ALL_LOCK = threading.Lock()


class Connection:
    """One socket to corrald, used by one request at a time (it has its own lock).

    ``path`` is resolved when the connection is first made (``socket_path()`` if
    None), so a ``CORRAL_SOCKET`` set after the object was created still applies.
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self._path = path
        self._sock: Optional[socket.socket] = None
        self._rfile: Optional[IO[bytes]] = None
        self._pid: Optional[int] = None
        self._next_id = 0
        self._lock = threading.Lock()
        self.path: Optional[str] = None
        with _ALL_LOCK:
            _ALL.add(self)

    # -- connecting ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._pid == os.getpid()

    def _connect(self) -> None:
        path = self._path or socket_path()
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except PermissionError as e:
            sock.close()
            from .errors import CorralPermissionError

            raise CorralPermissionError(
                "cannot connect to corrald at %s: %s. Ask to be added to the socket's group "
                "(`corral` for the system service), or use your own corrald." % (path, e.strerror),
                "permission_denied",
            ) from None
        except OSError as e:
            sock.close()
            raise CorralConnectionError(
                "cannot connect to corrald at %s: %s. %s"
                % (path, e.strerror or e, _start_hint(path)),
                path,
            ) from None
        self._sock = sock
        self._rfile = sock.makefile("rb")
        self._pid = os.getpid()
        try:
            self._roundtrip(
                "hello",
                {"version": PROTOCOL_VERSION, "client": "%s pid %d" % (CLIENT_NAME, os.getpid())},
            )
        except _Unsent:
            self.close()
            raise self._lost(None) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Closes the socket (a lock held through it is released by corrald)."""
        sock, rfile = self._sock, self._rfile
        self._sock = self._rfile = None
        for f in (rfile, sock):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def _after_fork(self) -> None:
        # The parent may have been mid-request: the lock may be held by a thread that
        # does not exist here. Closing our copy of the descriptor leaves the parent's
        # connection (and any lock it holds) alone.
        self._lock = threading.Lock()
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- requests --------------------------------------------------------------------

    def request(
        self, op: str, fields: Optional[Dict[str, Any]] = None, fds: Optional[List[int]] = None
    ) -> Any:
        """Sends one request and returns its ``result`` (raises its ``error``).

        ``fds``: descriptors passed with the request's first byte (``SCM_RIGHTS``), as
        ``run`` with ``stdio_fds`` expects."""
        with self._lock:
            return self._with_reconnect(lambda: self._roundtrip(op, fields or {}, fds))

    def stream(
        self, op: str, fields: Optional[Dict[str, Any]] = None
    ) -> Generator[Any, None, Any]:
        """Sends one request; yields each ``event``, then returns the ``result``.

        Use as ``result = yield from conn.stream(...)``. The connection is closed if the
        generator is abandoned before the end (its remaining replies would be unread).
        """
        with self._lock:
            finished = False
            try:
                request_id = self._with_reconnect(lambda: self._send(op, fields or {}))
                while True:
                    reply = self._read_reply(request_id)
                    if "event" in reply:
                        yield reply["event"]
                        continue
                    finished = True
                    return self._result(reply)
            finally:
                if not finished:
                    self.close()

    def _with_reconnect(self, action: Callable[[], _T]) -> _T:
        fresh = not self.connected
        if fresh:
            self.close()
            self._connect()
        try:
            return action()
        except _Unsent:
            self.close()
            if fresh:
                raise self._lost(None) from None
        # The peer had closed this (idle) connection before the request was written,
        # e.g. corrald restarted: nothing reached it, so sending again is safe.
        self._connect()
        try:
            return action()
        except _Unsent:
            self.close()
            raise self._lost(None) from None

    def _roundtrip(
        self, op: str, fields: Dict[str, Any], fds: Optional[List[int]] = None
    ) -> Any:
        request_id = self._send(op, fields, fds)
        while True:
            reply = self._read_reply(request_id)
            if "event" in reply:
                continue
            return self._result(reply)

    def _result(self, reply: Dict[str, Any]) -> Any:
        if "error" in reply:
            raise error_from_reply(reply["error"] or {})
        return reply.get("result")

    def _send(self, op: str, fields: Dict[str, Any], fds: Optional[List[int]] = None) -> int:
        self._next_id += 1
        request_id = self._next_id
        message: Dict[str, Any] = {"id": request_id, "op": op}
        message.update(fields)
        try:
            frame = json.dumps(message, allow_nan=False, separators=(",", ":"))
        except ValueError as e:
            from .errors import InvalidArgument

            raise InvalidArgument(
                "cannot send %s: %s (JSON has no NaN or infinity)" % (op, e), "bad_request"
            ) from None
        data = frame.encode("utf-8") + b"\n"
        sock = cast(socket.socket, self._sock)  # connected by _with_reconnect
        try:
            if fds:
                sent = socket.send_fds(sock, [data], list(fds))
                if sent < len(data):
                    sock.sendall(data[sent:])
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise _Unsent() from None
        except OSError as e:
            self.close()
            raise self._lost(e) from None
        return request_id

    def _read_reply(self, request_id: int) -> Dict[str, Any]:
        while True:
            try:
                line = cast(IO[bytes], self._rfile).readline()
            except OSError as e:
                self.close()
                raise self._lost(e) from None
            except BaseException:
                # Interrupted (KeyboardInterrupt...): the reply is still on its way, and
                # would be read as the answer to the next request. Start afresh instead.
                self.close()
                raise
            if not line:
                self.close()
                raise self._lost(None)
            try:
                reply = json.loads(line)
            except ValueError:
                self.close()
                raise CorralError(
                    "corrald at %s sent a reply that is not JSON: %r" % (self.path, line[:200]),
                    "protocol",
                ) from None
            reply_id = reply.get("id")
            if reply_id == request_id:
                return reply
            if reply_id == 0 and "error" in reply:
                # corrald could not parse a request at all.
                return reply
            # A reply to an earlier request abandoned by its caller: skip it.

    def _lost(self, err: Optional[OSError]) -> CorralConnectionError:
        why = ": %s" % (err.strerror or err) if err is not None else ""
        return CorralConnectionError(
            "lost the connection to corrald at %s%s (did it stop?). %s"
            % (self.path, why, _start_hint(self.path)),
            self.path,
        )


class _Unsent(Exception):
    """Writing failed because the peer had closed the connection: nothing was sent."""


# -- the shared per-process pool of connections ---------------------------------------

_POOL_LOCK = threading.Lock()
_IDLE: Dict[str, List[Connection]] = {}  # socket path -> [Connection]
_MAX_IDLE = 4


def _checkout(path: Optional[str]) -> Tuple[str, Connection]:
    path = path or socket_path()
    with _POOL_LOCK:
        idle = _IDLE.get(path)
        if idle:
            return path, idle.pop()
    return path, Connection(path)


def _checkin(path: str, conn: Connection) -> None:
    if not conn.connected:
        return
    with _POOL_LOCK:
        idle = _IDLE.setdefault(path, [])
        if len(idle) < _MAX_IDLE:
            idle.append(conn)
            return
    conn.close()


def call(op: str, socket: Optional[str] = None, **fields: Any) -> Any:
    """One request on a pooled connection; returns the result or raises the error."""
    path, conn = _checkout(socket)
    try:
        result = conn.request(op, fields)
    except CorralConnectionError:
        conn.close()
        raise
    except CorralError:
        _checkin(path, conn)
        raise
    except BaseException:
        conn.close()
        raise
    _checkin(path, conn)
    return result


def stream(op: str, socket: Optional[str] = None, **fields: Any) -> Generator[Any, None, Any]:
    """A streamed request on a pooled connection, its own until the stream ends: yields
    events, returns the result. A stream read to its end (a result or an error reply)
    gives the connection back to the pool, saving the next one a connect and a hello;
    one abandoned early is closed (its remaining replies would be unread)."""
    path, conn = _checkout(socket)
    reusable = False
    try:
        result = yield from conn.stream(op, fields)
        reusable = True
        return result
    except CorralConnectionError:
        raise
    except CorralError:
        reusable = True
        raise
    finally:
        if reusable:
            _checkin(path, conn)
        else:
            conn.close()


def _after_fork_in_child() -> None:
    global _POOL_LOCK, _ALL_LOCK
    _POOL_LOCK = threading.Lock()
    _ALL_LOCK = threading.Lock()
    _IDLE.clear()
    for conn in list(_ALL):
        conn._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
