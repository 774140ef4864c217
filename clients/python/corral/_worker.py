"""A worker of a function-form Pool: ``python -m corral._worker PAYLOAD``.

corrald runs it as a long-lived worker of a stream-mode pool job. The payload file
holds the pickled ``(initializer, initargs)``; each line on stdin is one chunk of
tasks (base64 of a pickle of the mode, the pickled function and the tasks), answered by one line on stdout: the chunk's
results, or the exception of its first failing task with its formatted traceback.
What the function writes to ``sys.stdout``/``sys.stderr`` is caught and sent along
with its chunk's answer, and the parent writes it to its own (as multiprocessing's
workers share the parent's terminal); writes below Python (to descriptor 1 or 2) go to
the worker's stderr, corrald's log of the job, never into the answers.
"""

import base64
import io
import os
import pickle
import sys
import traceback
from typing import IO, Any, Dict, List, NoReturn, Tuple


class _Capture(io.StringIO):
    """``sys.stdout``/``sys.stderr`` of a worker: kept until the chunk is answered."""

    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        return text


def _answer(out: IO[bytes], value: Tuple[Any, ...], printed: Tuple[str, str]) -> None:
    """Writes one answer line: ``value`` (``("ok", results)`` or ``("err", exc, tb)``)
    followed by ``printed``, what the chunk's tasks wrote to (stdout, stderr)."""
    try:
        data = pickle.dumps(value + (printed,), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        if value[0] == "ok":
            value = ("err", TypeError("cannot pickle a result: %s" % e), traceback.format_exc())
        else:
            value = ("err", None, "%s: %s\n%s" % (type(value[1]).__name__, value[1], value[2]))
        data = pickle.dumps(value + (printed,), protocol=pickle.HIGHEST_PROTOCOL)
    out.write(base64.b64encode(data) + b"\n")
    out.flush()


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m corral._worker PAYLOAD (started by corral.Pool)\n")
        return 2
    from . import _payload

    header, body = _payload.read(argv[1])
    refused = _payload.refuse_interpreter(header)
    if refused:
        sys.stderr.write("corral: %s\n" % refused)
        return 1
    sys.path[:] = header.get("sys_path") or sys.path
    _payload.restore_environment(header)
    # The answers go to the original stdout; what Python code prints is caught and sent
    # with them; writes to descriptor 1 go to stderr from now on.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    captured_out, captured_err = _Capture(), _Capture()
    sys.stdout, sys.stderr = captured_out, captured_err
    try:
        import cloudpickle  # noqa: F401

        initializer, initargs = pickle.loads(body)
        # The workers outlive one map(): each chunk names its function (pickled once per
        # call), unpickled here once per distinct function.
        functions: Dict[bytes, Any] = {}
        if initializer is not None:
            initializer(*initargs)
        stdin = sys.stdin.buffer
        for line in stdin:
            line = line.strip()
            if not line:
                continue
            try:
                mode, fbytes, tasks = pickle.loads(base64.b64decode(line))
                func = functions.get(fbytes)
                if func is None:
                    if len(functions) > 64:
                        functions.clear()
                    func = functions[fbytes] = pickle.loads(fbytes)
                results: List[Any] = []
                for task in tasks:
                    if mode == "star":
                        results.append(func(*task))
                    elif mode == "apply":
                        args, kwds = task
                        results.append(func(*args, **kwds))
                    else:
                        results.append(func(task))
                answer: Tuple[Any, ...] = ("ok", results)
            except Exception as e:
                answer = ("err", e, traceback.format_exc())
            _answer(out, answer, (captured_out.take(), captured_err.take()))
    except BaseException:
        # The worker dies (its initializer failed, or a task raised SystemExit): what
        # was caught goes to its real stderr, corrald's log, with the traceback.
        real = sys.__stderr__
        sys.stdout, sys.stderr = sys.__stdout__, real
        for text in (captured_out.take(), captured_err.take()):
            if text and real is not None:
                real.write(text)
        raise
    return 0


def _start() -> NoReturn:
    """Entry point of ``python -c`` (see corral._payload.python_command)."""
    sys.exit(main(["corral._worker"] + sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
