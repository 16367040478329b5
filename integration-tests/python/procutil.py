"""Helpers of the end-to-end tests that are not fixtures: interpreters, processes,
file descriptors, waiting for conditions. Master side only (imports pytest)."""

import os
import subprocess
import sys
import time

import pytest

FLAVOURS = ("cpython", "pypy")
EXECUTABLE_ENV = {"cpython": "CPY2PY_TEST_CPYTHON", "pypy": "CPY2PY_TEST_PYPY"}

#: bound for any subprocess a test runs (seconds)
SUBPROCESS_TIMEOUT = 120


def in_ci():
    return os.environ.get("CI") == "true"


def twin_executable(flavour):
    """The interpreter for ``flavour`` twins, or skip (fail in CI) if there is none."""
    variable = EXECUTABLE_ENV[flavour]
    path = os.environ.get(variable)
    if not path:
        message = "%s is not set: no %s interpreter to run twins with" % (variable, flavour)
        if in_ci():
            pytest.fail(message + " (CI=true: this is an error, not a skip)")
        pytest.skip(message)
    if not os.path.exists(path):
        pytest.fail("%s=%r does not exist" % (variable, path))
    return path


def wait_until(condition, timeout, interval=0.005):
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; its last
    value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def run_python(args, timeout=SUBPROCESS_TIMEOUT, **kwargs):
    """Run this interpreter (as a master) with ``args``; the completed process."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([sys.executable] + list(args), timeout=timeout, **kwargs)


def child_pids():
    """Process ids whose parent is this process (zombies included)."""
    me = os.getpid()
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == me:
            children.add(int(entry))
    return children


def open_fds():
    """``fd -> target`` of this process's open file descriptors."""
    fds = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            fds[int(entry)] = os.readlink("/proc/self/fd/%s" % entry)
        except OSError:  # the directory listing's own fd, closed meanwhile
            continue
    return fds
