"""TwinObject classes and helper functions of the object tests (``test_objects``).

Imported by name in every interpreter of a test run, like ``twinhelpers``: no pytest,
Python 3.9 (PyPy). Each behaviour is written once, as a plain mixin or a TwinObject
class native to the master; :func:`_pinned` derives one TwinObject class per twin
id from it (``CounterCPython`` lives in ``twin-cpython``, ``CounterPyPy`` in
``twin-pypy``), found by flavour in tables such as :data:`COUNTERS`. The derived
classes are module globals, so they travel by reference like any class.
"""

import gc
import os
import weakref

from cpy2py import TwinObject, _native, _runtime, kernel_state, localmethod
from twinhelpers import AUTO_IDS, FRESH_IDS, TWIN_IDS, Box

_SUFFIXES = {"cpython": "CPython", "pypy": "PyPy"}


def _pinned(name, bases, twin_ids, namespace=None):
    """``{flavour: class}``: for each flavour, the TwinObject class ``name + suffix``
    deriving from ``bases`` and living in ``twin_ids[flavour]``, bound as a global of
    this module (so that it is reachable by name everywhere)."""
    if not any(issubclass(base, TwinObject) for base in bases):
        bases = tuple(bases) + (TwinObject,)
    classes = {}
    for flavour, twin_id in twin_ids.items():
        qualname = name + _SUFFIXES[flavour]
        body = dict(namespace or {})
        body.update({"__twin_id__": twin_id, "__module__": __name__, "__qualname__": qualname})
        cls = type(TwinObject)(qualname, tuple(bases), body)
        globals()[qualname] = cls
        classes[flavour] = cls
    return classes


def where():
    """``(twin id, pid)`` of the interpreter running this."""
    return (kernel_state.TWIN_ID, os.getpid())


# -- the Counter ------------------------------------------------------------


