"""Pool: a parallel map run by corrald as a pool job (``multiprocessing.Pool``)."""

import atexit
import base64
import json as _json
import os
import pickle
import sys
import threading
import weakref
from multiprocessing.pool import RemoteTraceback  # type: ignore[attr-defined]
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
    cast,
)

from . import _client, _mp, _payload
from ._process import Command, split_command
from ._queue import timeout_ms
from .errors import CorralConnectionError, CorralError, PoolItemError, Timeout

__all__ = ["Pool", "PoolIterator", "AsyncResult", "ApplyResult"]

# What map() and its kin run: a function, a command line, or (for a Pool made with
# pool=NAME) the inputs themselves.
MapTarget = Union[Callable[..., Any], Command, Iterable[Any], None]
# An outcome of a job, in input order: a result, or the exception of a failed item.
Outcomes = Generator[Any, None, None]


def _input(item: Any) -> str:
    """A pool input is a line of text: strings as they are, anything else as JSON."""
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):
        return item.decode("utf-8")
    return _json.dumps(item, allow_nan=False, separators=(",", ":"))


def _output(item: Dict[str, Any], parse_json: bool) -> Any:
    out = item.get("stdout") or ""
    if out.endswith("\n"):
        out = out[:-1]
    if not parse_json:
        return out
    try:
        return _json.loads(out)
    except ValueError as e:
        raise ValueError(
            "pool item %s (input %r): its output is not JSON (%s): %r"
            % (item.get("index"), item.get("input"), e, out[:200])
        ) from None


