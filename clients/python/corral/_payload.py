"""Pickled payloads handed to corrald-started Python children through a private file.

A payload file is one JSON header line (who made it, which interpreter, ``sys.path``)
then the pickle. It is made with mode 0600 in the temporary directory, so only the
caller's uid can read it; corrald never opens it (it only passes the file's path on
the child's command line), and never unpickles anything.
"""

import json
import os
import pickle
import sys
import tempfile
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["dumps", "write", "read", "header", "refuse_interpreter", "PicklingError"]

PicklingError = pickle.PicklingError


def _cloudpickle() -> ModuleType:
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(
            "corral needs cloudpickle to send functions to its processes: "
            "pip install cloudpickle"
        ) from None
    return cloudpickle


def dumps(obj: Any, what: str) -> bytes:
    """cloudpickle's bytes of ``obj`` (functions of ``__main__`` by value). What cannot
    be pickled raises the exception pickle raised (``TypeError``, ``PicklingError``...,
    as multiprocessing would), its message naming ``what`` and the object."""
    cloudpickle = _cloudpickle()
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        message = "cannot pickle %s %r: %s" % (what, obj, e)
        try:
            error = type(e)(message)
        except Exception:
            error = PicklingError(message)
        raise error from e


def header(**extra: Any) -> Dict[str, Any]:
    """What a child checks before unpickling, and the ``sys.path`` it restores."""
    h = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "hexversion": sys.hexversion,
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "sys_path": [p for p in sys.path if isinstance(p, str)],
        "env_keys": sorted(os.environ),
    }
    h.update(extra)
    return h


def write(body: bytes, **extra: Any) -> str:
    """Writes a payload file (0600); returns its path."""
    fd, path = tempfile.mkstemp(prefix="corral-payload-", suffix=".pickle")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(header(**extra)).encode("utf-8") + b"\n")
            f.write(body)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return path


def read(path: str, remove: bool = False) -> Tuple[Dict[str, Any], bytes]:
    """(header, pickle bytes) of a payload file; refuses one not owned by this uid."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid():
            raise ValueError("the payload belongs to uid %d, not to this uid %d" % (st.st_uid, os.getuid()))
        first = f.readline()
        body = f.read()
    if remove:
        try:
            os.unlink(path)
        except OSError:
            pass
    return json.loads(first.decode("utf-8")), body


def refuse_interpreter(h: Dict[str, Any]) -> Optional[str]:
    """Why this interpreter cannot unpickle what the parent sent, or None."""
    if h.get("implementation") != sys.implementation.name or h.get("hexversion") != sys.hexversion:
        return (
            "refusing to run a target pickled by %s %s (%s) in %s %s (%s): the child's "
            "Python must be the parent's (set sys.executable or PATH so both use the same)"
            % (
                h.get("implementation"),
                _version(h.get("hexversion")),
                h.get("executable"),
                sys.implementation.name,
                _version(sys.hexversion),
                sys.executable,
            )
        )
    return None


def _version(hexversion: Any) -> str:
    if not isinstance(hexversion, int):
        return "?"
    return "%d.%d.%d" % ((hexversion >> 24) & 0xFF, (hexversion >> 16) & 0xFF, (hexversion >> 8) & 0xFF)


def python_command(module: str, path: str) -> List[str]:
    """The command line of a child interpreter running ``corral.<module>`` on a payload.

    ``-E``: the child's interpreter settings come from this process (its flags, and
    ``-u`` if this one is unbuffered), not from corrald's environment; the child then
    restores this process's ``sys.path`` and environment from the payload."""
    import subprocess

    interpreter_flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    flags = ["-E"] + [f for f in interpreter_flags if f != "-E"]
    if os.environ.get("PYTHONUNBUFFERED") or getattr(sys.stdout, "write_through", False):
        flags.append("-u")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = "import sys; sys.path.insert(0, %r); from corral.%s import _start; _start()" % (
        here,
        module,
    )
    return [sys.executable] + flags + ["-c", boot, path]


def restore_environment(h: Dict[str, Any]) -> None:
    """In a child: drop the variables corrald added that the parent did not have."""
    keys = h.get("env_keys")
    if keys is None:
        return
    keep = set(keys)
    for key in list(os.environ):
        if key not in keep:
            del os.environ[key]


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The caller's environment for a child, with corral importable (``PYTHONPATH``)."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in parts:
        parts.insert(0, here)
    env["PYTHONPATH"] = os.pathsep.join(parts)
    if extra:
        env.update(extra)
    return env
