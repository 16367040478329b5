"""Functions the fault tests (``test_faults.py``) run in twinterpreters.

Imported by name in every interpreter of a test run (the master's ``sys.path`` reaches
the twins), so this module must import without pytest and run on Python 3.9 (PyPy).
"""

import ctypes
import os
import subprocess
import socket
import threading
import time

_busy_lock = threading.Lock()
_busy = [0]


def _enter():
    with _busy_lock:
        _busy[0] += 1


def _leave():
    with _busy_lock:
        _busy[0] -= 1


def busy():
    """How many calls of this module are sleeping or spinning right now."""
    with _busy_lock:
        return _busy[0]


def nap(seconds):
    """Sleep ``seconds``, counted by :func:`busy` meanwhile."""
    _enter()
    try:
        time.sleep(seconds)
    finally:
        _leave()
    return seconds


def exit_hard(code, delay=0.0):
    """End this process at once with status ``code`` (no cleanup, no reply)."""
    if delay:
        time.sleep(delay)
    os._exit(code)


def segfault(delay=0.0):
    """Crash this process with SIGSEGV (a real invalid memory access)."""
    if delay:
        time.sleep(delay)
    ctypes.string_at(0)  # CPython: SIGSEGV; PyPy returns None for NULL instead
    ctypes.memset(0, 0, 1)  # PyPy: SIGSEGV
    raise AssertionError("still alive after touching address 0")


def spin_forever():
    """An endless loop that never releases control voluntarily."""
    _enter()
    while True:
        pass


def _generator():
    yield 1


def make_generator():
    return _generator()


def make_socket():
    return socket.socket()


class CarriesError(Exception):
    """An exception whose argument is whatever the caller made it carry."""


def raise_with_generator():
    raise CarriesError(_generator())


def raise_with_socket():
    raise CarriesError(socket.socket())


def self_referencing_list():
    items = [1, "two"]
    items.append(items)
    return items


def self_referencing_dict():
    mapping = {"name": "loop"}
    mapping["self"] = mapping
    return mapping


def check_cycle(value):
    """Whether a list/dict from the master arrived with its cycle intact."""
    if isinstance(value, list):
        return value[-1] is value
    return value["self"] is value


def big_bytes(size):
    return b"\x00" * size


def length(data):
    return len(data)


def echo(value):
    return value


def getpid():
    return os.getpid()


def start_program(seconds):
    """Runs ``sleep seconds`` as a program of this twin's, inheriting every fd
    it may (``close_fds=False``); its pid."""
    return subprocess.Popen(["sleep", str(seconds)], close_fds=False).pid
