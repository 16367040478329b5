"""Functions and classes the ssh tests run in twins started through a loopback sshd.

Imported by name in every interpreter (the master's ``sys.path`` reaches the twins, on
this host); must import without pytest and run on Python 3.9 (PyPy).
"""

import os
import sys
import threading

from cpy2py import TwinObject, kernel_state, twinfunction

#: flavour -> twin id of the module-scoped ssh twins
SSH_IDS = {"cpython": "ssh-cpython", "pypy": "ssh-pypy"}


def where():
    """``(twin id, pid, parent pid, implementation)`` of the interpreter running this."""
    return kernel_state.TWIN_ID, os.getpid(), os.getppid(), sys.implementation.name


def print_to_stdout(text):
    """A stray print in a twin: must not corrupt the stream (stdout is the stream)."""
    print(text)
    sys.stdout.flush()
    return len(text)


def read_stdin():
    """What a twin's stdin holds for user code: nothing (the stream is not there)."""
    return sys.stdin.read()


def _bounce(twin_id, depth, trail):
    trail = trail + [kernel_state.TWIN_ID]
    if depth <= 1:
        return trail
    if kernel_state.is_master():
        return BOUNCERS[twin_id](twin_id, depth - 1, trail)
    return bounce_master(twin_id, depth - 1, trail)


@twinfunction(kernel_state.MASTER_ID)
def bounce_master(twin_id, depth, trail):
    """One level of a master -> ssh twin -> master ... chain."""
    return _bounce(twin_id, depth, trail)


@twinfunction(SSH_IDS["cpython"])
def bounce_cpython(twin_id, depth, trail):
    return _bounce(twin_id, depth, trail)


@twinfunction(SSH_IDS["pypy"])
def bounce_pypy(twin_id, depth, trail):
    return _bounce(twin_id, depth, trail)


BOUNCERS = {SSH_IDS["cpython"]: bounce_cpython, SSH_IDS["pypy"]: bounce_pypy}


class _Counter(TwinObject):
    def __init__(self, start=0):
        self.count = start
        self.lock = threading.Lock()

    def add(self, n=1):
        with self.lock:
            self.count += n
            return self.count

    def where(self):
        return where()

    def __len__(self):
        return self.count


class CounterCPython(_Counter):
    """Instances live in the CPython ssh twin."""

    __twin_id__ = SSH_IDS["cpython"]


class CounterPyPy(_Counter):
    """Instances live in the PyPy ssh twin."""

    __twin_id__ = SSH_IDS["pypy"]


COUNTERS = {"cpython": CounterCPython, "pypy": CounterPyPy}
