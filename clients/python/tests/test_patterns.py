"""The seed's eight multiprocessing patterns, with corral (see the README's side-by-side)."""

import subprocess
import sys

from conftest import child_env, wait_for

import corral
from corral import Lock, Pool, Process, Queue, Value

PY = sys.executable
JOIN = 120  # seconds: generous, two busy cores


def test_1_process_prints(corrald):
    p = Process([PY, "-c", "print('Hello from process!')"])
    p.start()
    p.join(timeout=JOIN)
    assert p.exitcode == 0
    assert p.logs() == ["Hello from process!"]


def test_2_five_processes_each_with_its_number(corrald, worker):
    processes = []
    for i in range(5):
        p = Process([PY, worker("task.py"), str(i)])
        processes.append(p)
        p.start()
    for p in processes:
        p.join(timeout=JOIN)
    assert [p.exitcode for p in processes] == [0] * 5
    assert [p.logs() for p in processes] == [["Task %d running" % i] for i in range(5)]
    assert len({p.name for p in processes}) == 5


def test_3_process_subclass(corrald):
    class MyProcess(Process):
        command = [PY, "-c", "print('Process running')"]

    p = MyProcess()
    p.start()
    p.join(timeout=JOIN)
    assert p.exitcode == 0
    assert p.logs() == ["Process running"]


def test_4_queue_between_a_process_and_the_test(corrald, worker):
    q = Queue()  # a made-up unique name, handed to the process
    p = Process([PY, worker("put.py"), q.name, "Data from process"])
    p.start()
    p.join(timeout=JOIN)
    assert p.exitcode == 0
    assert q.get(timeout=JOIN) == "Data from process"
    assert q.empty()


def test_5_pool_map_squares(corrald, worker):
    with Pool(processes=4) as pool:
        result = pool.map([PY, worker("square.py"), "{}"], [1, 2, 3, 4, 5], json=True)
    assert result == [1, 4, 9, 16, 25]


def test_5_pool_map_squares_from_a_string_template(corrald, worker):
    with Pool(4) as pool:
        assert pool.map("%s %s {}" % (PY, worker("square.py")), [1, 2, 3, 4, 5]) == [
            "1", "4", "9", "16", "25"
        ]


def test_5_pool_map_squares_with_stream_workers(corrald, worker):
    with Pool(4, stream=True) as pool:
        result = pool.map([PY, worker("square_stream.py")], [1, 2, 3, 4, 5], json=True)
    assert result == [1, 4, 9, 16, 25]


def test_5_pool_map_with_the_repository_example_worker(corrald):
    from conftest import REPO

    with Pool(2, stream=True) as pool:
        result = pool.map([PY, str(REPO / "examples" / "square.py")], range(1, 6), json=True)
    assert result == [1, 4, 9, 16, 25]


def test_6_value_incremented_by_a_process(corrald, worker, unique):
    num = Value(unique("num"), 0)
    p = Process([PY, worker("increment.py"), num.name])
    p.start()
    p.join(timeout=JOIN)
    assert p.exitcode == 0
    assert num.value == 1


def test_7_lock_three_processes_never_overlap(corrald, worker, unique):
    lock_name, q = unique("printer"), Queue()
    processes = [Process([PY, worker("locked_print.py"), lock_name, q.name, str(i)]) for i in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=JOIN)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    for i, p in enumerate(processes):
        assert p.logs() == ["Task %d executing" % i]
    records = sorted((q.get(timeout=JOIN) for _ in range(3)), key=lambda r: r["start"])
    assert sorted(r["n"] for r in records) == [0, 1, 2]
    for before, after in zip(records, records[1:]):
        assert before["end"] <= after["start"], records
        assert before["token"] < after["token"], records
    assert not Lock(lock_name).locked()


def test_8_daemon_process_stops_when_its_parent_exits(corrald, worker):
    q = Queue()
    out = subprocess.run(
        [PY, worker("daemon_parent.py"), q.name],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=JOIN,
        check=True,
    )
    unit = out.stdout.decode().strip()
    assert unit.startswith("run-"), out

    def stopped():
        instances = corral.status(unit)["units"][0]["instances"]
        return instances[0]["state"] not in ("starting", "running", "stopping", "backoff") and instances[0]

    instance = wait_for(stopped, JOIN, "the daemon process to be stopped")
    assert instance["last_exit"] == {"signal": 15}


def test_8_daemon_process_runs_until_terminated(corrald, worker):
    q = Queue()
    p = Process([PY, worker("background.py"), q.name], daemon=True)
    p.start()
    assert q.get(timeout=JOIN) == "Running..."
    assert q.get(timeout=JOIN) == "Running..."
    assert p.is_alive()
    assert p.exitcode is None
    p.terminate()
    assert not p.is_alive()
    assert p.exitcode == -15
