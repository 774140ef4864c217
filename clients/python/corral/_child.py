"""The bootstrap of a function-form child: ``python -m corral._child PAYLOAD``.

corrald starts it (a transient task) in the parent's working directory, with the
parent's environment, its own interpreter (``sys.executable``) and the parent's
stdout and stderr. It reads the payload file the parent wrote (then removes it),
checks that this interpreter is the parent's, restores the parent's ``sys.path``,
unpickles the :class:`corral.Process` and calls its ``run()``. The main script is
never executed again. An exception prints its traceback on stderr and exits 1, as
multiprocessing's children do.
"""

import os
import sys
from typing import List, NoReturn


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m corral._child PAYLOAD (started by corral.Process)\n")
        return 2
    from . import _payload

    try:
        header, body = _payload.read(argv[1], remove=True)
    except (OSError, ValueError) as e:
        sys.stderr.write("corral: cannot read the process payload %s: %s\n" % (argv[1], e))
        return 1
    refused = _payload.refuse_interpreter(header)
    if refused:
        sys.stderr.write("corral: %s\n" % refused)
        return 1
    sys.path[:] = header.get("sys_path") or sys.path
    _payload.restore_environment(header)
    from . import _process

    _process._in_child(header)
    try:
        import cloudpickle  # noqa: F401  (the payload may need it to unpickle)
        import pickle

        process = pickle.loads(body)
    except BaseException:
        import traceback

        sys.stderr.write("corral: cannot unpickle the process's target:\n")
        traceback.print_exc()
        return 1
    return _process._run_in_child(process)


def _start() -> NoReturn:
    """Entry point of ``python -c`` (see corral._payload.python_command)."""
    code = main(["corral._child"] + sys.argv[1:])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    sys.exit(code)


if __name__ == "__main__":
    code = main(sys.argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    sys.exit(code)
