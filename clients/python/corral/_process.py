"""Process: a command run by corrald as a transient task (``multiprocessing.Process``)."""

import atexit
import itertools
import os
import shlex
import sys
import threading
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
    cast,
)

from . import _anon, _client, _payload
from ._queue import timeout_ms
from .errors import NotFound, Timeout, _exitcode

__all__ = [
    "Process",
    "split_command",
    "current_process",
    "parent_process",
    "active_children",
]

_ACTIVE_STATES = ("starting", "running", "backoff", "stopping")

# A command line: a string (split like a shell would) or its arguments.
Command = Union[str, Sequence[Union[str, "os.PathLike[str]"]]]


def split_command(cmd: Command, what: str = "command") -> List[str]:
    """A command line as a list: a string is split like a shell would (``shlex``)."""
    if isinstance(cmd, str):
        argv = shlex.split(cmd)
    elif isinstance(cmd, (list, tuple)):
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in cmd]
        for a in argv:
            if not isinstance(a, str):
                raise TypeError("%s arguments must be strings, not %r" % (what, a))
    else:
        raise TypeError("%s must be a string or a list of strings, not %r" % (what, cmd))
    if not argv or not argv[0]:
        raise ValueError("empty %s" % what)
    return argv


_COUNTER = itertools.count(1)


