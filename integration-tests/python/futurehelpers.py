"""Functions the futures and asyncio tests run in twins: gates a call waits at until
the test opens them, so that a test can hold calls in flight without sleeping.

Imported by name in every interpreter (Python 3.9 on PyPy, no pytest)."""

import os
import threading

_lock = threading.Lock()
_gates = {}
_arrived = set()


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
