"""The package as built: one version string, the SPDX license, py.typed shipped.

Builds a wheel with pip (its own isolated build environment, so setuptools is whatever
pyproject.toml asks for) and reads what it holds.
"""

import email
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import corral

CLIENT_DIR = Path(__file__).resolve().parents[1]
REPO = CLIENT_DIR.parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
        + ["--wheel-dir", str(out), str(CLIENT_DIR)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("corral-*.whl")
    return zipfile.ZipFile(path)


def metadata(wheel):
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


def test_the_version_is_written_once():
    # pyproject.toml takes it from corral.__version__ and writes none of its own.
    pyproject = (CLIENT_DIR / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M)
    assert re.fullmatch(r"\d+\.\d+\.\d+", corral.__version__)
    # The same version as the rest of the project (Cargo.toml's workspace.package).
    cargo = (REPO / "Cargo.toml").read_text()
    assert re.search(r'^version = "%s"$' % re.escape(corral.__version__), cargo, re.M)


def test_the_wheel_has_the_version_license_and_py_typed(wheel):
    meta = metadata(wheel)
    assert meta["Version"] == corral.__version__
    assert meta["License-Expression"] == "MIT OR Apache-2.0"
    assert meta["Requires-Python"] == ">=3.9"
    assert "corral/py.typed" in wheel.namelist()
    assert "corral/__init__.py" in wheel.namelist()


def test_the_protocol_functions_have_type_hints():
    import inspect

    for fn in (
        corral.socket_path,
        corral.call,
        corral.Connection.request,
        corral.Connection.stream,
        corral.CorralError.__init__,
        corral.PoolItemError.__init__,
    ):
        hints = fn.__annotations__
        assert "return" in hints, fn
        for name in inspect.signature(fn).parameters:
            assert name == "self" or name in hints, (fn, name)
