"""Functions the futures and asyncio tests run in twins: gates a call waits at until
the test opens them, so that a test can hold calls in flight without sleeping.

Imported by name in every interpreter (Python 3.9 on PyPy, no pytest)."""

import os
import threading
import time

import cpy2py
from cpy2py import kernel_state, twinfunction

_lock = threading.Lock()
_gates = {}
_arrived = set()
_outcomes = {}
_running_slow = [0, 0]  # now, most at once


def _gate(key):
    with _lock:
        return _gates.setdefault(key, threading.Event())


def wait_at(key, value=None, timeout=30.0):
    """Records arrival at gate ``key``, waits until it opens; returns ``(value, pid)``."""
    gate = _gate(key)
    with _lock:
        _arrived.add(key)
    if not gate.wait(timeout):
        raise TimeoutError("gate %r was not opened within %s s" % (key, timeout))
    return value, os.getpid()


def arrived(key):
    with _lock:
        return key in _arrived


def open_gate(key):
    _gate(key).set()
    return key


def square(x):
    return x * x


def fail(message):
    raise KeyError(message)


def threads():
    return threading.active_count()


def _record(key, outcome):
    with _lock:
        _outcomes[key] = outcome


def outcome(key):
    """How the call recorded under ``key`` ended, or None if it has not."""
    with _lock:
        return _outcomes.get(key)


def spin(key):
    """Runs bytecode until interrupted (no sleep, no C call that blocks); records the
    exception's type name and ``time.monotonic()`` when it came."""
    with _lock:
        _arrived.add(key)
    n = 0
    try:
        while True:
            try:
                n += 1
            except Exception:  # a cancel is no Exception: this must not swallow it
                _record(key, ("swallowed", time.monotonic()))
    except BaseException as error:
        _record(key, (type(error).__name__, time.monotonic()))
        raise


@twinfunction(kernel_state.MASTER_ID)
def master_wait_at(key):
    return wait_at(key)


def call_master_past_deadline(key, gate):
    """Calls back into the master, which waits at ``gate`` (opened only after this
    has recorded); the call inherits this call's deadline. Records the time left
    then and how the nested call ended."""
    left = cpy2py.time_left()
    try:
        master_wait_at(gate)
        ended = "returned"
    except BaseException as error:
        ended = type(error).__name__
    _record(key, (left, ended, cpy2py.time_left()))
    return ended


def call_master_and_record(key, gate):
    """Waits in a call back into the master (at ``gate``); records how it ended."""
    try:
        master_wait_at(gate)
        _record(key, "returned")
    except BaseException as error:
        _record(key, type(error).__name__)
        raise


def slow(seconds):
    """Sleeps (blocked in C, the GIL released); notes how many run at once."""
    with _lock:
        _running_slow[0] += 1
        _running_slow[1] = max(_running_slow[1], _running_slow[0])
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _running_slow[0] -= 1


def most_slow_at_once():
    """The most :func:`slow` calls that ran at once (each on a thread of its own)."""
    with _lock:
        return _running_slow[1]
