"""TwinObjects: objects that live in one interpreter and are proxied everywhere else.

(Longer than 600 lines on purpose: the user's reference below, then the class, its
metaclass and the proxy classes built from it, which share their helpers.)

::

    from cpy2py import TwinObject, localmethod

    class Counter(TwinObject):
        __twin_id__ = 'pypy3'          # instances live in the pypy3 twin
        unit = 'items'
        def __init__(self, start=0):
            self.count = start
        def add(self, n=1):
            self.count += n
            return self.count

    c = Counter(3)                     # created in pypy3; a proxy everywhere else
    c.add(2)                           # runs in pypy3

The interpreter named by a class's ``__twin_id__`` is its *native* interpreter (a
class without ``__twin_id__`` is native to the master, ``kernel_state.MASTER_ID``;
subclasses inherit ``__twin_id__`` and may change it). There, the class is plain
Python: ``Counter(3)`` creates the object, methods run directly, nothing is proxied.
Anywhere else, ``Counter(3)`` creates the object in the native interpreter (starting
that twin on first use from the master, unless ``CPY2PY_NOAUTO`` is set) and returns
a *proxy*. TwinObjects and their proxies travel between interpreters by reference:
a proxy sent back to its native interpreter arrives as the very native object, and
the same remote object arriving twice gives the same proxy.

Proxies
-------
A proxy forwards everything to the native object, in its native interpreter:

- instance attributes: reading, writing and deleting any attribute (``c.count``,
  ``c.count = 1``, ``del c.count``), including attributes the class does not know;
- methods (one round trip per call: lookup and call are fused), classmethods and
  staticmethods called through the instance, properties and any other descriptor
  (they run natively, with the native object);
- special methods: each one the native class defines (comparisons, arithmetic with
  its reflected and in-place forms, ``__len__``, ``__iter__``/``__next__``,
  ``__contains__``, ``__getitem__``/``__setitem__``/``__delitem__``, ``__call__``,
  ``__enter__``/``__exit__``, ``__hash__``, ``__bool__``, ``__str__``, ...), and only
  those: a proxy of a class without ``__len__`` has no ``__len__``. ``repr(proxy)``
  is the native ``repr`` (or a local description once the native twin is gone).
  ``iter(proxy)`` returns the native iterator (a proxy of it when it is not a
  TwinObject itself: every ``next`` is a round trip). ``__exit__`` receives the
  exception type and value but no traceback (tracebacks do not cross).
- ``copy.copy`` and ``copy.deepcopy`` copy the native object, natively, and return
  a proxy of the copy.

Local to the proxy: weak references to it, identity (``is``) and, when the native
class does not define them, ``object``'s ``==``, ``hash``, ``format`` and ``sizeof``
(``==`` and ``hash`` by identity of the proxy, which stands for the identity of the
native object).

Arguments and results other than TwinObjects travel by value: a method returning a
list returns a copy, and one returning a generator fails (``iter(proxy)`` is the
exception). A method is found by name on the class: ``c.add`` is a local
forwarding method whose call runs ``getattr(native, 'add')(...)`` natively, even if
an instance attribute shadows ``add`` there. Call methods through instances:
``Counter.add(c, 1)`` runs the local function with ``self`` the proxy, every
attribute access in it a round trip. An exception that holds a TwinObject cannot
cross yet and arrives as :class:`~cpy2py.errors.RemoteException`.

``isinstance(proxy, Counter)`` and ``issubclass(type(proxy), Counter)`` are true, and
``proxy.__class__`` is ``Counter``; ``type(proxy)`` is the *proxy class*: a subclass
of ``Counter`` with the same name, built on first use, one per class. Building it
runs ``__init_subclass__`` of the user's classes, as subclassing does.

A method decorated with :func:`localmethod` runs in the caller's interpreter, with
``self`` the proxy (or the native object, natively).

Class attributes
----------------
A class's state lives in its native interpreter. In any other interpreter, through
the class object (``Counter.unit``):

- reading a *plain data* attribute (anything but functions, descriptors such as
  properties, classes and modules; wherever it is defined in the class's MRO)
  returns its value in the native interpreter; so does reading a public name
  (no leading underscore) that is missing locally, e.g. one set natively later;
- writing or deleting a public or private name (not ``__dunder__`` names) changes
  the native class, and the local class mirrors the change;
- calling a classmethod or staticmethod runs it natively;
- everything else (functions, properties, nested classes, ``__dunder__`` names) is
  the local class's own: ``Counter.add`` is the local function, ``Counter.__doc__``
  the local docstring.

So class decorators that read or write plain data class attributes at import time
(``dataclasses``) reach the native interpreter. In the local class, plain data and
classmethods/staticmethods are held by small descriptors of this module
(``vars(Counter)['unit']`` is one); natively, the class is untouched.

A class must be reachable by name (defined at module level) to be instantiated or
used remotely; classes travel by reference as ``(module, qualname)``.
"""

