"""Queue.get(ack=True): at-least-once consumption with Message.ack() / nack()."""

import subprocess
import sys
import time

import pytest

from conftest import child_env
from corral import Message, NotHeld, Queue

WORKER = """
import sys
from corral import Queue
m = Queue(sys.argv[1]).get(timeout=60, ack=True)
print(m.value, m.deliveries, flush=True)
if sys.argv[2] == "ack":
    m.ack()
    print("acked", flush=True)
sys.stdin.readline()  # stay alive, holding the lease, until killed
"""


def test_ack_removes_the_item_and_nack_returns_it_to_the_head(corrald, unique):
    q = Queue(unique("q"))
    q.put({"job": 1})
    q.put({"job": 2})
    m = q.get(timeout=30, ack=True)
    assert isinstance(m, Message)
    assert (m.value, m.deliveries) == ({"job": 1}, 1)
    assert (q.qsize(), q.in_flight()) == (1, 1)
    m.nack()
    again = q.get(timeout=30, ack=True)
    assert (again.value, again.deliveries) == ({"job": 1}, 2)
    again.ack()
    with pytest.raises(ValueError):
        again.ack()
    assert (q.qsize(), q.in_flight()) == (1, 0)
    assert q.get_nowait() == {"job": 2}


def test_an_item_of_a_killed_worker_is_delivered_again(corrald, unique):
    name = unique("q")
    q = Queue(name)
    q.put("work")
    q.put("more")
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, name, "keep"],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout.readline().decode().split() == ["work", "1"]
        assert q.in_flight() == 1
        worker.kill()
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()
        worker.stdin.close()
    # corrald returns the lease once it has seen the worker's connection close.
    deadline = time.monotonic() + 60
    while q.in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert q.in_flight() == 0
    m = q.get(timeout=60, ack=True)
    assert (m.value, m.deliveries) == ("work", 2)
    m.ack()
    # An acked item stays gone when its worker dies.
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, name, "ack"],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout.readline().decode().split() == ["more", "1"]
        assert worker.stdout.readline().decode().strip() == "acked"
        worker.kill()
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()
        worker.stdin.close()
    assert (q.qsize(), q.in_flight()) == (0, 0)


def test_a_passed_lease_is_not_held_and_poison_goes_to_the_dead_letter_queue(corrald, unique):
    name = unique("q")
    q = Queue(name, max_deliveries=2)
    q.put("poison")
    slow = q.get(timeout=30, ack=True, visibility=0.2)
    second = q.get(timeout=60, ack=True)  # once the first lease passes
    assert (second.value, second.deliveries) == ("poison", 2)
    with pytest.raises(NotHeld):
        slow.ack()
    second.nack()  # delivered twice, returned: dead-lettered
    dead = Queue(name + ".dead")
    assert dead.get(timeout=30) == "poison"
    assert (q.qsize(), q.in_flight()) == (0, 0)
