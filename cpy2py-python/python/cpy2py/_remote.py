"""Objects by reference that are not TwinObjects: generic proxies, and which
objects travel that way.

A value that cannot go by value (an iterator or generator, a lock, an open file, an
object that does not pickle, an object of a class the receiving interpreter cannot
import, anything the user marks with
:func:`cpy2py.by_ref` or ``__cpy2py_by_ref__ = True``) stays native where it is; the
receiver gets a :class:`RemoteObject`, which forwards attribute access, calls and
exactly the special methods the native type has. One proxy per remote object per
interpreter, released when it is dropped (the same tables as TwinObjects).

Private: users see :class:`RemoteObject` through ``cpy2py``, and ``by_ref``/``by_value``.
"""

from __future__ import annotations

import collections.abc
import importlib.util
import io
import os
import socket
import sys
import sysconfig
import threading
import types
from typing import Any, Callable, Dict, FrozenSet, List, NoReturn, Optional, Tuple, TypeVar

from . import _native
from ._aio import start_async

__all__ = [
    "RemoteObject",
    "RemoteMethod",
    "ByRef",
    "ByValue",
    "by_ref",
    "by_value",
    "always_by_ref",
    "describe_type",
    "make_remote",
    "static_verdict",
    "VERDICTS",
    "importable",
    "next_batch",
    "module_root",
]

#: The special methods a generic proxy can forward, by bit (the wire's table).
SPECIAL_METHODS: Tuple[str, ...] = _native.SPECIAL_METHODS

#: Names ``object`` defines: forwarded only when the native type overrides them
#: (a proxy's own default, identity, is the native's: one proxy per object).
_OBJECT_DEFAULTS = frozenset(name for name in SPECIAL_METHODS if hasattr(object, name))

_call_method = _native.call_method
_get_attr = _native.get_attr
_set_attr = _native.set_attr
_del_attr = _native.del_attr

#: Slot holding ``(owner peer, object id)``; the same name as TwinObject proxies.
REF_SLOT = "_cpy2py_ref"


def describe_type(cls: type) -> Tuple[int, bool, str, str]:
    """``(methods, hashable, module, qualname)`` of ``cls`` for a generic
    reference: bit ``i`` of ``methods`` says that ``cls`` has
    :data:`SPECIAL_METHODS` ``[i]``."""
    methods = 0
    for bit, name in enumerate(SPECIAL_METHODS):
        found = getattr(cls, name, None)
        if found is None:
            continue
        if name in _OBJECT_DEFAULTS and found is getattr(object, name):
            continue
        methods |= 1 << bit
    hashable = getattr(cls, "__hash__", None) is not None
    return methods, hashable, str(getattr(cls, "__module__", "builtins")), str(cls.__qualname__)


