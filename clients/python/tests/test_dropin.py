"""multiprocessing programs run unchanged but for the import line (issue 16).

Each program of tests/seed is run as a file under corral (against the test corrald)
and, with its import changed back, under multiprocessing itself; their outputs must
match (as sets of lines where multiprocessing's own order is not fixed).
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import corral
from conftest import REPO, child_env, wait_for
from corral import Array, Pool, Process, Queue, Value

HERE = Path(__file__).resolve().parent
SEED = HERE / "seed"
GUIDE = HERE / "guide"
DROPIN = HERE / "dropin"
RUN_TIMEOUT = 180


def run_file(path, cwd, timeout=RUN_TIMEOUT, args=(), unbuffered=False, input=None):
    # Buffered output (the default for a pipe), so that each process writes its lines
    # whole: unbuffered, multiprocessing's own children interleave within lines.
    env = child_env()
    if not unbuffered:
        env.pop("PYTHONUNBUFFERED", None)
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL if input is None else None,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def as_multiprocessing(path, tmp_path):
    text = path.read_text()
    assert "from corral import" in text
    mp = tmp_path / ("mp_" + path.name)
    mp.write_text(text.replace("from corral import", "from multiprocessing import"))
    return mp


# Programs whose output order multiprocessing does not fix (processes racing to print).
UNORDERED = {"seed_2_multiple.py", "seed_7_lock.py", "guide_5_lock.py"}
SEEDS = sorted(p.name for p in SEED.glob("seed_*.py") if p.name != "seed_8_daemon.py")


def test_there_are_eight_seed_programs():
    assert len(SEEDS) + 1 == 8


@pytest.mark.parametrize("name", SEEDS)
def test_seed_program_prints_what_multiprocessing_prints(corrald, tmp_path, name):
    ours = run_file(SEED / name, tmp_path)
    theirs = run_file(as_multiprocessing(SEED / name, tmp_path), tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr == ""
    if name in UNORDERED:
        assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    else:
        assert ours.stdout == theirs.stdout
    assert ours.stdout.strip()


GUIDE_PROGRAMS = sorted(p.name for p in GUIDE.glob("guide_*.py"))


@pytest.mark.parametrize("name", GUIDE_PROGRAMS)
def test_guide_example_prints_what_multiprocessing_prints(corrald, tmp_path, name):
    """Examples of the Python documentation's multiprocessing guide (Process, Queue, Pipe,
    Lock, Value, Array, Pool), with the guard, and one without it; guide_8_api.py goes
    through the rest of the API (SimpleQueue, JoinableQueue, RLock, current_process,
    parent_process, active_children, terminate, close, imap, starmap_async, callbacks,
    get(timeout)). The programs get text on stdin, which a child must not see (its stdin
    is /dev/null, as multiprocessing's)."""
    stdin = "the parent's stdin\n"
    ours = run_file(GUIDE / name, tmp_path, input=stdin)
    theirs = run_file(as_multiprocessing(GUIDE / name, tmp_path), tmp_path, input=stdin)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr == ""
    if name in UNORDERED:
        assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    else:
        assert ours.stdout == theirs.stdout
    assert ours.stdout.strip()


def test_seed_daemon_program_prints_two_to_four_lines_and_leaves_nothing(start_corrald, tmp_path):
    start_corrald()
    # Unbuffered: a daemon child is terminated, and would never flush a buffer.
    ours = run_file(SEED / "seed_8_daemon.py", tmp_path, unbuffered=True)
    theirs = run_file(
        as_multiprocessing(SEED / "seed_8_daemon.py", tmp_path), tmp_path, unbuffered=True
    )
    assert ours.returncode == 0, ours.stderr
    lines = ours.stdout.splitlines()
    assert set(lines) == {"Running..."} and 2 <= len(lines) <= 4, ours.stdout
    assert set(theirs.stdout.splitlines()) == {"Running..."}

    def nothing_runs():
        units = corral.status()["units"]
        return all(i["state"] not in ("starting", "running", "stopping")
                   for u in units for i in u["instances"]) and units
    units = wait_for(nothing_runs, 60, "the daemon child to be gone")
    assert [u["instances"][0]["state"] for u in units] == ["stopped"]


def test_a_daemon_child_dies_with_a_parent_killed_with_sigkill(corrald, tmp_path):
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, str(DROPIN / "daemon_then_hang.py"), str(pidfile)],
        env=child_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        assert int(parent.stdout.readline()) == parent.pid
        child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 60, "the child's pid"))
        assert os.path.exists("/proc/%d" % child)
    finally:
        parent.kill()
        parent.wait(timeout=60)
    wait_for(lambda: not os.path.exists("/proc/%d" % child), 60, "the daemon child to die")


