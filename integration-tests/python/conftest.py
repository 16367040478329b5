"""Fixtures of the end-to-end tests: a CPython master (this pytest) and twins.

The twin interpreters are virtualenv Pythons with cpy2py installed, named by the
environment variables ``CPY2PY_TEST_CPYTHON`` and ``CPY2PY_TEST_PYPY`` (``cargo xtask
test`` sets them). A missing one skips its tests, unless ``CI=true``: then it fails.
Helpers that are not fixtures live in ``procutil``; functions run in twins live in
``twinhelpers``.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# twinhelpers must be importable here and, through the master's sys.path, in twins
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import procutil  # noqa: E402
import twinhelpers  # noqa: E402
from cpy2py import TwinMaster  # noqa: E402


@pytest.fixture(scope="session", params=procutil.FLAVOURS)
def flavour(request):
    """The kind of twin interpreter: 'cpython' or 'pypy'."""
    return request.param


@pytest.fixture(scope="session")
def twin_exe(flavour):
    """Path of the twin interpreter for this flavour."""
    return procutil.twin_executable(flavour)


@pytest.fixture(scope="module")
def twin(flavour, twin_exe):
    """A started twin of this flavour, shared by the tests of a module."""
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.TWIN_IDS[flavour])
    master.start()
    yield master
    master.stop()


@pytest.fixture
def fresh_twin(flavour, twin_exe):
    """A twin of its own for one test (lifecycle and crash tests), destroyed after."""
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.FRESH_IDS[flavour])
    master.start()
    yield master
    master.destroy()
