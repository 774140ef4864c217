"""Errors: unreachable corrald, bad arguments, the socket path rule."""

import os

import pytest

import corral
from corral import Array, Lock, Pool, Process, Queue, Value
from corral import _client


def test_connection_error_names_the_socket_and_how_to_start_corrald(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere.sock")
    monkeypatch.setenv("CORRAL_SOCKET", missing)
    for action in (
        lambda: Queue("q").put(1),
        lambda: Value("v").value,
        lambda: Lock("l").acquire(),
        lambda: Pool(2).map("echo", [1]),
        lambda: Process(["true"]).start(),
    ):
        with pytest.raises(ConnectionError) as info:
            action()
        message = str(info.value)
        assert missing in message
        assert "corrald --socket %s --units DIR --state DIR" % missing in message
        assert isinstance(info.value, corral.CorralConnectionError)
        assert info.value.socket_path == missing


def test_connection_error_when_corrald_goes_down(start_corrald):
    server = start_corrald()
    q = Queue("q")
    q.put(1)
    lock = Lock("l")
    assert lock.acquire()
    server.stop()
    with pytest.raises(ConnectionError, match=str(server.socket)):
        q.put(2)
    with pytest.raises(ConnectionError, match="corrald --socket"):
        lock.release()


def test_reconnects_after_corrald_restarts(start_corrald):
    server = start_corrald()
    v = Value("v", 1)
    server.stop()
    server.start()
    assert v.add(1) == 2  # durable, and the client connected again


def test_bad_arguments_are_value_errors(corrald):
    with pytest.raises(ValueError):
        Queue("bad name").put(1)
    with pytest.raises(ValueError):
        Queue("/absolute").get_nowait()
    with pytest.raises(ValueError):
        Value("v").add("1")
    with pytest.raises(ValueError):
        Array("a", "x", 2)
    with pytest.raises(ValueError):
        Lock("..").acquire()
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(ValueError):
        Process(["true"], name="bad/name").start()
    with pytest.raises(ValueError):
        Queue().put("x" * (300 * 1024))  # over max_item_bytes


def test_not_found_is_a_lookup_error(corrald):
    with pytest.raises(LookupError):
        corral.status("no-such-unit")
    with pytest.raises(LookupError):
        corral.call("pool_status", job=10**9)


def test_socket_path_rule(monkeypatch, tmp_path):
    from corral import _client

    # As if no system corrald ran here (its socket is looked at below).
    monkeypatch.setattr(_client, "SYSTEM_SOCKET", str(tmp_path / "no-system.sock"))
    monkeypatch.setenv("CORRAL_SOCKET", "/x/y.sock")
    assert corral.socket_path() == "/x/y.sock"
    monkeypatch.delenv("CORRAL_SOCKET")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert corral.socket_path() == str(tmp_path / "no-system.sock")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert corral.socket_path() == "/run/user/1000/corral.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert corral.socket_path() == "/state/corral/corral.sock"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/me")
    assert corral.socket_path() == "/home/me/.local/state/corral/corral.sock"


def test_a_user_without_a_corrald_of_their_own_gets_the_system_one(monkeypatch, tmp_path):
    from corral import _client

    system = tmp_path / "system.sock"
    system.touch()
    monkeypatch.setattr(_client, "SYSTEM_SOCKET", str(system))
    monkeypatch.delenv("CORRAL_SOCKET", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    # No corrald of the user's own: the system one (a member of the corral group).
    assert corral.socket_path() == str(system)
    # The user's own corrald, once it listens, comes first.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "corral.sock").touch()
    assert corral.socket_path() == str(tmp_path / "run" / "corral.sock")


def test_error_classes_are_the_standard_ones():
    import queue

    assert issubclass(corral.Empty, queue.Empty)
    assert issubclass(corral.Full, queue.Full)
    assert issubclass(corral.CorralPermissionError, PermissionError)
    assert issubclass(corral.NotFound, LookupError)
    assert issubclass(corral.OutOfRange, IndexError) and issubclass(corral.OutOfRange, ValueError)
    assert issubclass(corral.Overflow, ValueError)
    err = _client.error_from_reply(
        {"code": "permission_denied", "message": "no", "details": ["a", "b"]}
    )
    assert isinstance(err, PermissionError)
    assert str(err) == "no\n  a\n  b"
    assert err.code == "permission_denied"