def test_anonymous_objects_are_removed_when_the_program_ends(corrald, tmp_path):
    out = run_file(DROPIN / "anonymous.py", tmp_path)
    assert out.returncode == 0, out.stderr
    first, names = out.stdout.splitlines()
    assert first == "x 5 [1.5, 0.0, 0.0]"
    queue, value, array = names.split()
    assert all(n.startswith("py-anon-") for n in (queue, value, array))
    # corrald removes them once it has seen the program exit.
    wait_for(lambda: not _existing([queue, value, array]), 60, "the objects to be removed")


def _existing(names):
    """Which of `names` exist in corrald, as anything anonymous may be."""
    listed = set()
    for op, key, field in [
        ("queue_list", "queues", "queue"), ("counter_list", "counters", "counter"),
        ("array_list", "arrays", "array"), ("semaphore_list", "semaphores", "semaphore"),
        ("event_list", "events", "event"),
    ]:
        listed.update(x[field] for x in corral.call(op)[key])
    return [n for n in names if n in listed]


def test_anonymous_objects_outlive_a_parent_killed_with_sigkill_until_its_child_is_gone(
    corrald, tmp_path
):
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, str(DROPIN / "anonymous_then_hang.py"), str(pidfile)],
        env=child_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        names = parent.stdout.readline().split()
        assert len(names) == 7 and all(n.startswith("py-anon-") for n in names), names
        child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 60, "the child's pid"))
        # The queue and counters exist once written to; the rest at once.
        wait_for(lambda: len(_existing(names)) == 7, 60, "every object to exist")
    finally:
        parent.kill()
        parent.wait(timeout=60)
    # The child still runs (it is not a daemon) and holds the session: nothing is removed.
    assert os.path.exists("/proc/%d" % child)
    corral.call("hello", version=1)  # a round trip, after which the parent's exit is seen
    assert len(_existing(names)) == 7
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: not _existing(names), 60, "the anonymous objects to be removed")


