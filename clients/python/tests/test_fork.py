"""os.fork(): a child uses the parent's objects over connections of its own."""

import os

import pytest

from corral import Lock, Queue, Value

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(action):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8


def test_objects_work_in_a_forked_child(corrald, unique):
    q, v = Queue(), Value(unique("v"), 0)
    q.put("before fork")  # the parent's pooled connection now exists
    v.add(1)

    def child():
        v.add(1)
        q.put("from child")

    assert _in_child(child) == 0
    assert v.value == 2
    assert [q.get(timeout=30), q.get(timeout=30)] == ["before fork", "from child"]


def test_a_lock_held_by_the_parent_stays_held_when_a_child_exits(corrald, unique):
    name = unique("l")
    lock = Lock(name)
    assert lock.acquire()

    def child():
        # the inherited connection is not the child's: it cannot take the lock
        assert lock.token is None
        assert lock.acquire(False) is False
        assert Lock(name).acquire(False) is False

    assert _in_child(child) == 0
    assert Lock(name).acquire(False) is False  # the child's exit did not release it
    lock.release()
    assert Lock(name).acquire(timeout=30) is True
