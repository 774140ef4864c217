"""Fixtures: a real corrald in a temporary directory, reached through CORRAL_SOCKET.

The binaries are target/debug/corrald of the repository (build them with
`cargo build --workspace --bins`), or $CORRALD. One corrald serves the whole session
(tests use names of their own, see `unique`); tests that stop corrald start their own
with `start_corrald`.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[1]
REPO = CLIENT_DIR.parents[1]
WORKERS = Path(__file__).resolve().parent / "workers"
sys.path.insert(0, str(CLIENT_DIR))

# Generous: two busy cores, debug builds.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def corrald_binary():
    path = Path(os.environ.get("CORRALD", REPO / "target" / "debug" / "corrald"))
    if not path.is_file():
        pytest.fail(
            "%s is missing: build it with `cargo build --workspace --bins` (or set CORRALD)" % path
        )
    return path


def child_env(extra=None):
    """The environment for Python programs that import corral from this tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(CLIENT_DIR), os.environ.get("PYTHONPATH")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def hello(path, timeout=2.0):
    """Whether corrald answers `hello` on `path` now."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b'{"id":1,"op":"hello","version":1}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    return False
                data += chunk
            return "result" in json.loads(data)
    except (OSError, ValueError):
        return False


def wait_for(condition, timeout=60.0, what="condition", interval=0.02):
    """Polls `condition` until it returns a true value (returned), or fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Corrald:
    """A corrald running in `root` (units/, state/, corral.sock, corrald.log)."""

    def __init__(self, root):
        self.root = Path(root)
        self.units = self.root / "units"
        self.state = self.root / "state"
        self.socket = self.root / "corral.sock"
        self.log = self.root / "corrald.log"
        self.proc = None

    def start(self):
        self.units.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        config = self.root / "corral.toml"
        # Never read /etc/corral/corral.toml; keep shutdowns short for leftover tasks.
        config.write_text('shutdown_timeout = "5s"\ndaemon_grace = "500ms"\n')
        argv = [
            str(corrald_binary()),
            "--config", str(config),
            "--units", str(self.units),
            "--state", str(self.state),
            "--socket", str(self.socket),
            "--http", "off",
        ]
        env = child_env()
        env.pop("CORRAL_SOCKET", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.root),
                env=env,
                start_new_session=True,
            )

        def ready():
            if self.proc.poll() is not None:
                pytest.fail(
                    "corrald exited with %s before answering; its log:\n%s"
                    % (self.proc.returncode, self.log_text())
                )
            return hello(self.socket)

        wait_for(ready, START_TIMEOUT, "corrald to answer hello on %s" % self.socket)
        return self

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited by the deadline."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="session")
def corrald_server(tmp_path_factory):
    server = Corrald(tmp_path_factory.mktemp("corrald")).start()
    yield server
    server.stop()


@pytest.fixture
def corrald(corrald_server, monkeypatch):
    """The session's corrald, with CORRAL_SOCKET pointing at it for this test."""
    if corrald_server.proc.poll() is not None:
        pytest.fail("corrald died; its log:\n%s" % corrald_server.log_text())
    monkeypatch.setenv("CORRAL_SOCKET", str(corrald_server.socket))
    return corrald_server


@pytest.fixture
def start_corrald(tmp_path, monkeypatch):
    """Starts a corrald of the test's own (stopped afterwards); sets CORRAL_SOCKET."""
    started = []

    def start():
        server = Corrald(tmp_path / ("corrald-%d" % len(started))).start()
        started.append(server)
        monkeypatch.setenv("CORRAL_SOCKET", str(server.socket))
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def unique(request):
    """unique("q") -> a name no other test uses ("q-test_name-1a2b3c4d")."""
    test = "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]

    def make(prefix="x"):
        return "%s-%s-%s" % (prefix, test, uuid.uuid4().hex[:8])

    return make


@pytest.fixture
def worker():
    """worker("name.py") -> absolute path of a script in tests/workers."""

    def path(name):
        p = WORKERS / name
        assert p.is_file(), p
        return str(p)

    return path