def test_anonymous_queues_stay_for_a_child_whose_parent_is_killed_right_after_start(
    corrald, tmp_path
):
    # Not run_file: the child keeps the parent's stdout open after the parent's death.
    parent = subprocess.Popen(
        [sys.executable, str(DROPIN / "anonymous_then_die.py")], cwd=str(tmp_path),
        env=child_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    line = parent.stdout.readline()
    assert parent.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
    requests, answers, child = line.split()
    assert requests.startswith("py-anon-") and answers.startswith("py-anon-"), line
    # The parent is gone; the child still uses both queues.
    Queue(requests).put("ping")
    assert Queue(answers).get(timeout=RUN_TIMEOUT) == "ping back"
    Queue(requests).put("bye")
    wait_for(lambda: not os.path.exists("/proc/%s" % child), 60, "the child to exit")
    wait_for(lambda: not _existing([requests, answers]), 60, "the queues to be removed")
    parent.stdout.close()


def test_status_lists_a_child_under_the_program_that_made_it(corrald, tmp_path):
    program = DROPIN / "child_then_wait.py"
    parent = subprocess.Popen(
        [sys.executable, str(program)], env=child_env(), cwd=str(tmp_path),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        unit, pid = parent.stdout.readline().split()
        status = corral.call("status", unit=unit)["units"][0]
        assert status["parent"]["pid"] == parent.pid, status
        assert program.name in status["parent"]["label"], status
        assert status["instances"][0]["pid"] == int(pid)
        ctl = REPO / "target" / "debug" / "corralctl"
        table = subprocess.run(
            [str(ctl), "--socket", str(corrald.socket), "status"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.splitlines()
        at = next(n for n, line in enumerate(table) if line.split()[0] == unit)
        # The row above the child's names its parent program, by label and pid.
        above = table[at - 1]
        assert program.name in above and str(parent.pid) in above, table
        assert table[at].startswith("  ") and not above.startswith(" "), table
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "0"
    finally:
        parent.kill()
        parent.wait(timeout=60)


def test_float_values_add_exactly_under_their_lock(corrald, tmp_path):
    out = run_file(DROPIN / "float_increments.py", tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "250.0 [0.0, 500.0, 1.5] [500.0, 1.5] [0, 0, 0, 0]"


def test_value_i_is_no_longer_a_machine_wide_counter_named_i(corrald):
    v = Value("i", 7)
    assert v.value == 7 and v.name != "i"
    counters = [c["counter"] for c in corral.call("counter_list")["counters"]]
    assert "i" not in counters


def test_ten_processes_times_a_thousand_locked_increments(corrald, tmp_path):
    out = run_file(DROPIN / "increments.py", tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "10000 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"


def _raise_in_child():
    raise RuntimeError("boom in the child")


def _kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def test_an_exception_in_the_child_exits_1_with_its_traceback(corrald, capfd):
    p = Process(target=_raise_in_child)
    p.start()
    p.join(timeout=RUN_TIMEOUT)
    assert p.exitcode == 1
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: boom in the child" in err
    assert "Process %s:" % p.name in err


def test_a_child_killed_by_a_signal_has_a_negative_exitcode(corrald):
    p = Process(target=_kill_myself)
    p.start()
    p.join(timeout=RUN_TIMEOUT)
    assert p.exitcode == -signal.SIGKILL
    assert not p.is_alive()


def test_an_unpicklable_target_fails_at_start_naming_it(corrald):
    p = Process(target=print, args=(threading.Lock(),))
    with pytest.raises(TypeError, match="lock"):
        p.start()
    with pytest.raises(TypeError, match="pool function|task"):
        with Pool(2) as pool:
            pool.map(print, [threading.Lock()])


def test_unreachable_corrald_is_a_connection_error_naming_the_socket(monkeypatch, tmp_path):
    missing = str(tmp_path / "no.sock")
    monkeypatch.setenv("CORRAL_SOCKET", missing)
    with pytest.raises(ConnectionError, match=missing):
        Process(target=print).start()


def test_a_pool_raises_the_remote_exception_with_its_traceback(corrald):
    with Pool(2) as pool:
        with pytest.raises(ZeroDivisionError) as info:
            pool.map(_inverse, [1, 0, 2])
        assert "ZeroDivisionError" in str(info.value.__cause__)
        assert pool.map(_inverse, [1, 2, 4]) == [1.0, 0.5, 0.25]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert pool.apply(pow, (2, 10)) == 1024
        assert list(pool.imap(_inverse, [1, 2])) == [1.0, 0.5]
        slow = pool.apply_async(_sleep, (600,))
        with pytest.raises(corral.TimeoutError):
            slow.get(timeout=0.5)
        got = []
        done = pool.map_async(_inverse, [1, 2], callback=got.append)
        assert done.get(timeout=RUN_TIMEOUT) == [1.0, 0.5]
        wait_for(lambda: got, 60, "the callback")
        assert got == [[1.0, 0.5]]


def test_apply_returns_the_value_even_when_the_answer_comes_back_at_once(corrald, monkeypatch):
    # The worst schedule, made certain: the result's waiting thread runs to the end before
    # apply_async returns. The answer must still be the value, not a one-item list.
    import threading

    import corral._pool

    class Eager(threading.Thread):
        def start(self):
            super().start()
            self.join()

    class Threading:
        Thread = Eager

        def __getattr__(self, name):
            return getattr(threading, name)

    with Pool(2) as pool:
        monkeypatch.setattr(corral._pool, "threading", Threading())
        assert pool.apply(pow, (2, 10)) == 1024
        assert pool.apply_async(pow, (3, 2)).get(timeout=RUN_TIMEOUT) == 9
        assert pool.apply(pow, (2, 3)) == 8


def test_join_returns_once_every_async_result_is_ready_and_its_callback_has_run(corrald):
    # As multiprocessing's join waits for its result handler: a slow callback (the
    # scenario itself, not a wait) must have run when join returns.
    import time

    called = []

    def slow_callback(value):
        time.sleep(1.0)
        called.append(value)

    pool = Pool(2)
    r = pool.starmap_async(pow, [(2, 2), (3, 2)], callback=slow_callback)
    pool.close()
    pool.join()
    assert r.ready()
    assert called == [[4, 9]]
    assert r.get(timeout=0) == [4, 9]


def test_shared_objects_pickle_by_reference(corrald):
    q, v, a = Queue(), Value("d", 1.5), Array("i", [1, 2, 3])
    q2, v2, a2 = pickle.loads(pickle.dumps((q, v, a)))
    q2.put((1, "x"))
    v2.value = 2.5
    a2[1:3] = [5, 6]
    assert q.get(timeout=30) == (1, "x")
    assert v.value == 2.5 and a[:] == [1, 5, 6]


def _locked_add(args):
    lock, value = args
    with lock:
        value.value += 1
    return True


def test_a_lock_and_a_value_travel_in_pool_tasks(corrald):
    """multiprocessing refuses a Lock in a Pool task; corral's pickle by reference."""
    from corral import Lock

    lock, value = Lock(), Value("i", 0)
    with Pool(2) as pool:
        assert pool.map(_locked_add, [(lock, value)] * 20, chunksize=1) == [True] * 20
    assert value.value == 20


def _inverse(x):
    return 1 / x


def _sleep(n):
    import time

    time.sleep(n)


def test_a_large_map_comes_back_whole_and_in_order(corrald):
    # Chunks of 12,500 items: each input and answer line is far over a pipe's buffer,
    # which once deadlocked a stream worker against corrald.
    with Pool(4) as pool:
        assert pool.map(abs, range(-100_000, 100_000)) == [abs(x) for x in range(-100_000, 100_000)]
        assert pool.map(abs, []) == []


def test_children_see_the_parents_environment_and_cwd(corrald, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DROPIN_MARK", "from-the-parent")
    monkeypatch.chdir(tmp_path)
    p = Process(target=_show_env_and_cwd)
    p.start()
    p.join(timeout=RUN_TIMEOUT)
    assert p.exitcode == 0
    out = capfd.readouterr().out
    assert "from-the-parent %s" % tmp_path in out
    assert corral.status(p.unit)["units"][0]["instances"][0]["state"] == "exited"


def _show_env_and_cwd():
    print(os.environ.get("DROPIN_MARK"), os.getcwd(), flush=True)


def _ctl(corrald, *args):
    """``corralctl --json ARGS`` against the test corrald, parsed."""
    out = subprocess.run(
        [str(REPO / "target" / "debug" / "corralctl"), "--socket", str(corrald.socket), "--json",
         *args],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_pool_job_is_cancelled_when_its_parent_exits_without_close_or_is_killed(
    corrald, tmp_path, how
):
    pidfile = tmp_path / "worker.pid"
    parent = subprocess.Popen(
        [sys.executable, str(DROPIN / "pool_then_exit.py"),
         "exit" if how == "exit" else "hang", str(pidfile)],
        env=child_env(), stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
    )
    try:
        job = int(parent.stdout.readline())
        worker = int(pidfile.read_text())
        listed = {j["job"]: j for j in _ctl(corrald, "pool", "list")["jobs"]}
        assert listed[job]["state"] == "running", listed.get(job)
        if how == "kill":
            parent.kill()
        else:
            parent.stdin.write("exit now\n")
            parent.stdin.flush()
        assert parent.wait(timeout=RUN_TIMEOUT) == (0 if how == "exit" else -signal.SIGKILL)
    finally:
        parent.kill()
        parent.wait(timeout=60)
        parent.stdout.close()
        parent.stdin.close()

    def state():
        listed = {j["job"]: j["state"] for j in _ctl(corrald, "pool", "list")["jobs"]}
        s = listed.get(job, "gone")
        return s if s != "running" else None

    assert wait_for(state, 60, "the job to be cancelled") in ("cancelled", "gone")
    wait_for(lambda: not os.path.exists("/proc/%d" % worker), 60, "its worker to be stopped")


def _square(x):
    return x * x


def _mp_chunks(n, processes, chunksize):
    """How many tasks multiprocessing makes of ``n`` items: ``Pool._map_async``'s
    default chunk size (``divmod(n, 4 * processes)``, rounded up), split by its own
    ``Pool._get_tasks``."""
    import multiprocessing.pool

    if chunksize is None:
        chunksize, extra = divmod(n, processes * 4)
        if extra:
            chunksize += 1
    return len(list(multiprocessing.pool.Pool._get_tasks(None, range(n), chunksize)))


def test_pool_chunks_are_the_ones_multiprocessing_makes(corrald):
    # (method, items, chunksize given; None: the method's default)
    cases = [
        ("map", 100, None), ("map", 5, None), ("map", 100, 7), ("map", 1000, None),
        ("imap", 10, None), ("imap", 10, 4), ("imap_unordered", 25, 6),
        ("starmap", 30, None), ("map_async", 50, None),
    ]
    with Pool(3) as pool:
        assert pool.map(_square, [0]) == [0]
        job = pool.jobs[0]
        total = _ctl(corrald, "pool", "status", str(job))["total"]
        for method, n, chunksize in cases:
            kwargs = {} if chunksize is None else {"chunksize": chunksize}
            if method == "starmap":
                got = pool.starmap(pow, [(i, 2) for i in range(n)], **kwargs)
            elif method == "map_async":
                got = pool.map_async(_square, range(n), **kwargs).get(RUN_TIMEOUT)
            else:
                got = getattr(pool, method)(_square, range(n), **kwargs)
            got = sorted(got) if method == "imap_unordered" else list(got)
            assert got == [i * i for i in range(n)], method
            # imap's default is 1 item a task; map's is multiprocessing's rule.
            default = 1 if method.startswith("imap") else None
            expected = _mp_chunks(n, 3, chunksize if chunksize is not None else default)
            now = _ctl(corrald, "pool", "status", str(job))["total"]
            assert now - total == expected, (method, n, chunksize)
            total = now


def _take_and_count(sem, ev, v):
    ev.wait(timeout=RUN_TIMEOUT)
    with sem:
        v.add(1)


def test_semaphores_and_events_across_processes(corrald):
    sem, ev, v = corral.BoundedSemaphore(2), corral.Event(), Value("i", 0)
    ps = [Process(target=_take_and_count, args=(sem, ev, v)) for _ in range(3)]
    for p in ps:
        p.start()
    assert not ev.is_set() and ev.wait(timeout=0.01) is False
    ev.set()
    for p in ps:
        p.join(timeout=RUN_TIMEOUT)
    assert [p.exitcode for p in ps] == [0, 0, 0] and v.value == 3
    assert sem.get_value() == 2
    with pytest.raises(ValueError):
        sem.release()
    assert sem.acquire() and sem.acquire() and not sem.acquire(block=False)
    s = corral.Semaphore(0)
    assert s.acquire(timeout=0.01) is False
    s.release()
    assert pickle.loads(pickle.dumps(s)).acquire(timeout=30)


def test_a_child_whose_python_differs_is_refused_clearly(tmp_path):
    from corral import _payload

    body = _payload.dumps(Process(target=print), "a process")
    path = _payload.write(body, hexversion=0x02070000)  # as if pickled by Python 2.7
    out = subprocess.run(
        _payload.python_command("_child", path), capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT, env=child_env(),
    )
    assert out.returncode == 1
    assert "refusing to run a target pickled by cpython 2.7.0" in out.stderr
    assert "the child's Python must be the parent's" in out.stderr
    assert not os.path.exists(path), "the payload is removed once read"


def _pid(_):
    return os.getpid()


def test_a_pools_workers_outlive_one_map(corrald):
    with Pool(2) as pool:
        first = set(pool.map(_pid, range(8), chunksize=1))
        second = set(pool.map(_pid, range(8), chunksize=1))
        assert len(first | second) <= 2, (first, second)


def test_maxtasksperchild_replaces_workers(corrald):
    with Pool(1, maxtasksperchild=1) as pool:
        pids = pool.map(_pid, range(3), chunksize=1)
        assert len(set(pids)) == 3, pids


def _slow_square(x):
    import time

    time.sleep(0.05)
    return x * x


def test_a_pool_map_survives_a_restart_of_corrald_while_the_parent_waits(start_corrald):
    server = start_corrald()
    n = 120
    got = {}

    def run():
        try:
            got["value"] = pool.map(_slow_square, range(n), chunksize=1)
        except BaseException as e:  # noqa: BLE001 - checked below
            got["error"] = e

    with Pool(2) as pool:
        waiter = threading.Thread(target=run, daemon=True)
        waiter.start()

        def some_done():
            jobs = corral.call("pool_list")["jobs"]
            return jobs and jobs[0]["succeeded"] >= 10 and jobs[0]

        job = wait_for(some_done, RUN_TIMEOUT, "some tasks of the map to be done")
        assert job["succeeded"] < n, "the map ended before corrald could be restarted"
        server.stop()
        server.start()
        waiter.join(timeout=RUN_TIMEOUT)
        assert not waiter.is_alive(), "map() still waits after corrald came back"
        assert "error" not in got, got.get("error")
        assert got["value"] == [x * x for x in range(n)]
        # The same job, kept by corrald across its restart, and the same warm Pool.
        assert [j["job"] for j in corral.call("pool_list")["jobs"]] == [job["job"]]
        assert pool.map(_slow_square, range(4)) == [0, 1, 4, 9]


def _stored_items(server, job):
    import sqlite3

    db = sqlite3.connect("file:%s?mode=ro" % (server.state / "state.db"), uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM pool_items WHERE job = ?", (job,)).fetchone()[0]
    finally:
        db.close()


def test_an_open_pool_job_drops_the_items_its_client_has_read(start_corrald):
    """A Pool's one job serves every map: corrald keeps only the items not yet read, in
    memory (pool_results) and in its database, and the job's counts and indexes go on,
    also after a restart of corrald."""
    server = start_corrald()
    with Pool(2) as pool:
        for n in range(30):
            assert pool.map(_slow_square, range(n * 40, n * 40 + 40), chunksize=1) == [
                x * x for x in range(n * 40, n * 40 + 40)
            ]
        job = corral.call("pool_list")["jobs"][0]
        assert (job["total"], job["succeeded"], job["failed"]) == (1200, 1200, 0)
        # The last map's 40 items; the 29 before it were read, and dropped.
        kept = corral.call("pool_results", job=job["job"])["items"]
        assert [i["index"] for i in kept] == list(range(1160, 1200))
        assert _stored_items(server, job["job"]) == 40
        with pytest.raises(ZeroDivisionError):
            pool.map(_inverse_saying, [0, 1], chunksize=1)
        server.stop()
        server.start()
        assert pool.map(_slow_square, range(5), chunksize=1) == [0, 1, 4, 9, 16]
        after = corral.call("pool_status", job=job["job"])
        # (A task's exception is an answer of its worker: the item succeeded.)
        assert (after["total"], after["succeeded"], after["failed"]) == (1207, 1207, 0)
        kept = corral.call("pool_results", job=job["job"])["items"]
        assert [i["index"] for i in kept] == list(range(1202, 1207))
        assert _stored_items(server, job["job"]) == 5


def _say(x):
    print("task", x)
    print("warn", x, file=sys.stderr)
    return x


def _hello(word):
    print("init", word)


def test_print_in_a_pool_function_reaches_the_parents_stdout(corrald, capfd):
    with Pool(2, initializer=_hello, initargs=("hi",)) as pool:
        assert pool.map(_say, range(6), chunksize=2) == list(range(6))
        assert pool.apply(_say, (9,)) == 9
        with pytest.raises(ZeroDivisionError):
            pool.map(_inverse_saying, [0])
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert sorted(line for line in lines if line.startswith("task")) == [
        "task %d" % x for x in (0, 1, 2, 3, 4, 5, 9)
    ], out
    assert "init hi" in lines and "before 0" in lines, out
    # Each chunk's lines arrive together, in the chunk's order.
    assert lines.index("task 0") + 1 == lines.index("task 1"), out
    assert "warn 0" in err.splitlines() and "warn 9" in err.splitlines(), err


def _inverse_saying(x):
    print("before", x)
    return 1 / x
