"""Functions and classes the integration tests run in twinterpreters.

Imported by name in every interpreter of a test run (the master's ``sys.path`` reaches
the twins), so this module must import without pytest and run on Python 3.9 (PyPy).
"""

import collections
import enum
import hashlib
import os
import platform
import sys
import threading
import time

from cpy2py import kernel_state, twinfunction

#: flavour -> twin id of the module-scoped twins (the ``twin`` fixture)
TWIN_IDS = {"cpython": "twin-cpython", "pypy": "twin-pypy"}
#: flavour -> twin id of the function-scoped twins (the ``fresh_twin`` fixture)
FRESH_IDS = {"cpython": "fresh-cpython", "pypy": "fresh-pypy"}
#: flavour -> twin id of twins started on demand by a twinfunction
AUTO_IDS = {"cpython": "auto-cpython", "pypy": "auto-pypy"}
#: flavour -> platform.python_implementation()
IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy"}


# -- plain values ------------------------------------------------------------------


def echo(value):
    return value


def type_tree(value):
    """The types in ``value``, recursively, as builtins only (comparable anywhere)."""
    name = "%s.%s" % (type(value).__module__, type(value).__qualname__)
    if isinstance(value, (list, tuple)):
        return (name, tuple(type_tree(item) for item in value))
    if isinstance(value, (set, frozenset)):
        return (name, tuple(sorted((type_tree(item) for item in value), key=repr)))
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: repr(item[0]))
        return (name, tuple((type_tree(k), type_tree(v)) for k, v in items))
    return name


def echo_with_types(value):
    return value, type_tree(value)


def digest(data):
    return len(data), hashlib.sha256(data).hexdigest()


def make_bytes(size):
    return bytes(bytearray(i % 251 for i in range(size)))


def signature_probe(a, b=2, *args, c, d=4, **kwargs):
    return {"a": a, "b": b, "args": args, "c": c, "d": d, "kwargs": kwargs}


def add(a, b):
    return a + b


def append_and_return(items, value):
    items.append(value)
    return items


def tagged(thread_no, call_no, payload):
    return (thread_no, call_no, payload, kernel_state.TWIN_ID)


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


Point = collections.namedtuple("Point", "x y")


class Tag(str):
    """A str subclass."""


class Items(list):
    """A list subclass."""


class Box(object):
    """A plain class: travels by pickle."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value

    def __eq__(self, other):
        return type(other) is type(self) and other.value == self.value

    def __repr__(self):
        return "Box(%r)" % (self.value,)


def box_value(box):
    return box.value


def increment_box(box):
    box.value += 1
    return box


def qualname_of(obj):
    return "%s.%s" % (obj.__module__, obj.__qualname__)


# -- where am I --------------------------------------------------------------------


def where():
    return {
        "twin_id": kernel_state.TWIN_ID,
        "master_id": kernel_state.MASTER_ID,
        "is_master": kernel_state.is_master(),
        "is_twinterpreter": kernel_state.is_twinterpreter(),
        "implementation": platform.python_implementation(),
        "pid": os.getpid(),
        "thread": threading.get_ident(),
    }


def kernel_info(twin_id):
    return {
        "TWIN_ID": kernel_state.TWIN_ID,
        "MASTER_ID": kernel_state.MASTER_ID,
        "is_master": kernel_state.is_master(),
        "is_twinterpreter": kernel_state.is_twinterpreter(),
        "is_twinterpreter(twin_id)": kernel_state.is_twinterpreter(twin_id),
        "is_twinterpreter(MASTER_ID)": kernel_state.is_twinterpreter(kernel_state.MASTER_ID),
    }


def kernel_env_seen():
    """The kernel's variables as this process and a program it starts see them."""
    import subprocess

    from cpy2py import _native

    names = list(_native.TWIN_ENV) + ["CPY2PY_TWIN_CONFIG"]
    script = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"
    child = subprocess.run(
        [sys.executable, "-c", script] + names, capture_output=True, text=True, timeout=60, check=True
    )
    return {"own": {n: os.environ.get(n) for n in names}, "child": child.stdout.strip()}


