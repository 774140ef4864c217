"""Process: start, join, is_alive, exitcode, terminate, kill, pid, env, cwd."""

import os
import signal
import sys

import pytest

import corral
from corral import Process

PY = sys.executable


def test_exit_code_and_join_timeout(corrald):
    p = Process([PY, "-c", "import sys, time; time.sleep(600); sys.exit(4)"])
    assert p.exitcode is None and not p.is_alive() and p.pid is None
    p.start()
    assert p.is_alive()
    assert p.exitcode is None
    assert isinstance(p.pid, int) and p.pid > 0
    assert p.join(timeout=0.1) is None  # still running: returns, like multiprocessing
    assert p.is_alive()
    p.terminate()
    assert not p.is_alive()
    assert p.exitcode == -signal.SIGTERM


def test_exit_codes(corrald):
    p = Process("sh -c 'exit 7'")
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 7
    assert not p.is_alive()


def test_killed_by_a_signal(corrald):
    p = Process([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    p.start()
    p.join(timeout=120)
    assert p.exitcode == -signal.SIGKILL


def test_kill_stops_it(corrald):
    p = Process(["sleep", "600"])
    p.start()
    p.kill()
    assert p.exitcode == -signal.SIGKILL


def test_name_env_and_working_directory(corrald, unique, tmp_path):
    name = unique("proc")
    p = Process(
        [PY, "-c", "import os; print(os.environ['GREETING'], os.getcwd())"],
        name=name,
        env={"GREETING": "hi"},
        cwd=tmp_path,
    )
    p.start()
    p.join(timeout=120)
    assert p.name == name
    assert p.logs() == ["hi %s" % tmp_path]
    assert corral.status(name)["units"][0]["transient"] is True


def test_runs_in_the_current_directory_by_default(corrald, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hello.py").write_text("print('relative path works')\n")
    p = Process("%s hello.py" % PY)
    p.start()
    p.join(timeout=120)
    assert p.logs() == ["relative path works"]


def test_command_not_found(corrald):
    p = Process(["/nonexistent/program"])
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 127
    assert "/nonexistent/program" in p.failure_reason


def test_start_twice_and_join_before_start(corrald):
    p = Process(["true"])
    with pytest.raises(AssertionError):
        p.join()
    p.start()
    with pytest.raises(AssertionError):
        p.start()
    p.join(timeout=120)
    assert p.exitcode == 0


def test_a_name_in_use_is_refused(corrald, unique):
    name = unique("busy")
    p = Process(["sleep", "600"], name=name)
    p.start()
    try:
        with pytest.raises(corral.CorralError, match="already exists"):
            Process(["true"], name=name).start()
    finally:
        p.terminate()
    # once it has ended, the name can be used again
    q = Process(["true"], name=name)
    q.start()
    q.join(timeout=120)
    assert q.exitcode == 0


def test_bad_commands():
    with pytest.raises(ValueError):
        Process("")
    with pytest.raises(TypeError):
        Process([PY, 3])
    # Process() is multiprocessing's (a target-less process whose run() does nothing).
    assert Process().argv is None


def test_a_daemon_process_is_a_daemon_to_corrald(corrald):
    daemon = Process(["sleep", "30"], daemon=True)
    plain = Process(["sleep", "30"])
    daemon.start()
    plain.start()
    assert corral.status(daemon.name)["units"][0]["daemon"] is True
    assert corral.status(plain.name)["units"][0]["daemon"] is False
    daemon.kill()
    plain.kill()