class Pool:
    """Runs a command once per input, at most ``processes`` at a time, through corrald.

    ``processes``: most items at once (exec mode) or worker processes (stream mode);
    None: as many as corrald's machine has CPUs.

    ``stream=True``: long-lived workers of the command, each reading one input line
    on stdin and answering one line on stdout (flushed), instead of one process per
    item. ``retries``: extra attempts for a failed item. ``timeout``: seconds before
    an item's process group is killed. ``pool="NAME"``: submit to a named pool (a
    unit with ``kind = "pool"``), whose command, workers and mode apply: then call
    ``map(None, inputs)`` or ``map(inputs)``. ``env`` adds environment variables;
    items run in ``cwd`` (default: the current directory).

    The command is a list or a string split like a shell would: ``"python3 square.py
    {}"``. In exec mode ``{}`` in any argument becomes the input (without ``{}`` the
    input is appended). Inputs are lines of text: strings are passed as they are,
    anything else as JSON (``3`` -> ``3``, ``[1, 2]`` -> ``[1,2]``). Results are each
    item's stdout without its trailing newline, or with ``json=True`` that text parsed
    as JSON.

    The job is corrald's: it survives a restart of corrald, and a crash of this
    program (``corralctl pool list``). Leaving a ``with Pool(...)`` block, or
    ``terminate()``, cancels a job of this pool that is still running.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: Optional[int] = None,
        context: Any = None,
        *,
        stream: bool = False,
        retries: int = 0,
        timeout: Optional[float] = None,
        pool: Optional[str] = None,
        env: Optional[Mapping[str, Any]] = None,
        cwd: Union[str, "os.PathLike[str]", None] = None,
        name: Optional[str] = None,
        socket: Optional[str] = None,
    ) -> None:
        if processes is not None:
            if isinstance(processes, bool) or not isinstance(processes, int):
                raise TypeError("processes must be an int or None")
            if processes < 1:
                raise ValueError("Number of processes must be at least 1")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be a non-negative int")
        self._timeout_ms = timeout_ms(timeout)
        if self._timeout_ms == 0:
            raise ValueError("a pool item timeout must be more than 0")
        self._processes = processes
        self.stream = bool(stream)
        self.retries = retries
        self.pool = pool
        self.env = {str(k): str(v) for k, v in dict(env or {}).items()}
        self.cwd = os.path.abspath(cwd) if cwd is not None else None
        self.name = name
        self._socket = socket
        self._state = "run"
        self._jobs: Dict[int, bool] = {}  # job id -> finished?
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._payload: Optional[str] = None  # the pickled function of the last function-form job
        self._payloads: Dict[int, str] = {}  # job id -> payload file, removed when the job is over
        self._open: Optional[int] = None  # the open job of the function form (its workers)
        # Batches of the open job read to the end (first -> count), and the index before
        # which every answer has been read: sent with the next pool_append, so corrald
        # drops those items and the job stays bounded however many maps it serves.
        self._read: Dict[int, int] = {}
        self._read_before = 0
        self._read_lock = threading.Lock()
        self._maxtasks = maxtasksperchild
        self._pid = os.getpid()
        _POOLS.add(self)

    def __repr__(self) -> str:
        return "<corral.Pool state=%s jobs=%s>" % (self._state, list(self._jobs))

    # -- submitting ----------------------------------------------------------------

    def _submit(self, cmd: Any, iterable: Optional[Iterable[Any]]) -> Optional[int]:
        if self._state != "run":
            raise ValueError("Pool not running")
        if iterable is None:
            if self.pool is None:
                raise TypeError("map() needs a command and the inputs: map(cmd, inputs)")
            cmd, iterable = None, cmd
        fields: Dict[str, Any] = {"inputs": [_input(x) for x in iterable]}
        if cmd is not None:
            fields["command"] = split_command(cmd)
        elif self.pool is None:
            raise TypeError("give a command, or create the Pool with pool=NAME")
        if self.pool is not None:
            fields["pool"] = self.pool
        if not fields["inputs"]:
            return None
        if self._processes is not None:
            fields["workers"] = self._processes
        if self.retries:
            fields["retries"] = self.retries
        if self._timeout_ms is not None:
            fields["timeout_ms"] = self._timeout_ms
        if self.stream:
            fields["stream"] = True
        if self.env:
            fields["env"] = self.env
        if self.name is not None:
            fields["name"] = self.name
        fields["working_dir"] = self.cwd or os.getcwd()
        job = _client.call("pool_submit", socket=self._socket, **fields)
        self._jobs[job["job"]] = False
        return job["job"]

    def _finished(self, job_id: int) -> None:
        self._jobs[job_id] = True

    def map(
        self,
        cmd: MapTarget,
        iterable: Optional[Iterable[Any]] = None,
        chunksize: Optional[int] = None,
        json: bool = False,
    ) -> List[Any]:
        """``map(func, iterable, chunksize=None)``: ``func(x)`` for each ``x``, in the
        pool's worker processes; the results in input order (multiprocessing's).
        A task's exception is raised here, as its own type, with the remote traceback
        as its ``__cause__``.

        ``map(cmd, inputs)`` (a command): runs ``cmd`` for each input; returns the
        results in input order.

        Waits for the whole job; if items failed, raises :class:`PoolItemError` for
        the first of them (its ``index``, ``input``, ``exitcode``, ``stderr``) once
        the job is over, like ``multiprocessing.Pool.map`` re-raises.
        """
        if callable(cmd):
            return self._fmap(cmd, iterable, chunksize, "map").get()
        results: List[Any] = []
        first_error: Optional[Exception] = None
        for outcome in self._iter(cmd, iterable, json):
            if isinstance(outcome, Exception):
                if first_error is None:
                    first_error = outcome
                results.append(None)
            else:
                results.append(outcome)
        if first_error is not None:
            raise first_error
        return results

    def imap(
        self,
        cmd: MapTarget,
        iterable: Optional[Iterable[Any]] = None,
        chunksize: Optional[int] = 1,
        json: bool = False,
    ) -> "PoolIterator":
        """Like ``map``, but returns an iterator that yields each result as soon as it
        and every one before it are done. A failed item raises :class:`PoolItemError`
        from ``next()``; iterating on gives the items after it."""
        if callable(cmd):
            return PoolIterator(self._fiter(cmd, iterable, chunksize, "map"))
        return PoolIterator(self._iter(cmd, iterable, json))

    def imap_unordered(
        self,
        cmd: MapTarget,
        iterable: Optional[Iterable[Any]] = None,
        chunksize: Optional[int] = 1,
        json: bool = False,
    ) -> "PoolIterator":
        """The same as ``imap``: corrald hands results back in input order only, so
        "unordered" here means "in input order" (any order is allowed)."""
        return self.imap(cmd, iterable, chunksize, json=json)

    def starmap(
        self,
        cmd: Union[Callable[..., Any], Command],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
        json: bool = False,
    ) -> List[Any]:
        """``starmap(func, iterable)``: ``func(*args)`` for each tuple ``args``.

        With a command: each element of ``iterable`` is a tuple of arguments, joined by
        spaces into one input (so ``{}`` expands to several words of the command line)."""
        if callable(cmd):
            return self._fmap(cmd, iterable, chunksize, "star").get()
        return self.map(cmd, (" ".join(_input(a) for a in args) for args in iterable), json=json)

    def map_async(
        self,
        cmd: MapTarget,
        iterable: Optional[Iterable[Any]] = None,
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[Any], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
        json: bool = False,
    ) -> Union["AsyncResult", "ApplyResult"]:
        """Submits the job and returns an :class:`AsyncResult` at once (with a
        function: a :class:`ApplyResult`, which calls ``callback`` with the result
        list or ``error_callback`` with the exception when the job ends)."""
        if callable(cmd):
            return self._fmap(cmd, iterable, chunksize, "map", callback, error_callback)
        job = self._submit(cmd, iterable)
        return AsyncResult(self, job, json)

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[Any], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> "ApplyResult":
        """``starmap`` that returns an :class:`ApplyResult` at once."""
        return self._fmap(func, iterable, chunksize, "star", callback, error_callback)

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        """``func(*args, **kwds)`` in a worker; returns its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Optional[Mapping[str, Any]] = None,
        callback: Optional[Callable[[Any], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> "ApplyResult":
        """``apply`` that returns an :class:`ApplyResult` at once."""
        return self._fmap(
            func, [(tuple(args), dict(kwds or {}))], 1, "apply", callback, error_callback
        )

    # -- function form: workers are `python -m corral._worker` of a stream-mode job ---

    def _workers(self) -> int:
        return self._processes or os.cpu_count() or 1

    def _chunks(
        self, iterable: Optional[Iterable[Any]], chunksize: Optional[int]
    ) -> List[List[Any]]:
        items = list(cast(Iterable[Any], iterable))  # None: list() raises TypeError
        if chunksize is None:
            # multiprocessing's rule.
            chunksize, extra = divmod(len(items), self._workers() * 4)
            if extra:
                chunksize += 1
        chunksize = max(1, int(chunksize))
        return [items[i:i + chunksize] for i in range(0, len(items), chunksize)]

    def _fsubmit(
        self, func: Callable[..., Any], chunks: Sequence[List[Any]], mode: str
    ) -> List["_Batch"]:
        """Appends the chunks to this pool's open job (one batch per request that fits
        a frame); returns the batches in order."""
        if self._state != "run":
            raise ValueError("Pool not running")
        if not callable(func):
            raise TypeError("%r is not callable" % (func,))
        fbytes = _payload.dumps(func, "the pool function %r" % (func,))
        if not chunks:
            return []
        from ._process import _owner_connection

        # The workers start (a first call's) while the tasks are pickled here.
        job = self._open_job()
        lines: List[str] = []
        for chunk in chunks:
            data = _payload.dumps((mode, fbytes, chunk), "a task of %r" % (func,))
            lines.append(base64.b64encode(data).decode("ascii"))
        batches: List[_Batch] = []
        batch: List[str] = []
        size = 0
        for line in [*lines, None]:
            if line is not None and (not batch or size + len(line) + 4 <= _FRAME_BUDGET):
                batch.append(line)
                size += len(line) + 4
                continue
            # Through this program's owner connection: corrald cancels the job when it
            # closes (this program exited or was killed).
            fields: Dict[str, Any] = {
                "job": job, "inputs": batch, "cancel_on_disconnect": True
            }
            if self._read_before:
                fields["release_before"] = self._read_before
            got = _owner_connection(self._socket).request("pool_append", fields)
            batches.append(_Batch(job, got["first"], got["count"]))
            batch, size = ([line], len(line) + 4) if line is not None else ([], 0)
        return batches

    def _open_job(self) -> int:
        """This pool's open stream-mode job, submitted on first use: its workers live
        as long as the Pool, so each map() reuses them warm."""
        if self._open is not None:
            return self._open
        from ._process import _owner_connection

        body = _payload.dumps((self._initializer, self._initargs), "the pool initializer")
        path = _payload.write(body)
        fields: Dict[str, Any] = {
            "command": _payload.python_command("_worker", path),
            "stream": True,
            "open": True,
            "inputs": [],
            "workers": self._workers(),
            "working_dir": self.cwd or os.getcwd(),
            "env": _payload.child_env(self.env),
            "cancel_on_disconnect": True,
        }
        if self._maxtasks is not None:
            fields["max_items_per_worker"] = self._maxtasks
        if self.name is not None:
            fields["name"] = self.name
        try:
            job = _owner_connection(self._socket).request("pool_submit", fields)
        except BaseException:
            _remove(path)
            raise
        self._open = job["job"]
        self._jobs[self._open] = False
        self._payloads[self._open] = path
        return self._open

    def _fmap(
        self,
        func: Callable[..., Any],
        iterable: Optional[Iterable[Any]],
        chunksize: Optional[int],
        mode: str,
        callback: Optional[Callable[[Any], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
    ) -> "ApplyResult":
        batches = self._fsubmit(func, self._chunks(iterable, chunksize), mode)
        return ApplyResult(self, batches, callback, error_callback, single=mode == "apply")

    def _fiter(
        self,
        func: Callable[..., Any],
        iterable: Optional[Iterable[Any]],
        chunksize: Optional[int],
        mode: str,
    ) -> Outcomes:
        batches = self._fsubmit(func, self._chunks(iterable, chunksize), mode)
        try:
            for batch in batches:
                for outcome in self._batch_results(batch):
                    for value in _decode_chunk(outcome):
                        yield value
        finally:
            for batch in batches:
                self._batch_read(batch)

    def _done(self, job: int) -> None:
        self._finished(job)
        path = self._payloads.pop(job, None)
        if path is not None and path not in self._payloads.values():
            try:
                os.unlink(path)
            except OSError:
                pass

    def _iter(self, cmd: Any, iterable: Optional[Iterable[Any]], parse_json: bool) -> Outcomes:
        """Submits the job now; returns a generator of each result, or of the exception
        for a failed item, in input order."""
        return self._results(self._submit(cmd, iterable), parse_json)

    def _batch_results(self, batch: "_Batch") -> Outcomes:
        """The answers of one batch of the open job, in order. A wait cut short (corrald
        restarted) is taken up again from the next answer: the job and the answers
        recorded so far are corrald's, kept across its restart."""
        try:
            for outcome in self._batch_answers(batch):
                yield outcome
        finally:
            # Read, or given up (an imap left early): corrald may drop it either way.
            self._batch_read(batch)

    def _batch_read(self, batch: "_Batch") -> None:
        """No more waits for this batch's answers (read, or given up)."""
        if batch.job != self._open or batch.first < self._read_before:
            return
        with self._read_lock:
            self._read[batch.first] = batch.count
            while self._read_before in self._read:
                self._read_before += self._read.pop(self._read_before)

    def _batch_answers(self, batch: "_Batch") -> Outcomes:
        seen = 0
        deadline: Optional[float] = None
        while seen < batch.count:
            fields = {"job": batch.job, "results": True, "from": batch.first + seen,
                      "count": batch.count - seen}
            events = _client.stream("pool_wait", socket=self._socket, **fields)
            try:
                while True:
                    try:
                        item = next(events)
                    except StopIteration as end:
                        info = end.value or {}
                        break
                    seen += 1
                    deadline = None
                    if item.get("ok"):
                        yield item.get("stdout") or ""
                    else:
                        yield PoolItemError(item, batch.job)
            except CorralConnectionError:
                import time

                now = time.monotonic()
                if deadline is None:
                    deadline = now + _REATTACH_SECONDS
                elif now > deadline:
                    raise
                time.sleep(0.2)
                continue
            finally:
                events.close()
            if seen < batch.count:
                raise CorralError(
                    "pool job %d was cancelled before %d of this call's %d tasks were done "
                    "(state %s)" % (batch.job, batch.count - seen, batch.count,
                                    info.get("state")),
                    "cancelled",
                )

    def _results(self, job: Optional[int], parse_json: bool) -> Outcomes:
        if job is None:
            return
        total = None
        seen = 0
        events = _client.stream("pool_wait", socket=self._socket, job=job, results=True)
        try:
            while True:
                try:
                    item = next(events)
                except StopIteration as end:
                    info = end.value or {}
                    total = info.get("total")
                    break
                seen += 1
                if item.get("ok"):
                    try:
                        yield _output(item, parse_json)
                    except ValueError as e:
                        yield e
                else:
                    yield PoolItemError(item, job)
        finally:
            events.close()
        self._finished(job)
        if total is not None and seen < total:
            raise CorralError(
                "pool job %d was cancelled after %d of its %d items (state %s)"
                % (job, seen, total, info.get("state")),
                "cancelled",
            )

    # -- lifecycle -------------------------------------------------------------------

    @property
    def jobs(self) -> List[int]:
        """The ids of the pool jobs submitted through this Pool."""
        return list(self._jobs)

    def close(self) -> None:
        """No more jobs may be submitted; the running ones go on (``join`` waits)."""
        if self._state == "run":
            self._state = "close"
            if self._open is not None and not self._jobs.get(self._open):
                # The open job ends once its batches are done (join waits for that).
                _client.call("pool_close", socket=self._socket, job=self._open)

    def terminate(self) -> None:
        """Cancels every job of this pool that is still running (``pool_cancel``):
        running items' process groups are stopped, pending items skipped."""
        self._state = "terminate"
        for job, finished in list(self._jobs.items()):
            if finished:
                continue
            try:
                info = _client.call("pool_cancel", socket=self._socket, job=job)
            except CorralError:
                continue
            if info.get("state") != "running":
                self._finished(job)

    def join(self) -> None:
        """Waits for every job of this pool to end (call ``close`` or ``terminate`` first)."""
        if self._state == "run":
            raise ValueError("Pool is still running (call close() or terminate() first)")
        for job, finished in list(self._jobs.items()):
            if not finished:
                _client.call("pool_wait", socket=self._socket, job=job)
                self._finished(job)

    def __enter__(self) -> "Pool":
        if self._state != "run":
            raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()
        for job in list(self._payloads):
            self._done(job)


# Jobs of function-form pools are cancelled when the program exits, as
# multiprocessing's pool workers die with their parent.
_POOLS: "weakref.WeakSet[Pool]" = weakref.WeakSet()
# The inputs of one pool_submit request, in bytes: under corrald's 1 MiB frame limit.
_FRAME_BUDGET = 900_000
# How long a wait for results tries to reconnect to a corrald that went away.
_REATTACH_SECONDS = 60.0


class _Batch:
    """Inputs of one pool_append: items ``first .. first + count`` of ``job``."""

    def __init__(self, job: int, first: int, count: int) -> None:
        self.job, self.first, self.count = job, first, count


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _cancel_at_exit() -> None:
    pid = os.getpid()
    for pool in list(_POOLS):
        if pool._pid != pid:
            continue
        try:
            if any(not done for done in pool._jobs.values()):
                pool.terminate()
            for job in list(pool._payloads):
                pool._done(job)
        except Exception:
            pass


atexit.register(_cancel_at_exit)


def _decode_chunk(outcome: Any) -> List[Any]:
    """The results of one chunk's answer line, or raises the task's exception."""
    if isinstance(outcome, Exception):
        raise outcome
    try:
        answer = pickle.loads(base64.b64decode(outcome))
    except Exception as e:
        raise CorralError(
            "a pool worker sent an answer that cannot be read (%s): %r" % (e, outcome[:200]),
            "protocol",
        ) from None
    _print(answer[-1])
    if answer[0] == "ok":
        return answer[1]
    _, exc, tb, _ = answer
    if exc is None:
        exc = CorralError("a pool task failed:\n%s" % tb, "failed")
    exc.__cause__ = RemoteTraceback(tb)
    raise exc


def _print(printed: Any) -> None:
    """Writes what a chunk's tasks printed to this program's stdout and stderr, as
    multiprocessing's workers, which share the parent's."""
    for text, stream in zip(printed, (sys.stdout, sys.stderr)):
        if text and stream is not None:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass


class ApplyResult:
    """The result of ``apply_async``/``map_async``/``starmap_async`` with a function:
    a thread waits for the job, then calls ``callback`` (with the result) or
    ``error_callback`` (with the exception)."""

    def __init__(
        self,
        pool: Pool,
        batches: List[_Batch],
        callback: Optional[Callable[[Any], object]] = None,
        error_callback: Optional[Callable[[BaseException], object]] = None,
        single: bool = False,
    ) -> None:
        self._pool = pool
        self._batches = batches
        self.jobs = sorted({b.job for b in batches})
        # Set before the waiting thread starts: an answer that comes back at once must
        # still be unwrapped (`apply` returns the value, not a one-item list).
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        values: List[Any] = []
        try:
            for batch in self._batches:
                for outcome in self._pool._batch_results(batch):
                    values.extend(_decode_chunk(outcome))
            self._value = values[0] if self._single and values else values
        except BaseException as e:  # noqa: BLE001 - handed to get()
            self._error = e
        finally:
            # The batches after a failed task are not waited for.
            for batch in self._batches:
                self._pool._batch_read(batch)
        # The callback runs before the result is ready, as multiprocessing's: once get()
        # returns, the callback has been called.
        try:
            if self._error is None:
                if self._callback is not None:
                    self._callback(self._value)
            elif self._error_callback is not None:
                self._error_callback(self._error)
        except Exception:
            import traceback

            traceback.print_exc()
        self._event.set()

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError("%r not ready" % self)
        return self._error is None

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The result (raises the task's exception); ``corral.TimeoutError`` if it is
        not ready after ``timeout`` seconds."""
        if not self._event.wait(timeout):
            from ._mp import TimeoutError as _TimeoutError

            raise _TimeoutError("the pool job %s is still running" % self.jobs)
        if self._error is not None:
            raise self._error
        return self._value


class PoolIterator:
    """The iterator of ``Pool.imap``: results in input order, as they arrive."""

    def __init__(self, outcomes: Outcomes) -> None:
        self._outcomes = outcomes

    def __iter__(self) -> "PoolIterator":
        return self

    def __next__(self) -> Any:
        outcome = next(self._outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    next = __next__

    def close(self) -> None:
        """Stops listening (the job goes on; cancel it with the Pool)."""
        self._outcomes.close()


class AsyncResult:
    """The result of ``Pool.map_async``: the job runs in corrald meanwhile."""

    def __init__(self, pool: Pool, job: Optional[int], parse_json: bool) -> None:
        self._pool = pool
        self.job = job
        self._json = parse_json

    def ready(self) -> bool:
        """Whether the job has ended."""
        if self.job is None:
            return True
        info = _client.call("pool_status", socket=self._pool._socket, job=self.job)
        return info.get("state") != "running"

    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits until the job has ended, or ``timeout`` seconds have passed."""
        if self.job is None:
            return
        fields: Dict[str, Any] = {"job": self.job}
        if timeout is not None:
            ms = timeout_ms(max(0.0, timeout))
            if ms is not None:
                fields["timeout_ms"] = ms
        try:
            _client.call("pool_wait", socket=self._pool._socket, **fields)
        except Timeout:
            return

    def successful(self) -> bool:
        """Whether every item succeeded (``ValueError`` if the job has not ended)."""
        if not self.ready():
            raise ValueError("the pool job %s has not ended" % self.job)
        if self.job is None:
            return True
        info = _client.call("pool_status", socket=self._pool._socket, job=self.job)
        return info.get("failed", 0) == 0 and info.get("state") == "finished"

    def get(self, timeout: Optional[float] = None) -> List[Any]:
        """The results in input order, once the job has ended (``TimeoutError`` if it
        has not after ``timeout`` seconds); raises the first failed item's error."""
        if self.job is None:
            return []
        self.wait(timeout)
        if not self.ready():
            raise _mp.TimeoutError("pool job %d is still running" % self.job)
        self._pool._finished(self.job)
        results = _client.call("pool_results", socket=self._pool._socket, job=self.job)
        items = results.get("items", [])
        total = results.get("job", {}).get("total", len(items))
        values: List[Any] = []
        for item in items:
            if not item.get("ok"):
                raise PoolItemError(item, self.job)
            values.append(_output(item, self._json))
        if len(values) < total:
            raise CorralError(
                "pool job %d was cancelled after %d of its %d items"
                % (self.job, len(values), total),
                "cancelled",
            )
        return values
