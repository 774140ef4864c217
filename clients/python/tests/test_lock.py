"""Lock: multiprocessing.Lock's semantics, fencing tokens, release on death."""

import subprocess
import sys
import threading
import time

import pytest

from conftest import child_env

from corral import Lock


def test_acquire_release_and_tokens(corrald, unique):
    lock = Lock(unique("l"))
    assert lock.acquire() is True
    first = lock.token
    assert first is not None and lock.locked()
    lock.release()
    assert lock.token is None
    assert lock.acquire(timeout=30) is True
    assert lock.token > first
    lock.release()
    assert not lock.locked()


def test_a_held_lock_cannot_be_taken(corrald, unique):
    name = unique("l")
    holder, other = Lock(name), Lock(name)
    assert holder.acquire()
    assert other.acquire(False) is False
    assert other.acquire(block=False) is False
    started = time.monotonic()
    assert other.acquire(timeout=0.2) is False
    assert time.monotonic() - started >= 0.19
    holder.release()
    assert other.acquire(timeout=30) is True
    other.release()


def test_a_waiter_gets_the_lock_when_it_is_released(corrald, unique):
    name = unique("l")
    holder, waiter = Lock(name), Lock(name)
    holder.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(waiter.acquire(timeout=60)))
    t.start()
    # wait until corrald sees the waiter, so the release hands the lock over
    deadline = time.monotonic() + 60
    while holder.status().get("waiters", 0) < 1:
        assert time.monotonic() < deadline, "the waiter never showed"
        time.sleep(0.01)
    holder.release()
    t.join(timeout=90)
    assert got == [True]
    waiter.release()


def test_context_manager(corrald, unique):
    lock = Lock(unique("l"))
    with lock as held:
        assert held is lock and lock.token is not None
        assert Lock(lock.name).acquire(False) is False
    assert lock.token is None
    assert not lock.locked()


def test_release_of_a_lock_not_held_is_a_value_error(corrald, unique):
    lock = Lock(unique("l"))
    with pytest.raises(ValueError):
        lock.release()


def test_threads_sharing_one_lock_take_turns(corrald, unique):
    lock = Lock(unique("l"))
    inside, overlaps = [], []

    def work():
        for _ in range(5):
            with lock:
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not overlaps
    assert not lock.locked()


def test_lock_is_released_when_the_holding_process_is_killed(corrald, unique, worker):
    name = unique("l")
    holder = subprocess.Popen(
        [sys.executable, worker("hold_lock.py"), name],
        env=child_env(),
        stdout=subprocess.PIPE,
    )
    try:
        line = holder.stdout.readline().decode()
        assert line.startswith("held "), line
        mine = Lock(name)
        assert mine.acquire(False) is False
        assert mine.status()["holder"]["pid"] == holder.pid
        holder.kill()
        holder.wait(timeout=60)
        assert mine.acquire(timeout=60) is True
        assert mine.token > int(line.split()[1])
        mine.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()


def test_closing_the_lock_object_releases_it(corrald, unique):
    name = unique("l")
    lock = Lock(name)
    lock.acquire()
    lock.close()
    assert Lock(name).acquire(timeout=30) is True
