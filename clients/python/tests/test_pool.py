"""Pool: map, imap (ordered, streaming), failures, context manager, named pools."""

import sys
import time

import pytest

import corral
from corral import Pool, PoolItemError

PY = sys.executable


def test_map_returns_stdout_in_input_order(corrald):
    with Pool(3) as pool:
        assert pool.map(["echo", "{}"], ["a", "b c", "d"]) == ["a", "b c", "d"]
        assert pool.map("printf %s {}", ["x"]) == ["x"]  # no trailing newline to strip
        assert pool.map("printf '%s\\n\\n' {}", ["y"]) == ["y\n"]  # only one is stripped
        assert pool.map("echo", []) == []


def test_inputs_that_are_not_strings_are_passed_as_json(corrald):
    with Pool(2) as pool:
        assert pool.map(["echo", "{}"], [1, 2.5, None, [1, 2], {"a": 1}], json=True) == [
            1, 2.5, None, [1, 2], {"a": 1}
        ]


def test_imap_is_ordered_even_when_later_items_finish_first(corrald, worker):
    delays = [0.6, 0.4, 0.2, 0.0]
    with Pool(4) as pool:
        it = pool.imap([PY, worker("slow_echo.py"), "{}", "{}"], ["%s" % d for d in delays])
        assert list(it) == ["%s" % d for d in delays]
        it = pool.imap_unordered([PY, worker("slow_echo.py"), "{}", "{}"], ["0.2", "0.0"])
        assert sorted(it) == ["0.0", "0.2"]


def test_imap_streams_results_before_the_job_ends(corrald, worker):
    with Pool(2) as pool:
        it = pool.imap("%s %s {} done" % (PY, worker("slow_echo.py")), ["0", "600"])
        started = time.monotonic()
        assert next(it) == "done"
        # the second item sleeps for 10 minutes: the first result came without it
        assert time.monotonic() - started < 300
        job = pool.jobs[0]
        assert corral.call("pool_status", job=job)["state"] == "running"
    # leaving the block cancelled the job
    assert corral.call("pool_status", job=job)["state"] == "cancelled"
    with pytest.raises(corral.CorralError):
        list(it)


def test_a_failing_item_raises_with_its_index_exit_and_stderr(corrald, worker):
    with Pool(2) as pool:
        with pytest.raises(PoolItemError) as info:
            pool.map([PY, worker("fail.py"), "{}"], [1, 2, 3, 4])
    err = info.value
    assert (err.index, err.input, err.exitcode) == (2, "3", 3)
    assert "cannot handle 3" in err.stderr
    assert "pool item 2" in str(err) and "exit 3" in str(err) and "cannot handle 3" in str(err)


def test_imap_raises_at_the_failed_item_and_goes_on(corrald, worker):
    with Pool(2) as pool:
        it = pool.imap([PY, worker("fail.py"), "{}"], [1, 3, 5])
        assert next(it) == "1"
        with pytest.raises(PoolItemError) as info:
            next(it)
        assert info.value.index == 1
        assert next(it) == "5"
        with pytest.raises(StopIteration):
            next(it)


def test_command_not_found(corrald):
    with Pool(1) as pool:
        with pytest.raises(PoolItemError) as info:
            pool.map(["/nonexistent/program", "{}"], ["a"])
    assert info.value.error


def test_per_item_timeout_and_retries(corrald, worker):
    with Pool(1, timeout=0.5, retries=1) as pool:
        with pytest.raises(PoolItemError) as info:
            pool.map([PY, worker("slow_echo.py"), "{}", "late"], ["120"])
    assert info.value.item["attempts"] == 2
    assert info.value.error


def test_map_async(corrald, worker):
    with Pool(2) as pool:
        result = pool.map_async([PY, worker("square.py"), "{}"], [1, 2, 3], json=True)
        assert result.get(timeout=120) == [1, 4, 9]
        assert result.ready() and result.successful()


def test_close_and_join(corrald, worker):
    pool = Pool(2)
    result = pool.map_async([PY, worker("square.py"), "{}"], [4, 5])
    pool.close()
    with pytest.raises(ValueError):
        pool.map("echo", [1])
    pool.join()
    assert result.ready()
    assert result.get() == ["16", "25"]


def test_named_pool(corrald, worker, unique):
    name = unique("squares")
    (corrald.units / ("%s.toml" % name)).write_text(
        'kind = "pool"\ncommand = ["%s", "%s"]\nworkers = 2\nmode = "stream"\n'
        % (PY, worker("square_stream.py"))
    )
    corral.call("reload")
    with Pool(pool=name) as pool:
        assert pool.map(None, [1, 2, 3], json=True) == [1, 4, 9]
        assert pool.map([4, 5], json=True) == [16, 25]


def test_bad_arguments(corrald):
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(ValueError):
        Pool(2, timeout=-1)
    with pytest.raises(ValueError):
        Pool(2, stream=True).map("cat", ["two\nlines"])  # corrald's bad_request
    with pytest.raises(TypeError):
        Pool(2).map(["echo"])


def test_wait_with_a_timeout_returns_while_the_job_runs_on(corrald):
    pool = Pool(1)
    result = pool.map_async(["sleep", "{}"], ["30"])
    result.wait(0.2)
    assert not result.ready()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.1)
    pool.terminate()
    result.wait(30)
    assert result.ready()