class RemoteObject(object):
    """A proxy of an object native to another interpreter that is not a TwinObject.

    Attribute reads, writes and deletes, calls, and the special methods the native
    type has (``len``, ``iter``, ``next``, indexing, arithmetic, comparisons,
    ``with``, ``bool``, ``hash`` where hashable) run natively; ``repr`` and ``str``
    are the native object's. ``isinstance(proxy, C)`` holds for the native class
    ``C`` where this interpreter has imported it. ``cpy2py.by_value(proxy)`` fetches
    a copy where one can be made here.
    """

    __slots__ = (REF_SLOT, "_cpy2py_stream", "__weakref__")
    #: ``(module, qualname)`` of the native class (set on each proxy class).
    _cpy2py_class: Tuple[str, str] = ("builtins", "object")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # special names the proxy class lacks: the native type lacks them too
            raise AttributeError(name)
        if name in _STEERING:
            _steer(self, name)
        return _get_attr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        _set_attr(self, name, value)

    def __delattr__(self, name: str) -> None:
        _del_attr(self, name)

    def __repr__(self) -> str:
        return str(_call_method(self, "__repr__", ()))

    def __str__(self) -> str:
        return str(_call_method(self, "__str__", ()))

    def __format__(self, spec: str) -> str:
        return str(_call_method(self, "__format__", (spec,)))

    def __dir__(self) -> Any:
        return list(_call_method(self, "__dir__", ()))

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: F811
        # isinstance() consults __class__ after type(): the native class where
        # this interpreter has it (without importing anything for it)
        native = _native_class(type(self))
        return native if native is not None else type(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a proxy of a remote object travels by reference, not pickled by itself")

    def __cpy2py_copy__(self) -> Any:
        """A copy of the native object, made here (``cpy2py.by_value``)."""
        return by_value(self)


class RemoteMethod(object):
    """Method ``name`` of a remote object, bound to its proxy: calling it calls it
    natively (a method that came in a pickle, never looked up remotely)."""

    __slots__ = ("__self__", "__name__")

    def __init__(self, proxy: Any, name: str) -> None:
        self.__self__ = proxy
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call_method(self.__self__, self.__name__, args, kwargs or None)

    def __eq__(self, other: Any) -> bool:
        return type(other) is RemoteMethod and other.__self__ is self.__self__ and other.__name__ == self.__name__

    def __hash__(self) -> int:
        return hash((id(self.__self__), self.__name__))

    def __repr__(self) -> str:
        module, qualname = type(self.__self__)._cpy2py_class
        return "<remote method %s of a %s.%s>" % (self.__name__, module, qualname)


# ------------------------------------------------------------ streamed iteration

#: Items an iterator proxy fetches one at a time before it fetches ahead, so that
#: priming a generator and then sending to it (or a loop that breaks early and
#: hands the generator on) never finds items fetched ahead of it.
ONE_BY_ONE = 8
#: The first batch after those, doubled per batch up to :data:`MAX_BATCH` items.
FIRST_BATCH = 16
MAX_BATCH = 1024
#: Generator methods that steer it: after one, the proxy fetches one at a time.
_STEERING = frozenset({"send", "throw", "close"})


class _Stream(object):
    """What an iterator proxy fetched ahead: items, then how the iterator ended."""

    __slots__ = ("items", "end", "calls", "batch", "steered")

    def __init__(self) -> None:
        self.items: "collections.deque[Any]" = collections.deque()
        #: None while the iterator may have more; else ``(exception, value)``
        #: raised once the items are used up.
        self.end: Optional[BaseException] = None
        self.calls = 0
        self.batch = FIRST_BATCH
        self.steered = False


def _stream_of(proxy: Any) -> _Stream:
    try:
        return object.__getattribute__(proxy, "_cpy2py_stream")  # type: ignore[no-any-return]
    except AttributeError:
        stream = _Stream()
        object.__setattr__(proxy, "_cpy2py_stream", stream)
        return stream


def _steer(proxy: Any, name: str) -> None:
    """Before ``send``, ``throw`` or ``close``: no more fetching ahead, and none
    may be buffered (the generator is already past those items)."""
    stream = _stream_of(proxy)
    stream.steered = True
    if stream.items and name != "close":
        raise RuntimeError(
            "cannot %s() a remote generator after %d of its items were fetched ahead; "
            "call send() before iterating it further than %d items with next()"
            % (name, len(stream.items), ONE_BY_ONE)
        )
    stream.items.clear()


def _fetch_size(stream: _Stream) -> int:
    """Counts a fetch of the iterator behind ``stream``: how many items it asks
    for (1 while fetching one at a time, then batches doubling up to MAX_BATCH)."""
    stream.calls += 1
    if stream.steered or stream.calls <= ONE_BY_ONE:
        return 1
    n = stream.batch
    stream.batch = min(n * 2, MAX_BATCH)
    return n


def _next_of(stream: _Stream, items: List[Any], end: Optional[BaseException]) -> Any:
    """Adds a fetch's items and end to ``stream``; its next item, or raises how
    the iterator ended."""
    stream.items.extend(items)
    if end is not None:
        stream.end = end
    if stream.items:
        return stream.items.popleft()
    _raise_end(stream)


def _remote_next(self: Any) -> Any:
    """``next(proxy)``: one item at a time at first, then from batches fetched
    ahead (one round trip per batch); an exception or the end comes at the item
    where it happened."""
    stream = _stream_of(self)
    if stream.items or stream.end is not None:
        return _next_of(stream, [], None)
    n = _fetch_size(stream)
    if n == 1:
        return _call_method(self, "__next__", ())
    owner = object.__getattribute__(self, REF_SLOT)[0]
    return _next_of(stream, *_native.call(owner, next_batch, (self, n)))


def _raise_end(stream: _Stream) -> NoReturn:
    """Raises how the iterator ended: its exception once, then StopIteration (a
    generator that raised is finished)."""
    end = stream.end if stream.end is not None else StopIteration()
    if not isinstance(end, StopIteration):
        stream.end = StopIteration()
    raise end


async def _remote_anext(self: Any) -> Any:
    """``await anext(proxy)`` (``async for``): as :func:`_remote_next`, without
    blocking the event loop; each round trip is awaited. The iterator's end
    raises StopAsyncIteration."""
    stream = _stream_of(self)
    items: List[Any] = []
    end: Optional[BaseException] = None
    if not stream.items and stream.end is None:
        n = _fetch_size(stream)
        owner = object.__getattribute__(self, REF_SLOT)[0]
        # The end comes back as a value: a StopIteration cannot go through a future.
        items, end = await start_async(
            lambda on_done: _native.call_async(owner, on_done, next_batch, (self, n))
        )
    try:
        return _next_of(stream, items, end)
    except StopIteration:
        raise StopAsyncIteration from None


def _remote_aiter(self: Any) -> Any:
    return self


def _remote_iter(self: Any) -> Any:
    return self  # an iterator's iter() is itself: no round trip


def next_batch(iterator: Any, n: int) -> Tuple[List[Any], Optional[BaseException]]:
    """Up to ``n`` items of ``iterator`` (run where it lives), and the exception
    that ended it (StopIteration included), if one did."""
    items: List[Any] = []
    append = items.append
    try:
        for _ in range(n):
            append(next(iterator))
    except BaseException as error:  # the receiver raises it at its item
        error.__traceback__ = None
        return items, error
    return items, None


def _forwarder(name: str) -> Callable[..., Any]:
    def forward(self: Any, *args: Any) -> Any:
        return _call_method(self, name, args)

    forward.__name__ = name
    forward.__qualname__ = "RemoteObject." + name
    return forward


_CLASSES: Dict[Tuple[str, str, int, bool], type] = {}
_CLASSES_LOCK = threading.Lock()
_NATIVE_CLASSES: Dict[type, Optional[type]] = {}


def _native_class(proxy_cls: type) -> Optional[type]:
    """The native class of a proxy class, if this interpreter has its module."""
    try:
        return _NATIVE_CLASSES[proxy_cls]
    except KeyError:
        pass
    module, qualname = proxy_cls._cpy2py_class  # type: ignore[attr-defined]
    found: Any = sys.modules.get(module)
    if found is not None:
        for part in qualname.split("."):
            found = getattr(found, part, None)
            if found is None:
                break
    native = found if isinstance(found, type) else None
    if native is not None:
        _NATIVE_CLASSES[proxy_cls] = native  # a miss is asked again: the module may come
    return native


def proxy_class(module: str, qualname: str, methods: int, hashable: bool) -> type:
    """The generic proxy class for native class ``module.qualname`` with the
    special methods ``methods`` (bits of :data:`SPECIAL_METHODS`)."""
    key = (module, qualname, methods, hashable)
    cls = _CLASSES.get(key)
    if cls is not None:
        return cls
    namespace: Dict[str, Any] = {
        "__slots__": (),
        "__module__": __name__,
        "__qualname__": qualname or "RemoteObject",
        "_cpy2py_class": (module, qualname),
    }
    for bit, name in enumerate(SPECIAL_METHODS):
        if methods >> bit & 1:
            namespace[name] = _forwarder(name)
    if "__next__" in namespace:
        namespace["__next__"] = _remote_next
        namespace["__anext__"] = _remote_anext
        namespace["__aiter__"] = _remote_aiter
        if "__iter__" in namespace:
            namespace["__iter__"] = _remote_iter
    if not hashable:
        namespace["__hash__"] = None
    elif "__eq__" in namespace and "__hash__" not in namespace:
        # a class defining __eq__ loses the inherited __hash__: keep identity
        namespace["__hash__"] = object.__hash__
    with _CLASSES_LOCK:
        cls = _CLASSES.get(key)
        if cls is None:
            cls = type((qualname or "RemoteObject").rpartition(".")[2], (RemoteObject,), namespace)
            _CLASSES[key] = cls
    return cls


def make_remote(module: str, qualname: str, methods: int, hashable: bool, owner: int, object_id: int) -> Any:
    """A new generic proxy of object ``object_id`` of peer ``owner`` (called by
    the Rust core for a reference it has no live proxy for)."""
    proxy: Any = object.__new__(proxy_class(module, qualname, methods, hashable))
    object.__setattr__(proxy, REF_SLOT, (owner, object_id))
    return proxy


# -------------------------------------------------------------- explicit control


class ByRef(object):
    """What :func:`by_ref` returns: its object travels by reference."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __repr__(self) -> str:
        return "cpy2py.by_ref(%r)" % (self.obj,)


def by_ref(obj: Any) -> Any:
    """``obj``, marked to travel by reference, whatever it is: pass the result as
    an argument or return it, and the other interpreter gets a proxy of ``obj``
    (a :class:`RemoteObject`, or the proxy of a TwinObject), while ``obj`` stays
    here."""
    return ByRef(obj)


_T = TypeVar("_T", bound=type)


def always_by_ref(cls: _T) -> _T:
    """Class decorator: instances of ``cls`` (and of its subclasses) always travel
    by reference. The same as ``__cpy2py_by_ref__ = True`` in the class body."""
    cls.__cpy2py_by_ref__ = True  # type: ignore[attr-defined]
    _VERDICTS.pop(cls, None)
    return cls


class ByValue(object):
    """A value that must travel by value (``by_value``'s answer): pickled, or an
    error naming why not."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def _copy_of(obj: Any) -> ByValue:
    return ByValue(obj)


def by_value(proxy: Any) -> Any:
    """A copy, made here, of the object behind ``proxy`` (a :class:`RemoteObject`);
    any other value but a TwinObject's proxy is returned as it is. Raises
    :class:`cpy2py.errors.UnpicklableError` (or the import error this interpreter
    met) when no copy can be made here."""
    if isinstance(proxy, RemoteObject):
        owner = object.__getattribute__(proxy, REF_SLOT)[0]
        return _native.call(owner, _copy_of, (proxy,))
    if hasattr(type(proxy), REF_SLOT):
        raise TypeError(
            "%r is a TwinObject's proxy: TwinObjects always travel by reference" % (type(proxy).__qualname__,)
        )
    return proxy


# ------------------------------------------------------------- what goes by ref

#: Types that never pickle: instances travel by reference.
_NEVER_PICKLED: Tuple[type, ...] = (
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.TracebackType,
    types.CodeType,
    types.ModuleType,
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Event,
    threading.Semaphore,
    threading.Thread,
    io.IOBase,
    socket.socket,
)

def _public_stdlib() -> FrozenSet[str]:
    """The standard library's public top-level modules (those without a leading
    underscore, whose classes every interpreter of ours has)."""
    names = set(getattr(sys, "stdlib_module_names", ()))
    if not names:  # before 3.10 (PyPy 3.9): what the standard library's directory holds
        names.update(sys.builtin_module_names)
        try:
            entries = os.listdir(sysconfig.get_paths()["stdlib"])
        except (OSError, KeyError):
            entries = []
        for entry in entries:
            name = entry[:-3] if entry.endswith(".py") else entry
            if name.isidentifier():
                names.add(name)
    return frozenset(name for name in names if not name.startswith("_"))


#: Module roots every interpreter of ours can import, with the same classes.
_ALWAYS_IMPORTABLE = _public_stdlib() | {"builtins", "cpy2py", "__main__", "__cpy2py_main__"}

#: Verdicts by type: True (by reference), False (by value), or a module root
#: whose importability in the destination decides.
_VERDICTS: Dict[type, Any] = {}
#: The same table, read by the pickler on its hot path (filled only here).
VERDICTS = _VERDICTS


def module_root(cls: type) -> str:
    """The top-level package of ``cls``'s module."""
    return str(getattr(cls, "__module__", None) or "builtins").partition(".")[0]


def static_verdict(cls: type) -> Any:
    """Whether instances of ``cls`` go by reference regardless of the destination
    (True), by value (False), or, as a module root, if the destination cannot
    import that module."""
    try:
        return _VERDICTS[cls]
    except KeyError:
        pass
    verdict: Any
    if getattr(cls, "__cpy2py_by_ref__", False) is True or cls is ByRef:
        verdict = True
    elif issubclass(cls, _NEVER_PICKLED) or issubclass(cls, collections.abc.Iterator):
        # an iterator is a view of state that stays where it is (and PyPy
        # pickles its builtin ones with a module CPython lacks)
        verdict = True
    else:
        root = module_root(cls)
        if root in _ALWAYS_IMPORTABLE:
            verdict = False
        elif root.startswith("_"):
            # an implementation's private module (``_sqlite3``, ``_ctypes``): its
            # objects are handles whose pickles, where PyPy makes any, do not load
            verdict = True
        else:
            verdict = root
    _VERDICTS[cls] = verdict
    return verdict


#: ``(peer, module root) -> importable there``, asked once per pair.
_IMPORTABLE: Dict[Tuple[int, str], bool] = {}


def importable(root: str) -> bool:
    """Whether this interpreter can import top-level module ``root`` (asked by a
    peer about to send an object of one of its classes)."""
    if root in sys.modules:
        return True
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False


def importable_in(peer: int, root: str) -> bool:
    """Whether peer ``peer`` can import ``root``: asked once, then cached."""
    key = (peer, root)
    known = _IMPORTABLE.get(key)
    if known is None:
        known = bool(_native.call(peer, importable, (root,)))
        _IMPORTABLE[key] = known
    return known


def forget_peer(peer: int) -> None:
    """Peer ``peer`` is gone: forget what it could import."""
    for key in [key for key in _IMPORTABLE if key[0] == peer]:
        del _IMPORTABLE[key]
