"""Queue: queue.Queue's semantics over corrald."""

import queue
import threading
import time

import pytest

from corral import Queue


def test_fifo_and_json_items(corrald, unique):
    q = Queue(unique("q"))
    items = [1, "two", {"three": [3, 3.5, None, True]}, [], "\u00e9t\u00e9 \U0001f600", -7]
    for item in items:
        q.put(item)
    assert q.qsize() == len(items)
    assert not q.empty()
    assert [q.get(timeout=30) for _ in items] == items
    assert q.empty()
    assert q.qsize() == 0


def test_items_that_are_not_json_travel_pickled(corrald):
    q = Queue()
    q.put((1, 2))
    q.put({"a": {1, 2}, "b": b"bytes"})
    q.put([1, "two", None, 3.5])
    assert q.get_nowait() == (1, 2)
    assert q.get_nowait() == {"a": {1, 2}, "b": b"bytes"}
    # JSON as it is (what other clients read) comes back as it is.
    assert q.get_nowait() == [1, "two", None, 3.5]


def test_get_on_an_empty_queue_raises_queue_empty(corrald):
    q = Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - started >= 0.19
    with pytest.raises(queue.Empty):
        q.get(timeout=0)


def test_full_queue_raises_queue_full(corrald):
    q = Queue(maxsize=2)
    assert q.maxsize == 2
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    started = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert time.monotonic() - started >= 0.19
    assert q.get_nowait() == 1
    assert not q.full()
    q.put(3, timeout=30)
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]


def test_unbounded_queue_is_never_full(corrald):
    q = Queue()
    assert q.maxsize == 0
    for i in range(20):
        q.put(i)
    assert not q.full()


def test_a_waiting_get_is_woken_by_a_put_from_another_thread(corrald):
    q = Queue()
    got = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=60)))
    getter.start()
    # The same object, another thread: the blocked get must not hold up this put.
    q.put("wake up")
    getter.join(timeout=90)
    assert got == ["wake up"]


def test_a_blocked_put_is_let_in_by_a_get(corrald):
    q = Queue(maxsize=1)
    q.put("first")
    putter = threading.Thread(target=lambda: q.put("second", timeout=60))
    putter.start()
    assert q.get(timeout=30) == "first"
    assert q.get(timeout=60) == "second"
    putter.join(timeout=90)
    assert not putter.is_alive()


def test_get_many_purge_and_delete(corrald):
    q = Queue()
    for i in range(5):
        q.put(i)
    assert q.get_many(3, timeout=10) == [0, 1, 2]
    assert q.purge() == 2
    assert q.empty()
    q.put("x")
    assert q.delete() == 1
    assert q.qsize() == 0


def test_two_objects_with_one_name_are_one_queue(corrald, unique):
    name = unique("shared")
    Queue(name).put("hello")
    assert Queue(name).get(timeout=30) == "hello"


def test_bad_timeouts_and_values(corrald):
    q = Queue()
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="queue item"):
        q.put(threading.Lock())