class Process:
    """A child process run by corrald, as ``multiprocessing.Process``.

    **Function form** (multiprocessing's): ``Process(target=f, args=(1,), kwargs={},
    name=None, daemon=None)``, or a subclass that overrides ``run()``. ``start()``
    pickles the object with cloudpickle (functions and classes of the main script by
    value) and corrald starts ``sys.executable -m corral._child`` as a transient task,
    in this working directory, with this environment and ``sys.path``; it unpickles
    the object and calls ``run()``. The main script is not executed again, so programs
    without an ``if __name__ == "__main__":`` guard work. The child's stdout and
    stderr are this process's (passed to corrald with ``SCM_RIGHTS``); stdin is
    ``/dev/null``. An exception in the child prints its traceback on its stderr and
    gives exit code 1. ``name`` is multiprocessing's (``Process-1``...); the unit is
    ``unit`` (``corralctl status`` lists it).

    **Command form**: ``Process(["python3", "worker.py", "3"])`` or a string split like
    a shell would; a subclass may set the class attribute ``command`` instead. The
    command runs with corrald's environment plus ``env``, in ``cwd`` (default: the
    current directory), its output in corrald's log for the unit (``logs()``);
    ``name`` is then the unit's name (``run-N`` if None).

    ``daemon=True``: stopped when this program exits, **and** when it dies (even by
    ``kill -9``: corrald stops it when this program's connection closes); it also
    dies with corrald. Non-daemon function-form children are joined when this program
    exits, as with multiprocessing; non-daemon command-form ones keep running.

    ``exitcode`` is None while it runs, then its exit code, or minus the signal
    number that killed it (``-15`` after ``terminate()``), or 127 if the command
    could not be started (see ``failure_reason``).
    """

    command: Optional[Command] = None

    def __init__(
        self,
        group: Any = None,
        target: Optional[Callable[..., object]] = None,
        name: Optional[str] = None,
        args: Iterable[Any] = (),
        kwargs: Optional[Mapping[str, Any]] = None,
        *,
        daemon: Optional[bool] = None,
        cmd: Optional[Command] = None,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Union[str, "os.PathLike[str]", None] = None,
        socket: Optional[str] = None,
    ) -> None:
        # Command form: Process(cmd, name, daemon, env, cwd) as before, the command first.
        if cmd is None and isinstance(group, (str, list, tuple, os.PathLike)):
            cmd = cast(Command, group)
            group = None
            if target is not None and name is None and isinstance(target, str):
                name, target = target, None
        if group is not None:
            raise AssertionError("group argument must be None for now")
        if cmd is None and target is None and self.command is not None:
            cmd = self.command
        self._function = cmd is None
        self._argv: Optional[List[str]]
        if cmd is None:
            self._argv = None
            self._target = target
            self._args = tuple(args)
            self._kwargs = dict(kwargs or {})
            if name is None:
                parent = _CURRENT[0]
                n = next(_COUNTER)
                name = "Process-%d" % n if parent is None else "%s:%d" % (parent.name, n)
        else:
            self._argv = split_command(cmd)
        if env is not None:
            env = {str(k): str(v) for k, v in dict(env).items()}
        self.env: Dict[str, str] = env or {}
        self.cwd = os.path.abspath(cwd) if cwd is not None else None
        self.name: Optional[str] = name
        self.daemon = bool(daemon)
        self.unit: Optional[str] = None
        self._socket = socket
        self._started = False
        self._pid: Optional[int] = None
        self._exitcode: Optional[int] = None
        self._settled = False
        self._closed = False
        self._payload: Optional[str] = None
        self.failure_reason: Optional[str] = None
        self._parent_pid: Optional[int] = os.getpid()

    # What travels to a function-form child: everything but the parent's bookkeeping.
    _RUNTIME = (
        "_started", "_pid", "_exitcode", "_settled", "_closed", "_payload", "failure_reason"
    )

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        for key in self._RUNTIME:
            state.pop(key, None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._started = False
        self._pid = os.getpid()
        self._exitcode = None
        self._settled = False
        self._closed = False
        self._payload = None
        self.failure_reason = None

    def __repr__(self) -> str:
        if not self._started:
            state = "initial"
        elif self._settled:
            state = "stopped exitcode=%s" % self._exitcode
        else:
            state = "started"
        return "<corral.Process %s %s%s>" % (
            self.name or "-",
            state,
            " daemon" if self.daemon else "",
        )

    @property
    def argv(self) -> Optional[List[str]]:
        return list(self._argv) if self._argv is not None else None

    def _call(self, op: str, **fields: Any) -> Any:
        return _client.call(op, socket=self._socket, **fields)

    def start(self) -> None:
        """Starts the child (returns once corrald has started it)."""
        self._check_closed()
        if self._started:
            raise AssertionError("cannot start a process twice")
        if self._parent_pid != os.getpid() and _CURRENT[0] is self:
            raise AssertionError("can only start a process object created by current process")
        if self._function:
            self._start_function()
        else:
            self._start_command()
        if self.daemon:
            _daemons_started(self)
        elif self._function:
            _children_started(self)
        self._poll()

    def _start_command(self) -> None:
        fields: Dict[str, Any] = {
            "command": self._argv,
            "working_dir": self.cwd or os.getcwd(),
            "parent": _parent_field(),
            "anon_session": _anon.session(),
        }
        if self.name is not None:
            fields["name"] = self.name
        if self.env:
            fields["env"] = self.env
        if self.daemon:
            fields["daemon"] = True
            fields["stop_on_disconnect"] = True
            result = _owner_connection(self._socket).request("run", fields)
        else:
            result = self._call("run", **fields)
        self._started = True
        self._parent_pid = os.getpid()
        self.name = self.unit = result["unit"]
        # corrald answers `run` once the process runs, with its pid (absent if it could
        # not be started; _poll then finds the reason). The process holds the anonymous
        # session from before its spawn (`anon_session`).
        if result.get("pid"):
            self._pid = result["pid"]

    def _start_function(self) -> None:
        body = _payload.dumps(self, "the process %s (its target or arguments)" % self.name)
        path = _payload.write(body, name=self.name, parent_name=current_process().name)
        fields: Dict[str, Any] = {
            "command": _payload.python_command("_child", path),
            "working_dir": self.cwd or os.getcwd(),
            "env": dict(_payload.child_env(self.env), **{_anon.ENV: _anon.session()}),
            "stdio_fds": True,
            "parent": _parent_field(),
            "anon_session": _anon.session(),
        }
        if self.daemon:
            fields["daemon"] = True
            fields["stop_on_disconnect"] = True
        # Whatever this program printed comes before the child's output, as with fork.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass
        try:
            result = _owner_connection(self._socket).request("run", fields, fds=_stdio_fds())
        except BaseException:
            _remove(path)
            raise
        self._payload = path
        self._started = True
        self._parent_pid = os.getpid()
        self.unit = result["unit"]
        if result.get("pid"):
            self._pid = result["pid"]

    def run(self) -> None:
        """Function form: calls ``target(*args, **kwargs)`` (in the child, or here if
        called directly), as multiprocessing. Command form: ``start(); join()``."""
        if self._function:
            if self._target is not None:
                self._target(*self._args, **self._kwargs)
            return
        self.start()
        self.join()

    def _check_closed(self) -> None:
        if self._closed:
            raise ValueError("process object is closed")

    def _check_started(self) -> None:
        self._check_closed()
        if not self._started:
            raise AssertionError("can only use a started process")

    def _settle(self, instance: Dict[str, Any]) -> bool:
        if instance.get("pid"):
            self._pid = instance["pid"]
        if instance.get("state") in _ACTIVE_STATES:
            return False
        self._settled = True
        self._exitcode = _exitcode(instance.get("exit") or instance.get("last_exit"))
        if self._exitcode is None:
            # The command never ran (e.g. no such program).
            self._exitcode = 127
            self.failure_reason = instance.get("reason") or "the command did not run"
        if self._payload is not None:
            # The child removes it once read; this covers a child that never ran.
            _remove(self._payload)
            self._payload = None
        return True

    def _poll(self) -> None:
        if self._settled:
            return
        status = self._call("status", unit=self.unit)
        for unit in status.get("units", []):
            if unit.get("name") == self.unit and unit.get("instances"):
                self._settle(unit["instances"][0])

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until it has exited, or ``timeout`` seconds have passed (returns None
        either way, like multiprocessing; check ``exitcode`` or ``is_alive()``)."""
        self._check_started()
        if self._settled:
            return
        fields: Dict[str, Any] = {"unit": self.unit}
        ms = timeout_ms(timeout)
        if ms is not None:
            fields["timeout_ms"] = ms
        try:
            result = self._call("wait", **fields)
        except Timeout:
            return
        instances = result.get("instances") or []
        if instances:
            self._settle(instances[0])

    def is_alive(self) -> bool:
        """Whether it is still running (or starting, or stopping)."""
        self._check_closed()
        if not self._started or self._settled:
            return False
        self._poll()
        return not self._settled

    @property
    def exitcode(self) -> Optional[int]:
        """None while it runs; then the exit code, or -SIGNAL if a signal killed it."""
        self._check_closed()
        if not self._started:
            return None
        self._poll()
        return self._exitcode

    @property
    def pid(self) -> Optional[int]:
        """The pid of its main process (also its process group); None before start."""
        self._check_closed()
        if self._started and self._pid is None and not self._settled:
            self._poll()
        return self._pid

    ident = pid

    @property
    def sentinel(self) -> int:
        raise NotImplementedError("corral processes have no sentinel descriptor; use join()")

    def terminate(self) -> None:
        """Stops it: SIGTERM to its process group, SIGKILL after 10 s; returns once it
        is down (corrald's ``stop``)."""
        self._check_started()
        if self._settled:
            return
        try:
            self._call("stop", units=[self.unit])
        except NotFound:
            pass
        self._poll()

    def kill(self) -> None:
        """Sends SIGKILL to its whole process group (corrald's ``kill``), as
        multiprocessing's ``kill()`` does; returns once it is down."""
        self._check_started()
        if self._settled:
            return
        try:
            self._call("kill", units=[self.unit], signal="SIGKILL")
            self._call("wait", unit=self.unit, timeout_ms=30000)
        except NotFound:
            pass
        self._poll()

    def logs(self, lines: int = 100) -> List[str]:
        """The last ``lines`` lines of a command-form process's output (stdout and
        stderr), oldest first. A function-form child writes to this program's stdout
        and stderr instead, and has no log."""
        self._check_started()
        result = self._call("logs", unit=self.unit, lines=int(lines))
        return [entry["line"] for entry in result.get("lines", [])]

    def close(self) -> None:
        """As multiprocessing: ``ValueError`` if it is still running; then most of its
        methods and properties raise ``ValueError`` (it is forgotten by
        ``active_children`` and the join at exit)."""
        if self._closed:
            return
        if self._started and not self._settled and self.is_alive():
            raise ValueError("Cannot close a process while it is still running. "
                             "You should first call join() or terminate().")
        self._closed = True
        with _DAEMONS_LOCK:
            _CHILDREN.discard(self)
            _DAEMONS.discard(self)


# The longest parent label sent to corrald (it accepts 1024 bytes).
_LABEL_CHARS = 200


def _parent_field() -> Dict[str, Any]:
    """``run``'s ``parent``: this program, for ``corralctl status`` to list its children
    under (its command line; in a child of a corral program, its Process name)."""
    me = _CURRENT[0]
    if me is not None:
        label = "%s (%s)" % (me.name, os.path.basename(sys.executable))
    else:
        argv = [os.path.basename(sys.executable)] + [a for a in sys.argv if a]
        label = shlex.join(argv)
    if len(label) > _LABEL_CHARS:
        label = label[: _LABEL_CHARS - 3] + "..."
    return {"pid": os.getpid(), "label": label}


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _stdio_fds() -> List[int]:
    fds: List[Optional[int]] = []
    for n in (1, 2):
        try:
            os.fstat(n)
            fds.append(n)
        except OSError:
            fds.append(None)
    if None in fds:
        # A closed stdout or stderr: the child writes to /dev/null there instead.
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        _DEVNULL.append(devnull)
        return [devnull if fd is None else fd for fd in fds]
    return fds  # type: ignore[return-value]


_DEVNULL: List[int] = []

# One connection per process and socket for `run`: its closing (this program exiting
# or being killed) is what stops the daemon children started through it.
_OWNERS: Dict[Tuple[int, Optional[str]], _client.Connection] = {}
_OWNERS_LOCK = threading.Lock()


def _owner_connection(socket: Optional[str]) -> _client.Connection:
    # Keyed by the socket's path as resolved now: a CORRAL_SOCKET changed since the
    # last call names another corrald, which needs an owner connection of its own.
    if socket is None:
        socket = _client.socket_path()
    key = (os.getpid(), socket)
    with _OWNERS_LOCK:
        conn = _OWNERS.get(key)
        if conn is None:
            conn = _client.Connection(socket)
            _OWNERS[key] = conn
        return conn


# -- current_process(), parent_process(), active_children() ------------------------------


class _MainProcess:
    """What ``current_process()`` is in the main program (multiprocessing's MainProcess)."""

    daemon = False
    exitcode = None
    _function = True

    def __init__(self) -> None:
        self.name = "MainProcess"

    @property
    def pid(self) -> int:
        return os.getpid()

    ident = pid

    def is_alive(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "<_MainProcess name=%r parent=None started>" % self.name


class _ParentProcess:
    """``parent_process()`` in a child: the parent's name and pid."""

    daemon = False

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = self.ident = pid

    def is_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __repr__(self) -> str:
        return "<_ParentProcess name=%r pid=%d>" % (self.name, self.pid)


# The Process object this child runs (None in the main program).
_CURRENT: List[Optional[Process]] = [None]
_MAIN = _MainProcess()
_PARENT: List[Optional[_ParentProcess]] = [None]


def current_process() -> Union[Process, _MainProcess]:
    """The Process object this code runs in (``MainProcess`` in the main program)."""
    return _CURRENT[0] or _MAIN


def parent_process() -> Optional[_ParentProcess]:
    """In a child, its parent (name and pid); None in the main program."""
    return _PARENT[0]


def active_children() -> List[Process]:
    """The children started by this process that are still running (joining the
    finished ones, as multiprocessing does)."""
    pid = os.getpid()
    with _DAEMONS_LOCK:
        mine = [p for p in list(_DAEMONS) + list(_CHILDREN) if p._parent_pid == pid]
    alive = [p for p in mine if p.is_alive()]
    with _DAEMONS_LOCK:
        _CHILDREN.difference_update(p for p in mine if p._settled)
    return alive


def _in_child(header: Dict[str, Any]) -> None:
    """Called by corral._child before the Process is unpickled."""
    pid = cast(int, header.get("pid"))  # the payload header always has it
    _PARENT[0] = _ParentProcess(header.get("parent_name") or "MainProcess", pid)


def _run_in_child(process: Process) -> int:
    """Runs the unpickled Process; returns the exit code (multiprocessing's rules)."""
    _CURRENT[0] = process
    process._parent_pid = None
    try:
        process.run()
        code = 0
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            sys.stderr.write(str(e.code) + "\n")
            code = 1
    except BaseException:
        import traceback

        sys.stderr.write("Process %s:\n" % process.name)
        traceback.print_exc()
        code = 1
    return code


# -- at exit: daemon children are stopped, the others joined (multiprocessing's rule) ---

_DAEMONS: "weakref.WeakSet[Process]" = weakref.WeakSet()
_CHILDREN: Set[Process] = set()  # non-daemon function-form children, joined at exit
_DAEMONS_LOCK = threading.Lock()


def _hook() -> None:
    """Registered at import (so it runs after the program's own atexit functions)."""


def _daemons_started(process: Process) -> None:
    with _DAEMONS_LOCK:
        _DAEMONS.add(process)
        _hook()


def _children_started(process: Process) -> None:
    with _DAEMONS_LOCK:
        # Those known to have ended need no join at exit (a program that starts many
        # children keeps only the running ones here).
        _CHILDREN.difference_update([p for p in _CHILDREN if p._settled])
        _CHILDREN.add(process)
        _hook()


def _at_exit() -> None:
    _stop_daemons()
    _join_children()


atexit.register(_at_exit)


def _join_children() -> None:
    pid = os.getpid()
    with _DAEMONS_LOCK:
        mine = [p for p in _CHILDREN if p._parent_pid == pid]
        _CHILDREN.clear()
    for p in mine:
        try:
            p.join()
        except Exception:
            pass


def _stop_daemons() -> None:
    pid = os.getpid()
    with _DAEMONS_LOCK:
        mine = [p for p in _DAEMONS if p._parent_pid == pid and not p._settled]
    by_socket: Dict[Optional[str], List[Optional[str]]] = {}
    for p in mine:
        by_socket.setdefault(p._socket, []).append(p.unit)
    for socket, names in by_socket.items():
        try:
            _client.call("stop", socket=socket, units=names)
        except Exception:
            for name in names:
                try:
                    _client.call("stop", socket=socket, units=[name])
                except Exception:
                    pass
