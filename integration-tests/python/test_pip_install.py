"""``pip install`` of the repository into fresh virtualenvs, the way a user does it.

A fresh CPython and a fresh PyPy virtualenv each get a plain ``pip install <repo
root>`` (with build isolation: pip fetches maturin from PyPI), then the CPython one
starts a twin in the PyPy one and asks it which implementation it is.

The cargo build stays warm between runs: the venvs are recreated on every run but at
a fixed place, and each flavour builds in its own ``CARGO_TARGET_DIR``. maturin hands
the interpreter's path to PyO3 as ``PYO3_PYTHON``, and a changed value rebuilds PyO3
and everything above it; a temporary directory, or sharing ``target/maturin-<flavour>``
with ``cargo xtask build`` (whose interpreter is another venv), would rebuild on every
run, here and in the next ``cargo xtask build``.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
#: The fresh venvs live here, recreated on every run (see above for why not in /tmp).
WORKDIR = REPO_ROOT / "target" / "pip-install-test"
#: Wall-clock budget of the whole test, a little under its timeout marker.
BUDGET_S = 870


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    platform.python_implementation() != "CPython",
    reason="installs into fresh venvs whatever the master is; runs once, under CPython",
)
def test_pip_install_into_fresh_venvs_and_run_a_pypy_twin() -> None:
    cpython = shutil.which("python3")
    assert cpython, "python3 is not on PATH"
    pypy = shutil.which("pypy3")
    if pypy is None:
        reason = "pypy3 is not on PATH (CPY2PY_TEST_PYPY={!r})".format(
            os.environ.get("CPY2PY_TEST_PYPY")
        )
        if IN_CI:
            pytest.fail(f"{reason}; with CI=true PyPy may not be skipped")
        pytest.skip(reason)

    deadline = time.monotonic() + BUDGET_S
    venvs = {}
    for flavour, base in (("cpython", cpython), ("pypy", pypy)):
        venv = WORKDIR / f"venv-{flavour}"
        shutil.rmtree(venv, ignore_errors=True)
        _run([base, "-m", "venv", str(venv)], deadline)
        python = venv / "bin" / "python"
        target_dir = REPO_ROOT / "target" / f"maturin-pip-{flavour}"
        env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
        _run([str(python), "-m", "pip", "install", str(REPO_ROOT)], deadline, env=env)
        venvs[flavour] = python

    script = textwrap.dedent(
        f"""
        import platform
        from cpy2py import TwinMaster

        twin = TwinMaster(executable={str(venvs["pypy"])!r}, twinterpreter_id="pypy")
        twin.start()
        print(twin.execute(platform.python_implementation))
        twin.stop()
        """
    )
    output = _run([str(venvs["cpython"]), "-c", script], deadline, cwd=WORKDIR)
    assert output.strip().splitlines()[-1:] == ["PyPy"], output


def _run(command: list[str], deadline: float, **kwargs) -> str:
    """Runs ``command`` to completion within the deadline; returns its stdout.

    On failure or timeout, the test fails with the command's output. A command that
    runs out of time is killed with its whole process group (pip, maturin, cargo).
    """
    kwargs.setdefault("cwd", REPO_ROOT)
    env = dict(kwargs.pop("env", os.environ))
    env.pop("PYTHONPATH", None)  # only what pip installed may be imported
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        pytest.fail(f"no time left for {command}")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
        **kwargs,
    )
    try:
        stdout, stderr = process.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"timed out: {command}\n{_tail(stdout)}\n{_tail(stderr)}")
    if process.returncode != 0:
        pytest.fail(
            f"exit status {process.returncode}: {command}\n"
            f"--- stdout\n{_tail(stdout)}\n--- stderr\n{_tail(stderr)}"
        )
    return stdout


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])
