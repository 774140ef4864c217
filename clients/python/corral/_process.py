"""Process: a command run by corrald as a transient task (``multiprocessing.Process``)."""

import atexit
import os
import shlex
import threading
import weakref

from . import _client
from ._queue import timeout_ms
from .errors import NotFound, Timeout, _exitcode

__all__ = ["Process", "split_command"]

_ACTIVE_STATES = ("starting", "running", "backoff", "stopping")


def split_command(cmd, what="command"):
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


class Process:
    """A program run by corrald, started and joined like ``multiprocessing.Process``.

    ``cmd`` is a list (``["python3", "worker.py", "3"]``) or a string split like a
    shell would (``"python3 worker.py 3"``; no pipes or ``$VARS``: use
    ``["sh", "-c", "..."]``). A subclass may set the class attribute ``command``
    instead of passing ``cmd``.

    ``start()`` runs it as a *transient task* of corrald (``run``), in the current
    directory unless ``cwd`` is given, with corrald's environment plus ``env`` (the
    caller's environment is **not** copied). Its output goes to corrald's log for
    the unit: read it with ``logs()``. ``name`` is the unit's name (``run-N`` if
    None), unique among running units.

    ``daemon=True``: as with multiprocessing, the process is stopped when the Python
    process that started it exits normally (an ``atexit`` hook sends ``stop``); it is
    not killed if this program is killed. To corrald it is a daemon: it dies with
    corrald (even on ``kill -9``) and is stopped first when corrald shuts down.
    Without ``daemon``, the program keeps running after this one exits (it belongs to
    corrald, not to this process), and ``join()`` is not implied at exit.

    ``exitcode`` is None while it runs, then its exit code, or minus the signal
    number that killed it (``-15`` after ``terminate()``), or 127 if the command
    could not be started (see ``failure_reason``).
    """

    command = None

    def __init__(self, cmd=None, name=None, daemon=False, env=None, cwd=None, *, socket=None):
        if cmd is None:
            cmd = self.command
        if cmd is None:
            raise TypeError("Process needs a command: Process(['prog', 'arg', ...])")
        self._argv = split_command(cmd)
        if env is not None:
            env = {str(k): str(v) for k, v in dict(env).items()}
        self.env = env or {}
        self.cwd = os.path.abspath(cwd) if cwd is not None else None
        self.name = name
        self.daemon = bool(daemon)
        self._socket = socket
        self._started = False
        self._pid = None
        self._exitcode = None
        self._settled = False
        self.failure_reason = None
        self._parent_pid = os.getpid()

    def __repr__(self):
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
    def argv(self):
        return list(self._argv)

    def _call(self, op, **fields):
        return _client.call(op, socket=self._socket, **fields)

    def start(self):
        """Runs the command (returns once corrald has started it)."""
        if self._started:
            raise AssertionError("cannot start a process twice")
        fields = {
            "command": self._argv,
            "working_dir": self.cwd or os.getcwd(),
        }
        if self.name is not None:
            fields["name"] = self.name
        if self.env:
            fields["env"] = self.env
        if self.daemon:
            fields["daemon"] = True
        result = self._call("run", **fields)
        self._started = True
        self._parent_pid = os.getpid()
        self.name = result["unit"]
        # corrald answers `run` once the process runs, with its pid (absent if it could
        # not be started; _poll then finds the reason).
        if result.get("pid"):
            self._pid = result["pid"]
        if self.daemon:
            _daemons_started(self)
        self._poll()

    def run(self):
        """multiprocessing's ``run`` runs a target in-process; here: ``start(); join()``."""
        self.start()
        self.join()

    def _check_started(self):
        if not self._started:
            raise AssertionError("can only use a started process")

    def _settle(self, instance):
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
        return True

    def _poll(self):
        if self._settled:
            return
        status = self._call("status", unit=self.name)
        for unit in status.get("units", []):
            if unit.get("name") == self.name and unit.get("instances"):
                self._settle(unit["instances"][0])

    def join(self, timeout=None):
        """Waits until it has exited, or ``timeout`` seconds have passed (returns None
        either way, like multiprocessing; check ``exitcode`` or ``is_alive()``)."""
        self._check_started()
        if self._settled:
            return
        fields = {"unit": self.name}
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

    def is_alive(self):
        """Whether it is still running (or starting, or stopping)."""
        if not self._started or self._settled:
            return False
        self._poll()
        return not self._settled

    @property
    def exitcode(self):
        """None while it runs; then the exit code, or -SIGNAL if a signal killed it."""
        if not self._started:
            return None
        self._poll()
        return self._exitcode

    @property
    def pid(self):
        """The pid of its main process (also its process group); None before start."""
        if self._started and self._pid is None and not self._settled:
            self._poll()
        return self._pid

    ident = pid

    def terminate(self):
        """Stops it: SIGTERM to its process group, SIGKILL after 10 s; returns once it
        is down (corrald's ``stop``)."""
        self._check_started()
        if self._settled:
            return
        try:
            self._call("stop", units=[self.name])
        except NotFound:
            pass
        self._poll()

    def kill(self):
        """Sends SIGKILL to its whole process group (corrald's ``kill``), as
        multiprocessing's ``kill()`` does; returns once it is down."""
        self._check_started()
        if self._settled:
            return
        try:
            self._call("kill", units=[self.name], signal="SIGKILL")
            self._call("wait", unit=self.name, timeout_ms=30000)
        except NotFound:
            pass
        self._poll()

    def logs(self, lines=100):
        """The last ``lines`` lines of its output (stdout and stderr), oldest first."""
        self._check_started()
        result = self._call("logs", unit=self.name, lines=int(lines))
        return [entry["line"] for entry in result.get("lines", [])]

    def close(self):
        """For compatibility with multiprocessing; nothing to release."""


# -- daemon processes are stopped when their parent exits (multiprocessing's rule) ------

_DAEMONS = weakref.WeakSet()
_DAEMONS_LOCK = threading.Lock()
_HOOKED = []


def _daemons_started(process):
    with _DAEMONS_LOCK:
        _DAEMONS.add(process)
        if not _HOOKED:
            atexit.register(_stop_daemons)
            _HOOKED.append(True)


def _stop_daemons():
    pid = os.getpid()
    with _DAEMONS_LOCK:
        mine = [p for p in _DAEMONS if p._parent_pid == pid and not p._settled]
    by_socket = {}
    for p in mine:
        by_socket.setdefault(p._socket, []).append(p.name)
    for socket, names in by_socket.items():
        try:
            _client.call("stop", socket=socket, units=names)
        except Exception:
            for name in names:
                try:
                    _client.call("stop", socket=socket, units=[name])
                except Exception:
                    pass
