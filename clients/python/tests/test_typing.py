"""The package's type hints: complete on the public API, and correct by mypy --strict.

The mypy check runs with pyproject.toml's [tool.mypy] (strict, python_version = the
oldest Python of requires-python). It is skipped, saying so, when mypy is not installed
(scripts/test installs it). The completeness check needs nothing but the standard
library.
"""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import corral

CLIENT_DIR = Path(__file__).resolve().parents[1]
PYPROJECT = CLIENT_DIR / "pyproject.toml"


def _have_mypy():
    try:
        import mypy  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    if not _have_mypy():
        pytest.skip(
            "mypy is not installed, so the package's type hints are not checked: "
            "pip install 'mypy<2' (scripts/test installs it)"
        )
    cache = tmp_path_factory.mktemp("mypy-cache")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT)]
        + ["--cache-dir", str(cache), "--no-error-summary", "--show-error-codes"],
        cwd=str(CLIENT_DIR),
        capture_output=True,
        text=True,
    )


def _mypy_config():
    text = PYPROJECT.read_text()
    match = re.search(r"^\[tool\.mypy\]\n(.*?)(?=^\[)", text, re.M | re.S)
    assert match, "pyproject.toml has no [tool.mypy] table"
    return match.group(1)


def test_mypy_is_configured_strict_at_the_oldest_supported_python():
    config = _mypy_config()
    assert re.search(r"^strict = true$", config, re.M)
    assert re.search(r'^files = \["corral"\]$', config, re.M)
    requires = re.search(r'^requires-python = ">=(\d+\.\d+)"$', PYPROJECT.read_text(), re.M)
    assert requires, "pyproject.toml has no requires-python"
    target = re.search(r'^python_version = "(\d+\.\d+)"$', config, re.M)
    assert target and target.group(1) == requires.group(1), (
        "[tool.mypy] python_version must be requires-python's oldest Python, %s"
        % requires.group(1)
    )


def test_mypy_strict_finds_no_errors(mypy_run):
    assert mypy_run.returncode == 0, (
        "mypy --strict found errors in clients/python/corral:\n"
        + mypy_run.stdout
        + mypy_run.stderr
    )
    assert "error:" not in mypy_run.stdout


def test_mypy_checks_against_the_oldest_supported_python(mypy_run):
    # mypy 2 no longer checks against Python 3.9: it then falls back to its own oldest
    # and says so, and the hints are not proven to work on requires-python's Python.
    refused = re.search(r"python_version: (Python [\d.]+ is not supported[^\n]*)", mypy_run.stderr)
    if refused:
        pytest.skip(
            "this mypy cannot check against the package's oldest Python (%s): "
            "pip install 'mypy<2'" % refused.group(1)
        )
    assert mypy_run.returncode == 0, mypy_run.stdout + mypy_run.stderr


def _own_callables():
    """Every public function and class of corral.__all__ defined in the package, with
    the public methods (and ``__init__``) each class defines itself."""
    for name in corral.__all__:
        obj = getattr(corral, name)
        if not getattr(obj, "__module__", "").startswith("corral"):
            continue  # multiprocessing's own exceptions, re-exported
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__new__"):
                    continue
                if isinstance(member, property):
                    member = member.fget
                elif isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member):
                    yield "%s.%s" % (name, attr), member


def test_every_public_function_and_method_has_hints():
    missing = []
    checked = 0
    for name, fn in _own_callables():
        checked += 1
        hints = fn.__annotations__
        if "return" not in hints:
            missing.append("%s: no return type" % name)
        for i, param in enumerate(inspect.signature(fn).parameters):
            if i == 0 and param in ("self", "cls"):
                continue
            if param not in hints:
                missing.append("%s: parameter %s has no type" % (name, param))
    assert checked > 100, "found only %d public functions and methods" % checked
    assert not missing, "\n".join(missing)
