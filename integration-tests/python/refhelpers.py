"""Functions the by-reference tests run in twins (and the master): objects that
cannot travel by value, made where they live, and probes of their native state."""

import gc
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import weakref

import cpy2py
from cpy2py import _native
from twinhelpers import TWIN_IDS

#: What became of natives made here, by key: "open", "finally", "freed".
EVENTS = {}
_WEAK = {}


class Items(object):
    """A plain class whose method returns an iterator over its dict's keys."""

    def __init__(self):
        self.items = {"a": 1, "b": 2, "c": 3}

    def keys_iter(self):
        return iter(self.items)


def dict_key_iterator():
    return Items().keys_iter()


def counting(n, key=None, fail_at=None):
    """A generator of 0..n-1 that records how it ended under ``key``."""
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError("failed at item %d" % i)
            yield i
    finally:
        if key is not None:
            EVENTS[key] = "finally"


def echo_gen():
    """A generator that yields what it is sent, and what it is thrown."""
    received = yield "ready"
    while True:
        try:
            received = yield "got %r" % (received,)
        except KeyError as error:
            received = yield "caught %r" % (error.args[0],)


def make_generator(n, key):
    return counting(n, key)


PRODUCED = {}


def producing(n, key):
    """A generator of 0..n-1 that counts the items it produced under ``key``."""
    PRODUCED[key] = 0
    for i in range(n):
        PRODUCED[key] = i + 1
        yield i


def make_producing(n, key):
    return producing(n, key)


def produced(key):
    return PRODUCED.get(key)


def make_failing(n, fail_at):
    return counting(n, fail_at=fail_at)


def event(key):
    gc.collect()
    return EVENTS.get(key)


def make_lock():
    return threading.Lock()


def make_file(text):
    handle, path = tempfile.mkstemp(prefix="cpy2py-ref-")
    os.write(handle, text.encode())
    os.close(handle)
    return open(path)


def make_socket():
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def make_connection():
    """A C-extension handle: an sqlite3 connection (never pickles)."""
    return sqlite3.connect(":memory:")


def make_tracked(key):
    """A by-reference list, watched by a weak reference here."""
    native = Tracked([1, 2, 3])
    _WEAK[key] = weakref.ref(native)
    return cpy2py.by_ref(native)


class Tracked(list):
    """A list subclass that can be weakly referenced."""


def alive(key):
    gc.collect()
    ref = _WEAK.get(key)
    return ref is not None and ref() is not None


def same(a, b):
    return a is b


def exported():
    gc.collect()
    return _native.exported_count()


@cpy2py.always_by_ref
class Account(object):
    """Instances always travel by reference."""

    def __init__(self, balance):
        self.balance = balance

    def deposit(self, amount):
        self.balance += amount
        return self.balance

    def __len__(self):
        return self.balance

    def __eq__(self, other):
        return isinstance(other, Account) and other.balance == self.balance

    __hash__ = None


def make_account(balance):
    return Account(balance)


def balance_of(account):
    return account.balance


def holds_numpy():
    return "numpy" in sys.modules


def make_array(n):
    import numpy

    return numpy.arange(n)


def array_facts(value):
    """What an array that arrived here is: its sum, shape, dtype and writability."""
    return int(value.sum()), tuple(value.shape), str(value.dtype), bool(value.flags.writeable)


def is_array(value):
    import numpy

    return isinstance(value, numpy.ndarray)


def type_name(value):
    return type(value).__module__ + "." + type(value).__qualname__


def call(func, *args):
    return func(*args)


def call_method(obj, name, *args):
    return getattr(obj, name)(*args)


def echo_value(value):
    return value


class _ShelfBehaviour(object):
    """A TwinObject whose method is a generator (:data:`SHELVES`)."""

    def __init__(self, items):
        self.items = list(items)

    def walk(self, key=None):
        try:
            for item in self.items:
                yield item
        finally:
            if key is not None:
                EVENTS[key] = "finally"


class ShelfCPython(_ShelfBehaviour, cpy2py.TwinObject):
    __twin_id__ = TWIN_IDS["cpython"]


class ShelfPyPy(_ShelfBehaviour, cpy2py.TwinObject):
    __twin_id__ = TWIN_IDS["pypy"]


#: flavour -> the shelf class living in that flavour's module-scoped twin
SHELVES = {"cpython": ShelfCPython, "pypy": ShelfPyPy}


class Sealed(object):
    """An object whose pickling raises: it can only go by reference."""

    def __init__(self, secret):
        self.secret = secret

    def __reduce__(self):
        raise RuntimeError("Sealed objects are not copied")

    def reveal(self):
        return self.secret


def make_sealed(secret):
    return Sealed(secret)