class Scaled(object):
    """A data descriptor: attribute ``name`` times ``factor``; records where it ran."""

    def __init__(self, name, factor):
        self.name = name
        self.factor = factor

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        obj.descriptor_runs = getattr(obj, "descriptor_runs", []) + [kernel_state.TWIN_ID]
        return getattr(obj, self.name) * self.factor

    def __set__(self, obj, value):
        setattr(obj, self.name, value // self.factor)


class CounterBehaviour(object):
    """What the issue's ``Counter`` does."""

    unit = "items"
    tripled = Scaled("count", 3)

    def __init__(self, start=0):
        self.count = start

    def add(self, n=1):
        self.count += n
        return self.count

    def ran_in(self):
        return where()

    @classmethod
    def zero(cls):
        return cls(0)

    @classmethod
    def made_where(cls):
        return (cls.__name__, kernel_state.TWIN_ID)

    @staticmethod
    def describe():
        return ("counts things", kernel_state.TWIN_ID)

    @property
    def doubled(self):
        return 2 * self.count

    @doubled.setter
    def doubled(self, value):
        self.count = value // 2

    @doubled.deleter
    def doubled(self):
        self.count = 0

    def __len__(self):
        return self.count

    def __lt__(self, other):
        return self.count < other.count

    @localmethod
    def where(self):
        return kernel_state.TWIN_ID

    @localmethod
    def local_add(self, n):
        """Runs where it is called; ``self.add`` still reaches the native object."""
        return (kernel_state.TWIN_ID, self.add(n))

    @localmethod
    @classmethod
    def local_made_where(cls):
        return (cls.__name__, kernel_state.TWIN_ID)


COUNTERS = _pinned("Counter", (CounterBehaviour,), TWIN_IDS)
AUTO_COUNTERS = _pinned("AutoCounter", (CounterBehaviour,), AUTO_IDS)


class MasterCounter(CounterBehaviour, TwinObject):
    """A Counter native to the master (no ``__twin_id__``)."""


# -- every special method -----------------------------------------------------------


def _value(other):
    return other.value if isinstance(other, MagicBehaviour) else other


class MagicBehaviour(object):
    """Defines the special methods a proxy forwards; ``value`` is a number, ``items``
    a list, ``log`` records the context manager's calls."""

    def __init__(self, value=0, items=()):
        self.value = value
        self.items = list(items)
        self.log = []
        self.suppress = False

    def _new(self, value):
        return type(self)(value, self.items)

    def __repr__(self):
        return "Magic(%r)" % (self.value,)

    def __str__(self):
        return "magic %s" % (self.value,)

    def __format__(self, spec):
        return "<" + format(self.value, spec) + ">"

    def __eq__(self, other):
        return self.value == _value(other)

    def __ne__(self, other):
        return self.value != _value(other)

    def __lt__(self, other):
        return self.value < _value(other)

    def __le__(self, other):
        return self.value <= _value(other)

    def __gt__(self, other):
        return self.value > _value(other)

    def __ge__(self, other):
        return self.value >= _value(other)

    def __hash__(self):
        return hash(self.value)

    def __bool__(self):
        return bool(self.value)

    def __add__(self, other):
        return self._new(self.value + _value(other))

    def __radd__(self, other):
        return self._new(_value(other) + self.value)

    def __iadd__(self, other):
        self.value += _value(other)
        return self

    def __sub__(self, other):
        return self._new(self.value - _value(other))

    def __rsub__(self, other):
        return self._new(_value(other) - self.value)

    def __isub__(self, other):
        self.value -= _value(other)
        return self

    def __mul__(self, other):
        return self._new(self.value * _value(other))

    def __rmul__(self, other):
        return self._new(_value(other) * self.value)

    def __imul__(self, other):
        self.value *= _value(other)
        return self

    def __truediv__(self, other):
        return self._new(self.value / _value(other))

    def __floordiv__(self, other):
        return self._new(self.value // _value(other))

    def __mod__(self, other):
        return self._new(self.value % _value(other))

    def __pow__(self, other):
        return self._new(self.value ** _value(other))

    def __rpow__(self, other):
        return self._new(_value(other) ** self.value)

    def __and__(self, other):
        return self._new(self.value & _value(other))

    def __or__(self, other):
        return self._new(self.value | _value(other))

    def __xor__(self, other):
        return self._new(self.value ^ _value(other))

    def __lshift__(self, other):
        return self._new(self.value << _value(other))

    def __rshift__(self, other):
        return self._new(self.value >> _value(other))

    def __neg__(self):
        return self._new(-self.value)

    def __pos__(self):
        return self._new(+self.value)

    def __abs__(self):
        return self._new(abs(self.value))

    def __invert__(self):
        return self._new(~self.value)

    def __int__(self):
        return int(self.value)

    def __float__(self):
        return float(self.value)

    def __index__(self):
        return int(self.value)

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __reversed__(self):
        return reversed(self.items)

    def __contains__(self, item):
        return item in self.items

    def __getitem__(self, index):
        return self.items[index]

    def __setitem__(self, index, value):
        self.items[index] = value

    def __delitem__(self, index):
        del self.items[index]

    def __call__(self, *args, **kwargs):
        return ("called", args, kwargs, kernel_state.TWIN_ID)

    def __enter__(self):
        self.log.append(("enter", kernel_state.TWIN_ID))
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.log.append(
            (
                "exit",
                None if exc_type is None else exc_type.__name__,
                None if exc_value is None else str(exc_value),
                kernel_state.TWIN_ID,
            )
        )
        return self.suppress


MAGICS = _pinned("Magic", (MagicBehaviour,), TWIN_IDS)


class CountdownBehaviour(object):
    """An iterator: ``__iter__`` returns itself."""

    def __init__(self, start):
        self.current = start

    def __iter__(self):
        return self

    def __next__(self):
        if self.current <= 0:
            raise StopIteration
        self.current -= 1
        return self.current + 1


COUNTDOWNS = _pinned("Countdown", (CountdownBehaviour,), TWIN_IDS)


class PlainBehaviour(object):
    """No special methods at all."""

    def ping(self):
        return ("pong", kernel_state.TWIN_ID)


PLAINS = _pinned("Plain", (PlainBehaviour,), TWIN_IDS)
FRESH_PLAINS = _pinned("FreshPlain", (PlainBehaviour,), FRESH_IDS)

#: special methods the Plain classes do not have
ABSENT_SPECIAL_METHODS = (
    "__len__",
    "__iter__",
    "__next__",
    "__contains__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__call__",
    "__enter__",
    "__exit__",
    "__bool__",
    "__add__",
    "__radd__",
    "__iadd__",
    "__neg__",
    "__int__",
    "__index__",
    "__reversed__",
)


# -- unusual classes ----------------------------------------------------------------


class DynamicBehaviour(object):
    """Attributes made up by ``__getattr__``."""

    def __getattr__(self, name):
        if name.startswith("dyn_"):
            return (name[4:].upper(), kernel_state.TWIN_ID)
        raise AttributeError("%s has no %s" % (type(self).__name__, name))


DYNAMICS = _pinned("Dynamic", (DynamicBehaviour,), TWIN_IDS)


class SlottedBehaviour(object):
    """With ``__slots__`` only (no ``__dict__``, no ``__weakref__``)."""

    __slots__ = ()

    def __init__(self, x):
        self.x = x

    def get(self):
        return self.x


SLOTTEDS = _pinned("Slotted", (SlottedBehaviour,), TWIN_IDS, {"__slots__": ("x",)})


class EqualityBehaviour(object):
    """``__eq__`` without ``__hash__``: unhashable."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, EqualityBehaviour) and other.value == self.value


EQUALS = _pinned("Equal", (EqualityBehaviour,), TWIN_IDS)

#: tokens of the Finalized objects whose __del__ ran here
_FINALIZED = []


class FinalizedBehaviour(object):
    """Records its token when ``__del__`` runs (natively only)."""

    def __init__(self, token):
        self.token = token

    def __del__(self):
        _FINALIZED.append(self.token)


FINALIZEDS = _pinned("Finalized", (FinalizedBehaviour,), TWIN_IDS)


def finalized():
    collect()
    return list(_FINALIZED)


def triple(self):
    """A method added to a class at run time."""
    return (3 * self.count, kernel_state.TWIN_ID)


# -- inheritance --------------------------------------------------------------------


class Base(TwinObject):
    """Native to the master; its subclasses below live in twins."""

    kind = "base"

    def __init__(self, name):
        self.name = name
        self.inits = ["Base"]

    def who(self):
        return "base"

    def hello(self):
        return "hello from %s %s" % (self.kind, self.name)

    def ran_in(self):
        return where()


class ChildBehaviour(object):
    """Mixed into subclasses of Base: chains ``__init__`` and ``who`` with super()."""

    kind = "child"

    def __init__(self, name):
        super().__init__(name)
        self.inits.append("Child")

    def who(self):
        return "child of " + super().who()


#: Base -> Child<flavour>: a subclass that moves to a twin
CHILDREN = _pinned("Child", (ChildBehaviour, Base), TWIN_IDS)
#: Child<flavour> -> BackHome<flavour>: moves back to the master (None: the master)
BACK_HOMES = {
    flavour: _pinned("BackHome", (child,), {flavour: None})[flavour] for flavour, child in CHILDREN.items()
}


class Walker(TwinObject):
    def walk(self):
        return ("walk", kernel_state.TWIN_ID)


class Swimmer(TwinObject):
    def swim(self):
        return ("swim", kernel_state.TWIN_ID)

    def walk(self):
        return ("swimmer walks", kernel_state.TWIN_ID)


#: multiple inheritance of two TwinObject classes
DUCKS = _pinned("Duck", (Walker, Swimmer), TWIN_IDS)


class Top(TwinObject):
    def __init__(self):
        self.trail = ["Top"]

    def name(self):
        return "top"

    def chain(self):
        return ["Top"]


class Left(Top):
    def __init__(self):
        super().__init__()
        self.trail.append("Left")

    def name(self):
        return "left"

    def chain(self):
        return ["Left"] + super().chain()


class Right(Top):
    def __init__(self):
        super().__init__()
        self.trail.append("Right")

    def name(self):
        return "right"

    def side(self):
        return "right side"

    def chain(self):
        return ["Right"] + super().chain()


class BottomBehaviour(object):
    def __init__(self):
        super().__init__()
        self.trail.append("Bottom")

    def chain(self):
        return ["Bottom"] + super().chain()


#: diamond: Top <- Left, Right <- Bottom<flavour>
BOTTOMS = _pinned("Bottom", (BottomBehaviour, Left, Right), TWIN_IDS)


# -- calls back and forth -----------------------------------------------------------


class PingBehaviour(object):
    def bounce(self, other, depth, trail):
        """One level of a chain in which two objects call each other ``depth``
        times; ``trail`` lists where each level ran."""
        trail = trail + [where()]
        if depth <= 1:
            return trail
        return other.bounce(self, depth - 1, trail)


class MasterPing(PingBehaviour, TwinObject):
    """Native to the master."""


PINGS = _pinned("Ping", (PingBehaviour,), TWIN_IDS)


# -- garbage collection -------------------------------------------------------------

#: token -> weak reference to the native Tracked object of that token (natively)
_TRACKED = {}
#: proxies a twin holds on purpose (see hold)
_HELD = []


class TrackedBehaviour(object):
    """Registers a weak reference to itself, natively, under ``token``."""

    def __init__(self, token):
        self.token = token
        _TRACKED[token] = weakref.ref(self)

    def ping(self):
        return ("pong", self.token, kernel_state.TWIN_ID)


class MasterTracked(TrackedBehaviour, TwinObject):
    """Native to the master."""


FRESH_TRACKED = _pinned("FreshTracked", (TrackedBehaviour,), FRESH_IDS)


def collect():
    """A full collection. Twice: PyPy frees an object that C code (the extension)
    referenced only at the collection after the one that unlinks it."""
    gc.collect()
    gc.collect()


def tracked_alive(tokens):
    """Which of ``tokens`` still have their native object here, after a collection."""
    collect()
    alive = []
    for token in tokens:
        ref = _TRACKED.get(token)
        if ref is not None and ref() is not None:
            alive.append(token)
    return alive


def hold_master_objects(tokens):
    """Run in a twin: create a master-native Tracked object per token and hold the
    proxies; returns how many are held."""
    _HELD.extend(MasterTracked(token) for token in tokens)
    return len(_HELD)


def drop_held():
    """Drop the proxies :func:`hold_master_objects` holds and send the releases."""
    del _HELD[:]
    collect()
    _native.flush_releases()
    return len(_HELD)


def flush_releases():
    """Collect dead proxies here and send their releases now."""
    collect()
    _native.flush_releases()


def exported_count():
    """Native objects of this interpreter that other interpreters still reference."""
    collect()
    return _native.exported_count()


# -- run anywhere -------------------------------------------------------------------

#: key -> object kept by :func:`keep`
_KEPT = {}


def call(obj, name, *args, **kwargs):
    """``obj.name(*args, **kwargs)``, here."""
    return getattr(obj, name)(*args, **kwargs)


def get(obj, name):
    return getattr(obj, name)


def make(cls, *args, **kwargs):
    """``cls(*args, **kwargs)``, called here."""
    return cls(*args, **kwargs)


def same(a, b):
    return a is b


def same_attribute(a, b, name):
    return getattr(a, name) is getattr(b, name)


def is_proxy(obj):
    return _runtime.proxy_ref(obj) is not None


def describe(obj):
    """How ``obj`` looks here: is it a proxy, its type's name, ``__class__``'s name."""
    return {
        "proxy": is_proxy(obj),
        "native": _runtime.is_native_twin_object(obj),
        "type": type(obj).__name__,
        "class": obj.__class__.__name__,
        "type_is_class": type(obj) is obj.__class__,
        "here": kernel_state.TWIN_ID,
    }


def describe_all(values):
    """:func:`describe` of each TwinObject in nested lists, tuples, dicts and sets."""
    found = []

    def walk(value):
        if isinstance(value, TwinObject):
            found.append(describe(value))
        elif isinstance(value, dict):
            for key in sorted(value, key=repr):
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, (set, frozenset)):
            for item in sorted(value, key=lambda item: type(item).__name__):
                walk(item)

    walk(values)
    return found


def keep(key, obj):
    _KEPT[key] = obj
    return key


def kept(key):
    return _KEPT[key]


def call_kept(key, name, *args, **kwargs):
    return getattr(_KEPT[key], name)(*args, **kwargs)


def forget(key):
    """Drop what :func:`keep` kept and send the releases now."""
    _KEPT.pop(key, None)
    collect()
    _native.flush_releases()


def unbox(box):
    """What a Box holding a TwinObject holds, as seen here."""
    return (describe(box.value), box.value.count)


def box_up(value):
    return Box(value)


def use_counter(counter, n):
    """Run in a twin with a Counter of elsewhere: add to it, say where it ran."""
    return (counter.add(n), counter.ran_in(), where(), is_proxy(counter))


def make_master_counter(start):
    """Run in a twin: create a master-native Counter; it comes back to the master
    as the native object."""
    counter = MasterCounter(start)
    return counter, is_proxy(counter), counter.ran_in()


def class_attribute(cls, name):
    """``getattr(cls, name)``, here (natively for a class of this twin)."""
    return getattr(cls, name)


def has_class_attribute(cls, name):
    return name in vars(cls) or hasattr(cls, name)


class CarryingError(Exception):
    """An exception that carries an object (passed as its argument)."""


def raise_carrying(obj):
    """Raise CarryingError holding ``obj`` (a TwinObject: it must travel by reference)."""
    raise CarryingError(obj)