@twinfunction(kernel_state.MASTER_ID)
def where_master():
    return where()


@twinfunction(TWIN_IDS["cpython"])
def where_cpython():
    return where()


@twinfunction(TWIN_IDS["pypy"])
def where_pypy():
    return where()


WHERE = {"cpython": where_cpython, "pypy": where_pypy}


@twinfunction(AUTO_IDS["cpython"])
def where_auto_cpython():
    return where()


@twinfunction(AUTO_IDS["pypy"])
def where_auto_pypy():
    return where()


WHERE_AUTO = {"cpython": where_auto_cpython, "pypy": where_auto_pypy}


def call_where(flavour):
    """Run here; calls the twinfunction pinned to the ``flavour`` twin."""
    return where(), WHERE[flavour]()


@twinfunction(TWIN_IDS["cpython"])
def echo_cpython(value):
    return value


@twinfunction(TWIN_IDS["pypy"])
def echo_pypy(value):
    return value


ECHO_IN = {"cpython": echo_cpython, "pypy": echo_pypy}


def echo_via(flavour, value):
    """Run in a twin; echoes ``value`` through the ``flavour`` twin (forwarded by the master)."""
    return ECHO_IN[flavour](value)


def call_where_master():
    """Run in a twin; calls the twinfunction pinned to the master."""
    return where(), where_master()


# -- callback chains ---------------------------------------------------------------


def _bounce(flavour, depth, trail):
    trail = trail + [(kernel_state.TWIN_ID, os.getpid(), threading.get_ident())]
    if depth <= 1:
        return trail
    if kernel_state.is_master():
        return BOUNCERS[flavour](flavour, depth - 1, trail)
    return bounce_master(flavour, depth - 1, trail)


@twinfunction(kernel_state.MASTER_ID)
def bounce_master(flavour, depth, trail):
    """One level of a master -> twin -> master ... chain of ``depth`` levels."""
    return _bounce(flavour, depth, trail)


@twinfunction(TWIN_IDS["cpython"])
def bounce_cpython(flavour, depth, trail):
    return _bounce(flavour, depth, trail)


@twinfunction(TWIN_IDS["pypy"])
def bounce_pypy(flavour, depth, trail):
    return _bounce(flavour, depth, trail)


BOUNCERS = {"cpython": bounce_cpython, "pypy": bounce_pypy}


# -- exceptions --------------------------------------------------------------------


def raise_value_error(message):
    raise ValueError(message)


class CustomError(Exception):
    """Picklable, with an attribute."""

    def __init__(self, message, code=0):
        super(CustomError, self).__init__(message)
        self.code = code


def raise_custom_error(message, code):
    raise CustomError(message, code=code)


def raise_chained(message):
    try:
        raise KeyError("inner " + message)
    except KeyError as inner:
        raise RuntimeError("outer " + message) from inner


class BadInitError(Exception):
    """Pickles, but does not unpickle: ``args`` do not fit ``__init__``."""

    def __init__(self, a, b):
        super(BadInitError, self).__init__("%s-%s" % (a, b))


def raise_bad_init(a, b):
    raise BadInitError(a, b)


class LockedError(Exception):
    """Does not pickle: holds a lock."""

    def __init__(self, message):
        super(LockedError, self).__init__(message)
        self.lock = threading.Lock()


def raise_locked(message):
    raise LockedError(message)


def make_lock():
    return threading.Lock()


def exit_now(code):
    sys.exit(code)


# -- slow calls --------------------------------------------------------------------

_sleepers_lock = threading.Lock()
_sleepers = [0]


def sleep_in_twin(seconds):
    """Sleep, counted by :func:`sleepers` while sleeping."""
    with _sleepers_lock:
        _sleepers[0] += 1
    try:
        time.sleep(seconds)
    finally:
        with _sleepers_lock:
            _sleepers[0] -= 1
    return seconds


def sleepers():
    with _sleepers_lock:
        return _sleepers[0]


def getpid():
    return os.getpid()


def sys_path():
    return list(sys.path)