from __future__ import annotations

import copy
import functools
import threading
import types
from typing import Any, Callable, Dict, Optional, Tuple

from . import _native, _registry, _routing, _runtime, errors, kernel_state

__all__ = ["TwinObject", "TwinMeta", "InstanceProxy", "localmethod"]


def _unsupported(name: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise errors.CPy2PyException(
            "this build of cpy2py._native has no %s(): rebuild the extension to use TwinObjects" % (name,)
        )

    return missing


# Bound once: these are called for every proxied operation. A build of the extension
# without TwinObject support still imports (and fails clearly on use).
_call = _native.call
_instantiate_in: Callable[..., Any] = getattr(_native, "instantiate", None) or _unsupported("instantiate")
_call_method: Callable[..., Any] = getattr(_native, "call_method", None) or _unsupported("call_method")
_get_attr: Callable[..., Any] = getattr(_native, "get_attr", None) or _unsupported("get_attr")
_set_attr: Callable[..., Any] = getattr(_native, "set_attr", None) or _unsupported("set_attr")
_del_attr: Callable[..., Any] = getattr(_native, "del_attr", None) or _unsupported("del_attr")

#: proxy class -> the user's class it stands for (shared with ``_runtime``)
_NATIVE_OF: Dict[type, type] = _registry.PROXY_NATIVE
#: user's class -> its proxy class
_PROXY_OF: Dict[type, type] = {}
_proxy_lock = threading.RLock()

#: Name of the slot holding a proxy's ``(owner peer, object id)``.
REF_SLOT = "_cpy2py_ref"


# ------------------------------------------------------------------------ twin ids


def _twin_id_of(cls: type) -> str:
    """The id of ``cls``'s native interpreter."""
    twin_id = type.__getattribute__(cls, "__twin_id__")
    return kernel_state.MASTER_ID if twin_id is None else twin_id


def _is_native(cls: type) -> bool:
    """Whether ``cls`` (a user's TwinObject class) is native to this interpreter."""
    twin_id = type.__getattribute__(cls, "__twin_id__")
    if twin_id is None:
        twin_id = kernel_state.MASTER_ID
    return bool(twin_id == kernel_state.TWIN_ID)


def _call_in_twin(twin_id: str, func: Any, args: Tuple[Any, ...]) -> Any:
    """``func(*args)`` in the interpreter ``twin_id`` (``func`` by reference)."""
    return _routing.call_in(twin_id, _call, func, args, None)


def _call_class_attribute(cls: type, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """``getattr(cls, name)(*args, **kwargs)``: runs natively for class-level calls."""
    return getattr(cls, name)(*args, **kwargs)


def _class_getattr(cls: type, name: str) -> Any:
    return _call_in_twin(_twin_id_of(cls), getattr, (cls, name))


# --------------------------------------------------------------------- localmethod


def localmethod(func: Any) -> Any:
    """Decorator: the method runs in the caller's interpreter, not the native one.

    Through a proxy, ``self`` is the proxy, so attribute access and other method
    calls inside still reach the native object. Natively it is a plain method.
    Applies to functions and to ``classmethod``/``staticmethod`` objects (put
    ``@localmethod`` above those); class-level calls of a local classmethod run
    locally too. Returns its argument, marked.
    """
    target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
    if not isinstance(target, types.FunctionType):
        raise TypeError(
            "localmethod applies to functions, classmethods and staticmethods, not %r" % (func,)
        )
    target.__cpy2py_local__ = True  # type: ignore[attr-defined]
    return func


def _is_local(value: Any) -> bool:
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    return isinstance(value, types.FunctionType) and bool(value.__dict__.get("__cpy2py_local__"))


# ------------------------------------------------------------- class-level stand-ins


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name[:2] == "__" and name[-2:] == "__"


def _is_internal(name: str) -> bool:
    return name.startswith("_cpy2py") or name.startswith("__cpy2py")


def _is_plain_data(value: Any) -> bool:
    """Whether a class attribute is plain data (read natively from the class)."""
    return not (
        isinstance(value, (type, types.ModuleType)) or hasattr(type(value), "__get__")
    )


class _ClassData(object):
    """A plain data class attribute of a class native elsewhere, in the local class.

    Read through a class native elsewhere, it is read there; read through a class
    native here (a subclass) or a native instance, it is the local value.
    """

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is not None or owner is None:
            return self.value
        native = _NATIVE_OF.get(owner, owner)
        if _is_native(native):
            return self.value
        return _class_getattr(native, self.name)

    def __repr__(self) -> str:
        return "<class attribute %s = %r, read natively>" % (self.name, self.value)


class _ClassCallable(object):
    """A classmethod or staticmethod of a class native elsewhere, in the local class:
    called through a class native elsewhere (or its proxies), it runs there."""

    __slots__ = ("name", "original")

    def __init__(self, name: str, original: Any) -> None:
        self.name = name
        self.original = original

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if owner is None:
            owner = type(obj)
        native = _NATIVE_OF.get(owner, owner)
        if _is_native(native):
            return self.original.__get__(obj, owner)
        return _RemoteClassCallable(native, self.name)

    @property
    def __func__(self) -> Any:
        return self.original.__func__

    def __repr__(self) -> str:
        return "<%r, run natively>" % (self.original,)


class _RemoteClassCallable(object):
    """``cls.name`` bound for a call in ``cls``'s native interpreter."""

    __slots__ = ("__self__", "__name__")

    def __init__(self, cls: type, name: str) -> None:
        self.__self__ = cls
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cls = self.__self__
        return _call_in_twin(_twin_id_of(cls), _call_class_attribute, (cls, self.__name__, args, kwargs))

    def __reduce__(self) -> Any:
        return (getattr, (self.__self__, self.__name__))

    def __eq__(self, other: Any) -> bool:
        return (
            type(other) is _RemoteClassCallable
            and other.__self__ is self.__self__
            and other.__name__ == self.__name__
        )

    def __hash__(self) -> int:
        return hash((self.__self__, self.__name__))

    def __repr__(self) -> str:
        return "<%s.%s of twinterpreter %r>" % (
            self.__self__.__qualname__,
            self.__name__,
            _twin_id_of(self.__self__),
        )


def _class_level(name: str, value: Any) -> Any:
    """What the local class of a class native elsewhere holds for ``name = value``."""
    if _is_dunder(name) or _is_internal(name) or _is_local(value):
        return value
    if isinstance(value, (_ClassData, _ClassCallable)):
        return value
    if isinstance(value, (classmethod, staticmethod)):
        return _ClassCallable(name, value)
    if _is_plain_data(value):
        return _ClassData(name, value)
    return value


_MISSING = object()


def _class_namespace(cls: type) -> Dict[str, Any]:
    """``name -> value`` as ``cls`` resolves them: the first definition along its MRO,
    without ``object`` and ``TwinObject`` (whose own attributes stay local)."""
    namespace: Dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is object or klass is TwinObject or klass in _NATIVE_OF:
            continue
        for name, value in vars(klass).items():
            if name not in namespace:
                namespace[name] = value
    return namespace


def _lookup(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if klass is object or klass is TwinObject or klass in _NATIVE_OF:
            continue
        value = vars(klass).get(name, _MISSING)
        if value is not _MISSING:
            return value
    return _MISSING


def _install_class_stand_ins(cls: type) -> None:
    """Make the local copy of ``cls`` (native elsewhere) forward class-level state."""
    for name, value in _class_namespace(cls).items():
        stand_in = _class_level(name, value)
        if stand_in is not value:
            type.__setattr__(cls, name, stand_in)


# --------------------------------------------------------------------- the metaclass


class TwinMeta(type):
    """Metaclass of :class:`TwinObject` classes.

    Creates instances in the class's native interpreter (``cls(...)``) and forwards
    class-level state there (see the module documentation). A metaclass combined
    with it must derive from it.
    """

    def __new__(mcs, name: str, bases: Tuple[type, ...], namespace: Dict[str, Any], **kwargs: Any) -> Any:
        twin_id = namespace.get("__twin_id__")
        if twin_id is not None and not isinstance(twin_id, (str, _MasterId)):
            raise TypeError(
                "__twin_id__ of %s must be a twinterpreter id (str) or None, not %r" % (name, twin_id)
            )
        if "__twin_id__" in namespace and twin_id is None:
            namespace = dict(namespace, __twin_id__=_MASTER_ID)  # reads as the master's id
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        if "_cpy2py_proxy_of" in namespace or _TwinObject is None:
            return cls  # a proxy class, or TwinObject itself
        if not _is_native(cls):
            _install_class_stand_ins(cls)
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        native = _NATIVE_OF.get(cls, cls)
        twin_id = type.__getattribute__(native, "__twin_id__")
        if twin_id is None:
            twin_id = kernel_state.MASTER_ID
        if twin_id == kernel_state.TWIN_ID:
            return type.__call__(native, *args, **kwargs)
        if _runtime.global_name(native) is None:
            raise TypeError(
                "cannot create %s.%s in twinterpreter %r: a TwinObject class must be "
                "reachable by name (defined at module level)"
                % (native.__module__, native.__qualname__, twin_id)
            )
        return _routing.call_in(twin_id, _instantiate_in, native, args, kwargs)

    def __getattr__(cls, name: str) -> Any:
        # only reached for names the local class lacks
        if name[:1] != "_":
            native = _NATIVE_OF.get(cls, cls)
            if not _is_native(native):
                return _class_getattr(native, name)
        raise AttributeError("type object %r has no attribute %r" % (cls.__name__, name))

    def __setattr__(cls, name: str, value: Any) -> None:
        native = _NATIVE_OF.get(cls, cls)
        if _is_dunder(name) or _is_internal(name) or _is_native(native):
            type.__setattr__(cls, name, value)
        else:
            _call_in_twin(_twin_id_of(native), setattr, (native, name, value))
            type.__setattr__(native, name, _class_level(name, value))
        _refresh_proxies(native, name)

    def __delattr__(cls, name: str) -> None:
        native = _NATIVE_OF.get(cls, cls)
        if _is_dunder(name) or _is_internal(name) or _is_native(native):
            type.__delattr__(cls, name)
        else:
            _call_in_twin(_twin_id_of(native), delattr, (native, name))
            if name in vars(native):
                type.__delattr__(native, name)
            inherited = _lookup(native, name)
            if inherited is not _MISSING:
                stand_in = _class_level(name, inherited)
                if stand_in is not inherited:
                    type.__setattr__(native, name, stand_in)
        _refresh_proxies(native, name)


_TwinObject: Optional[type] = None


class _MasterId(object):
    """``TwinObject.__twin_id__``: the master's id, read when asked (a twin learns
    it at start), on the class and on instances, as in cpy2py 0.17."""

    __slots__ = ()

    def __get__(self, obj: Any, owner: Optional[type] = None) -> str:
        return kernel_state.MASTER_ID

    def __repr__(self) -> str:
        return "<the master's id, kernel_state.MASTER_ID>"


class TwinObject(metaclass=TwinMeta):
    """Base class of objects that live in one interpreter and are proxied elsewhere.

    Set ``__twin_id__`` to the id of the interpreter the instances live in; without
    it (or with None) they live in the master, and ``__twin_id__`` reads as
    ``kernel_state.MASTER_ID``. See the module :mod:`cpy2py.twinobject` for what
    proxies forward.
    """

    __slots__ = ()

    #: Id of the interpreter instances live in: the master's unless a subclass says.
    __twin_id__: Any = _MasterId()


_MASTER_ID = vars(TwinObject)["__twin_id__"]


_TwinObject = TwinObject


class _ProxyCheck(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return type(obj) in _NATIVE_OF

    def __subclasscheck__(cls, subclass: Any) -> bool:
        return subclass in _NATIVE_OF


class InstanceProxy(metaclass=_ProxyCheck):
    """Every proxy of a TwinObject is an instance of this class (``isinstance`` and
    ``issubclass`` only: nothing derives from it), as in cpy2py 0.17's
    ``cpy2py.proxy.proxy.InstanceProxy``. Native TwinObjects are not."""

    __slots__ = ()


# ------------------------------------------------------------------------- proxies


def _forwarding_method(name: str) -> Callable[..., Any]:
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _call_method(self, name, args, kwargs)

    forward.__name__ = name
    forward.__qualname__ = "<proxy>." + name
    forward.__doc__ = "Calls %s of the native object, in its native interpreter." % (name,)
    forward._cpy2py_forwards = name  # type: ignore[attr-defined]
    return forward


class _ForwardAttribute(object):
    """On a proxy class: reads ``name`` of the native object (a property, another
    descriptor or a class attribute, which the native object may shadow)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is None:
            return getattr(_NATIVE_OF.get(owner, owner), self.name)  # type: ignore[arg-type]
        return _get_attr(obj, self.name)

    def __repr__(self) -> str:
        return "<attribute %s of the native object>" % (self.name,)


class _NativeClass(object):
    """``proxy.__class__``: the user's class."""

    __slots__ = ("cls",)

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        return self.cls

    def __set__(self, obj: Any, value: Any) -> None:
        _set_attr(obj, "__class__", value)


class _RemoteMethod(object):
    """A method of a proxied object that the proxy class does not know (e.g. set on
    the native object or class at run time); calling it calls it natively."""

    __slots__ = ("__self__", "__name__")

    def __init__(self, proxy: Any, name: str) -> None:
        self.__self__ = proxy
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call_method(self.__self__, self.__name__, args, kwargs)

    def __eq__(self, other: Any) -> bool:
        return type(other) is _RemoteMethod and other.__self__ is self.__self__ and other.__name__ == self.__name__

    def __hash__(self) -> int:
        return hash((id(self.__self__), self.__name__))

    def __repr__(self) -> str:
        return "<remote method %s of %s>" % (self.__name__, _describe_proxy(self.__self__))


def method_of(obj: Any, name: str) -> Any:
    """The bound method ``name`` of ``obj`` (a TwinObject or proxy) that a pickle
    refers to. For a proxy it is never looked up remotely (that lookup may be what
    sent it): the proxy class's forwarding method if it has one, else a
    :class:`_RemoteMethod`."""
    cls = type(obj)
    if cls in _NATIVE_OF:
        forward = vars(cls).get(name)
        if isinstance(forward, types.FunctionType) and forward.__dict__.get("_cpy2py_forwards") == name:
            return types.MethodType(forward, obj)
        return _RemoteMethod(obj, name)
    return getattr(obj, name)


def _owner(proxy: Any) -> int:
    return int(proxy._cpy2py_ref[0])


def _describe_proxy(proxy: Any) -> str:
    cls = _NATIVE_OF.get(type(proxy), type(proxy))
    try:
        owner, object_id = proxy._cpy2py_ref
    except Exception:
        return "<proxy of %s.%s (no reference)>" % (cls.__module__, cls.__qualname__)
    return "<proxy of %s.%s object %d of peer %d>" % (cls.__module__, cls.__qualname__, object_id, owner)


def _iterate(obj: Any) -> Any:
    """``iter(obj)``, natively; a non-TwinObject iterator is boxed to travel."""
    iterator = iter(obj)
    if isinstance(iterator, TwinObject):
        return iterator
    return type.__call__(_Iterator, iterator)


def _reverse(obj: Any) -> Any:
    """``reversed(obj)``, natively, boxed like :func:`_iterate`."""
    iterator = reversed(obj)
    if isinstance(iterator, TwinObject):
        return iterator
    return type.__call__(_Iterator, iterator)


class _Iterator(TwinObject):
    """An iterator of a native object, created natively so that it travels by
    reference (``iter(proxy)``)."""

    __slots__ = ("_iterator", "__weakref__")

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def __length_hint__(self) -> int:
        return getattr(self._iterator, "__length_hint__", lambda: 0)()

    def __repr__(self) -> str:
        return "<iterator of twinterpreter %r: %r>" % (kernel_state.TWIN_ID, self._iterator)


def _proxy_getattr(self: Any, name: str) -> Any:
    # only reached for names the proxy class lacks: instance attributes and the like
    if _is_internal(name):
        raise AttributeError("%s has no attribute %r" % (_describe_proxy(self), name))
    return _get_attr(self, name)


def _proxy_setattr(self: Any, name: str, value: Any) -> None:
    _set_attr(self, name, value)


def _proxy_delattr(self: Any, name: str) -> None:
    _del_attr(self, name)


def _proxy_repr(self: Any) -> str:
    try:
        return str(_call_method(self, "__repr__", (), {}))
    except errors.TwinterpeterUnavailable as error:
        return "<%s: %s>" % (_describe_proxy(self)[1:-1], error)


def _proxy_iter(self: Any) -> Any:
    return _call(_owner(self), _iterate, (self,), {})


def _proxy_reversed(self: Any) -> Any:
    return _call(_owner(self), _reverse, (self,), {})


def _proxy_exit(self: Any, exc_type: Any, exc_value: Any, traceback: Any) -> Any:
    # tracebacks do not cross; an exception that cannot is described instead
    if exc_value is not None:
        try:
            _runtime.dumps((exc_type, exc_value), 4)
        except errors.UnpicklableError:
            exc_value = errors.RemoteException(
                "%s.%s" % (exc_type.__module__, exc_type.__qualname__),
                str(exc_value),
                "(the traceback stays in twinterpreter %r)" % (kernel_state.TWIN_ID,),
                twin_id=kernel_state.TWIN_ID,
            )
            exc_type = errors.RemoteException
    return _call_method(self, "__exit__", (exc_type, exc_value, None), {})


def _proxy_copy(self: Any) -> Any:
    return _call(_owner(self), copy.copy, (self,), {})


def _proxy_deepcopy(self: Any, memo: Any = None) -> Any:
    return _call(_owner(self), copy.deepcopy, (self,), {})


def _proxy_reduce_ex(self: Any, protocol: Any) -> Any:
    raise TypeError(
        "cannot pickle %s: proxies cross interpreters by reference in cpy2py calls, "
        "not by pickle" % (_describe_proxy(self),)
    )


def _proxy_finalize(self: Any) -> None:
    """The native class's ``__del__`` runs natively, when the native object dies."""


#: Special methods with their own forwarding.
_SPECIAL_FORWARDERS: Dict[str, Callable[..., Any]] = {
    "__iter__": _proxy_iter,
    "__reversed__": _proxy_reversed,
    "__exit__": _proxy_exit,
}

#: Names a proxy class never takes over from the native class.
_NEVER_FORWARDED = frozenset(
    [
        "__init__",
        "__new__",
        "__getattr__",
        "__setattr__",
        "__delattr__",
        "__class__",
        "__dict__",
        "__weakref__",
        "__slots__",
        "__module__",
        "__qualname__",
        "__doc__",
        "__init_subclass__",
        "__subclasshook__",
        "__class_getitem__",
        "__twin_id__",
        "__reduce__",
        "__reduce_ex__",
        "__getstate__",
        "__setstate__",
        "__getnewargs__",
        "__getnewargs_ex__",
        "__copy__",
        "__deepcopy__",
        "__repr__",
        "__dir__",
        "__abstractmethods__",
        "_abc_impl",
        "__orig_bases__",
        "__parameters__",
        "__annotations__",
    ]
)

_INHERIT = object()

_METHOD_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    functools.partialmethod,
)


def _proxy_level(name: str, value: Any) -> Any:
    """What a proxy class holds for the native class's ``name = value``, or _INHERIT
    to keep what it inherits from the user's class."""
    if value is _MISSING or _is_internal(name) or name in _NEVER_FORWARDED:
        return _INHERIT
    if name == "__getattribute__":
        return object.__getattribute__  # a custom one runs natively, not on the proxy
    if name == "__del__":
        return _proxy_finalize
    if _is_local(value) or isinstance(value, type):
        return _INHERIT  # runs locally; a nested class is the local one
    if _is_dunder(name):
        if value is None:
            return None  # e.g. __hash__ = None: unhashable natively, unhashable here
        special = _SPECIAL_FORWARDERS.get(name)
        if special is not None:
            return special
        if callable(value) or isinstance(value, (classmethod, staticmethod, _ClassCallable)):
            return _forwarding_method(name)
        if hasattr(type(value), "__get__"):
            return _ForwardAttribute(name)
        return _INHERIT  # dunder data such as __match_args__
    if isinstance(value, (classmethod, staticmethod, _ClassCallable)):
        return _INHERIT  # _ClassCallable sends calls to the native class
    if isinstance(value, _METHOD_TYPES):
        return _forwarding_method(name)
    return _ForwardAttribute(name)


def _proxy_base_namespace(cls: type) -> Dict[str, Any]:
    return {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_cpy2py_proxy_of": cls,
        "__getattr__": _proxy_getattr,
        "__setattr__": _proxy_setattr,
        "__delattr__": _proxy_delattr,
        "__class__": _NativeClass(cls),
        "__dict__": _ForwardAttribute("__dict__"),
        "__repr__": _proxy_repr,
        "__dir__": _forwarding_method("__dir__"),
        "__copy__": _proxy_copy,
        "__deepcopy__": _proxy_deepcopy,
        "__reduce_ex__": _proxy_reduce_ex,
    }


#: Names every proxy class defines itself (never replaced or removed by a refresh).
_PROXY_OWN = frozenset(_proxy_base_namespace(object)) | {"__slots__"}


def proxy_class(cls: type) -> type:
    """The proxy class of ``cls`` (a TwinObject class), built on first use."""
    proxy_cls = _PROXY_OF.get(cls)
    if proxy_cls is not None:
        return proxy_cls
    if cls in _NATIVE_OF:
        return cls
    if not (isinstance(cls, TwinMeta) and issubclass(cls, TwinObject)):
        raise TypeError("%r is not a TwinObject class; it has no proxies" % (cls,))
    with _proxy_lock:
        proxy_cls = _PROXY_OF.get(cls)
        if proxy_cls is None:
            proxy_cls = _build_proxy_class(cls)
            _NATIVE_OF[proxy_cls] = cls
            _PROXY_OF[cls] = proxy_cls
    return proxy_cls


def _build_proxy_class(cls: type) -> type:
    namespace = _proxy_base_namespace(cls)
    for name, value in _class_namespace(cls).items():
        shadow = _proxy_level(name, value)
        if shadow is not _INHERIT:
            namespace[name] = shadow
    last_error: Optional[BaseException] = None
    for slots in ((REF_SLOT, "__weakref__"), (REF_SLOT,), None):
        attempt = dict(namespace)
        if slots is not None:
            attempt["__slots__"] = slots
        try:
            proxy_cls: type = TwinMeta(cls.__name__, (cls,), attempt)
        except TypeError as error:  # __weakref__ exists already, or a variable-size base
            last_error = error
            continue
        return proxy_cls
    assert last_error is not None
    raise last_error


def _allocate(proxy_cls: type) -> Any:
    try:
        return object.__new__(proxy_cls)
    except TypeError:  # a builtin base other than object
        for base in proxy_cls.__mro__:
            if base.__module__ == "builtins":
                return base.__new__(proxy_cls)  # type: ignore[call-overload]
        raise


def new_proxy(cls: type, owner: int, object_id: int) -> Any:
    """A new proxy of object ``object_id`` of peer ``owner``, of class ``cls``; its
    ``__init__`` does not run."""
    proxy = _allocate(proxy_class(cls))
    object.__setattr__(proxy, REF_SLOT, (owner, object_id))
    return proxy


def _refresh_proxies(cls: type, name: str) -> None:
    """After ``cls.name`` changed: update the proxy classes of ``cls`` and its
    subclasses."""
    if not _PROXY_OF or name in _PROXY_OWN:
        return
    with _proxy_lock:
        for native, proxy_cls in list(_PROXY_OF.items()):
            if cls not in native.__mro__:
                continue
            shadow = _proxy_level(name, _lookup(native, name))
            if shadow is _INHERIT:
                if name in vars(proxy_cls):
                    type.__delattr__(proxy_cls, name)
            else:
                type.__setattr__(proxy_cls, name, shadow)


_registry.register_twin_objects(TwinObject, _RemoteMethod, new_proxy, method_of)
