"""Python policy the Rust core calls: names, pickling, exceptions, ``__main__``.

Private. ``cpy2py._native`` calls these functions (the signatures are its contract);
the rest of the package uses the helpers at the bottom. Longer than 600 lines on
purpose: the one module the Rust glue calls back into, so that its contract is in
one place, in sections (names, pickling, objects, exceptions, ``__main__``).

Names. Functions and classes travel by reference, as ``(module, qualname)``
(:func:`global_name` on the sending side, :func:`resolve` on the receiving side).

``__main__``. The master's ``__main__`` module (the user's script) is known everywhere
under the alias :data:`MAIN_ALIAS`:

- in the master, :data:`MAIN_ALIAS` means ``sys.modules['__main__']``;
- in a twin, ``sys.modules['__main__']`` is the bootstrap (``cpy2py.twin``) until the
  alias is first needed; then the master's script is loaded as the module
  :data:`MAIN_ALIAS` (without running its ``if __name__ == "__main__":`` block) and
  both ``__main__`` and :data:`MAIN_ALIAS` refer to it. Pickles and names that say
  ``__main__`` or :data:`MAIN_ALIAS` resolve to it.

TwinObjects. Native TwinObjects and proxies travel by reference. The Rust core
converts them where they appear as values, asking :func:`proxy_ref` (is it a proxy,
of which remote object?) and :func:`make_proxy` (a new proxy for a reference it has
no live proxy for). Inside pickles they stand as positions: :func:`dumps` returns
``(data, references)`` when it met any (``references`` lists them by position), and
:func:`loads` takes that list back, as local objects.
"""

from __future__ import annotations

import array
import collections
import copyreg
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import pickle
import site
import sys
import traceback
import time
import types
from typing import Any, Dict, List, Optional, Tuple, Type, cast

from . import _native, _registry, _remote, _routing, errors, kernel_state

__all__ = [
    "MAIN_ALIAS",
    "global_name",
    "resolve",
    "dumps",
    "loads",
    "describe_exception",
    "rebuild_exception",
    "main_module_spec",
    "make_proxy",
    "proxy_ref",
    "is_native_twin_object",
]

#: Module name under which the master's ``__main__`` is known in every interpreter.
MAIN_ALIAS = "__cpy2py_main__"
#: Where a twin keeps its bootstrap module once ``__main__`` is the master's script.
BOOTSTRAP_ALIAS = "__cpy2py_bootstrap__"

_log = logging.getLogger("__cpy2py__.runtime")

#: Whether this process is a twin (set once by :func:`install_twin_main`).
_IS_TWIN = False

# --------------------------------------------------------------------------- names

#: ``id(obj) -> (obj, (module, qualname))`` for objects known to be reachable by name.
#: Holding ``obj`` keeps its id from being reused while the entry exists. Only objects
#: reachable from a module (so alive anyway) get in, and the size is capped.
_GLOBAL_CACHE: Dict[int, Tuple[object, Tuple[str, str]]] = {}
_GLOBAL_CACHE_LIMIT = 4096
#: ``(module, qualname) -> object`` for names resolved here.
_RESOLVE_CACHE: Dict[Tuple[str, str], object] = {}


def global_name(obj: object) -> tuple[str, str] | None:
    """``(module, qualname)`` under which ``obj`` can be found by reference, or None.

    True for functions, builtins, classes and anything else whose ``__module__`` and
    ``__qualname__`` lead back to the very same object (and whose qualname has no
    ``<locals>`` or ``<lambda>``). The master's ``__main__`` is reported as
    :data:`MAIN_ALIAS`.
    """
    entry = _GLOBAL_CACHE.get(id(obj))
    if entry is not None and entry[0] is obj:
        return entry[1]
    name = _find_global_name(obj)
    if name is not None:
        if len(_GLOBAL_CACHE) >= _GLOBAL_CACHE_LIMIT:
            _GLOBAL_CACHE.clear()
        _GLOBAL_CACHE[id(obj)] = (obj, name)
    return name


def _find_global_name(obj: object) -> tuple[str, str] | None:
    try:
        module_name = obj.__module__
        qualname = obj.__qualname__  # type: ignore[attr-defined]
    except Exception:
        return None
    if type(module_name) is not str or type(qualname) is not str or "<" in qualname:
        return None
    if module_name == "__main__" or module_name == MAIN_ALIAS:
        wire_module = MAIN_ALIAS
        if _IS_TWIN:
            module = sys.modules.get(MAIN_ALIAS)  # never load the script just to look
        else:
            module = sys.modules.get("__main__")
    else:
        wire_module = module_name
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except Exception:
                return None
    if module is None:
        return None
    found: Any = module
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    if found is not obj and not (isinstance(obj, type) and _PROXY_NATIVE.get(obj) is found):
        return None  # (a proxy class travels as the class it stands for)
    return (wire_module, qualname)


def resolve(module: str, qualname: str) -> object:
    """The object named ``qualname`` in ``module``, importing ``module`` if needed.

    :data:`MAIN_ALIAS` and ``'__main__'`` mean the master's main module. Raises
    ImportError or AttributeError naming what was looked up and where.
    """
    key = (module, qualname)
    try:
        return _RESOLVE_CACHE[key]
    except KeyError:
        pass
    found: Any = _import_module(module, qualname)
    walked = []
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as error:
            walked.append(part)
            raise AttributeError(
                "cannot resolve %s.%s in %s: %r has no attribute %r"
                % (module, qualname, _here(), ".".join([module] + walked[:-1]), part)
            ) from error
        walked.append(part)
    _RESOLVE_CACHE[key] = found
    return found


def _import_module(module: str, qualname: str) -> Any:
    if module == "__main__" or module == MAIN_ALIAS:
        if not _IS_TWIN:
            return sys.modules["__main__"]
        module = MAIN_ALIAS
    found = sys.modules.get(module)
    if found is not None and not getattr(getattr(found, "__spec__", None), "_initializing", False):
        return found
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = "cannot import module %r in %s (needed for %s.%s): %s" % (
            module,
            _here(),
            module,
            qualname,
            error,
        )
        try:
            clear = type(error)(message, name=error.name, path=error.path)
        except Exception:
            clear = ImportError(message, name=error.name, path=error.path)
        raise clear from error


def _here() -> str:
    if kernel_state.is_master():
        return "the master %r" % (kernel_state.TWIN_ID,)
    return "twinterpreter %r" % (kernel_state.TWIN_ID,)


# ------------------------------------------------------------------------- pickling


#: What :mod:`cpy2py.twinobject` registered (the TwinObject base, proxies, methods).
_TWIN_OBJECTS = _registry.TWIN_OBJECTS
#: Proxy class -> the user's class it stands for.
_PROXY_NATIVE = _registry.PROXY_NATIVE


def _reference(position: int) -> object:
    """In a pickle, stands for the TwinObject at ``position`` of the references that
    travel beside it; :class:`_Unpickler` resolves it."""
    raise pickle.UnpicklingError("the pickle refers to objects passed by reference, and none came with it")


def _method_reference(position: int, name: str) -> object:
    """In a pickle, stands for method ``name`` of the TwinObject at ``position``."""
    raise pickle.UnpicklingError("the pickle refers to objects passed by reference, and none came with it")


#: Types of bound methods, which go as ``_method_reference`` when their object
#: goes by reference.
_METHOD_TYPES = frozenset(
    {types.MethodType, types.BuiltinMethodType, types.MethodWrapperType, _remote.RemoteMethod}
)
_MISSING = object()
_VERDICTS = _remote.VERDICTS


class _Pickler(pickle.Pickler):
    """Pickler of values crossing to another interpreter.

    Objects that go by reference are not pickled: :meth:`reducer_override`
    replaces each with its position in :attr:`references` (``_reference(position)``
    in the pickle), and they travel by reference beside the pickle. Those are
    TwinObjects and proxies, and whatever :mod:`cpy2py._remote` says cannot or must
    not go by value to :attr:`dst` (generators, locks, files, ``by_ref(...)``,
    objects of classes ``dst`` cannot import). (A reducer override rather than
    ``persistent_id``: the C pickler calls it only for objects of types without a
    fast path, so ints, strs, lists and dicts cost nothing.)
    """

    #: Objects met that go by reference, by position (None until one is met)
    references: Optional[List[object]] = None
    #: The peer the pickle is for (None: no peer, nothing goes by reference but
    #: TwinObjects and proxies).
    dst: Optional[int] = None
    #: The object to pickle by value whatever its type says (``by_value``).
    forced: object = _MISSING
    #: An object that goes by reference wherever it appears.
    referenced: object = _MISSING

    def reducer_override(self, obj: Any) -> Any:
        """How an object that goes by reference (or a method bound to one) is
        pickled: as its position. Anything else: ``NotImplemented``."""
        if self._by_reference(obj):
            if type(obj) is _remote.ByRef:
                obj = obj.obj
            return (_reference, (self._position(obj),))
        if type(obj) in _METHOD_TYPES:
            owner = getattr(obj, "__self__", None)
            if owner is not None and not isinstance(owner, types.ModuleType) and self._by_reference(owner):
                return (_method_reference, (self._position(owner), obj.__name__))
        return NotImplemented

    def _by_reference(self, obj: Any) -> bool:
        if isinstance(obj, _TWIN_OBJECTS.base) or isinstance(obj, _remote.RemoteObject):
            return True
        if obj is self.referenced:
            return True
        cls = type(obj)
        verdict = _VERDICTS.get(cls, _MISSING)
        if verdict is _MISSING:
            verdict = _remote.static_verdict(cls)
        if verdict is False or obj is self.forced:
            return False
        if verdict is True:
            return True
        return self.dst is not None and not _remote.importable_in(self.dst, verdict)

    def _position(self, obj: object) -> int:
        # once per object: the pickle's memo refers back to it for later occurrences
        references = self.references
        if references is None:
            references = self.references = []
        references.append(obj)
        return len(references) - 1


def _reduce_method(method: Any) -> Any:
    return (getattr, (method.__self__, method.__name__))


if sys.implementation.name == "pypy":
    # PyPy pickles bound builtin methods ([].count) with its own _pickle_support
    # module, which CPython lacks; pickle them the portable way, as CPython does.
    # (Not needed on CPython, whose C pickler would pay for a dispatch table.)
    _methods: Dict[type, Any] = {types.MethodType: _reduce_method}
    # a view of copyreg's live table (typeshed types it narrower than ChainMap wants)
    _copyreg_table = cast(Dict[type, Any], copyreg.dispatch_table)
    _Pickler.dispatch_table = collections.ChainMap(_methods, _copyreg_table)


class _Unpickler(pickle.Unpickler):
    """Unpickler of values from another interpreter; maps the ``__main__`` alias and
    resolves references to the objects that came with the pickle."""

    def __init__(self, file: Any, references: Optional[List[object]], buffers: Optional[List[Any]] = None) -> None:
        if buffers is None:
            super().__init__(file)
        else:
            super().__init__(file, buffers=buffers)
        self.references = references

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__" or module == MAIN_ALIAS:
            module = MAIN_ALIAS if _IS_TWIN else "__main__"
        elif module == __name__ and self.references is not None:
            if name == "_reference":
                return self._reference
            if name == "_method_reference":
                return self._method_reference
        return super().find_class(module, name)

    def _reference(self, position: int) -> object:
        try:
            return self.references[position]  # type: ignore[index]
        except (IndexError, TypeError):
            raise pickle.UnpicklingError(
                "the pickle refers to object %r passed by reference; %d came with it"
                % (position, len(self.references or ()))
            ) from None

    def _method_reference(self, position: int, name: str) -> object:
        owner = self._reference(position)
        if isinstance(owner, _remote.RemoteObject):
            return _remote.RemoteMethod(owner, name)
        if isinstance(owner, _TWIN_OBJECTS.base):
            return _TWIN_OBJECTS.method_of(owner, name)
        return getattr(owner, name)  # a native object of ours, back home


#: Buffers from this size on travel out of band (protocol 5): written from their
#: object's memory, not copied into the pickle.
OUT_OF_BAND_MIN = 32 * 1024


def _received_base(view: memoryview) -> Any:
    """The buffer that arrived here under ``view`` when ``view`` shows all of it,
    else ``view``: a received buffer is sent on as itself, so that no view of it
    is handed to C (PyPy keeps such a view, and so the buffer, alive forever)."""
    base: Any = view.obj
    while type(base) is memoryview:
        base = base.obj
    if type(base) is _native.ReceivedBuffer and len(base) == view.nbytes:
        return base
    return view


def dumps(
    obj: object,
    protocol: int,
    flat: bool = False,
    dst: Optional[int] = None,
    referenced: object = None,
    out_of_band: bool = False,
) -> Any:
    """Pickle ``obj`` to send it to peer ``dst``.

    Returns the pickle (bytes), or ``(pickle, references)`` when ``obj`` holds
    objects that go by reference (see :class:`_Pickler`): ``references`` lists
    them, to travel beside the pickle and be given to :func:`loads` on the other
    side. A :class:`cpy2py._remote.ByValue` is unwrapped and its object pickled by
    value whatever its type says, and ``referenced`` (when not None) goes by
    reference wherever it appears. Raises :class:`cpy2py.errors.UnpicklableError`
    naming the object and the reason.

    ``flat`` says that ``obj`` is a container of atoms only (None, bools, ints,
    floats, strs, bytes), which nothing can share or refer back to: it is pickled
    without the memo ("fast" mode), in half the time for a dict of 10k strs.

    With ``out_of_band`` (and protocol 5), contiguous buffers of at least
    :data:`OUT_OF_BAND_MIN` bytes (numpy arrays, any ``PickleBuffer``)
    are left out of the pickle: the result is then ``(pickle, references or None,
    buffers)``, ``buffers`` being flat ``memoryview``s for :func:`loads`.
    """
    buffer = io.BytesIO()
    views: List[memoryview] = []
    if out_of_band and protocol >= 5:

        def in_band(pickle_buffer: Any) -> bool:
            try:
                view = pickle_buffer.raw()
            except BufferError:  # not contiguous: pickled in band
                return True
            if view.nbytes < OUT_OF_BAND_MIN:
                return True
            views.append(_received_base(view))
            return False

        pickler = _Pickler(buffer, protocol, buffer_callback=in_band)
    else:
        pickler = _Pickler(buffer, protocol)
    pickler.dst = dst
    if referenced is not None:
        pickler.referenced = referenced
    if type(obj) is _remote.ByValue:
        obj = pickler.forced = obj.obj
    if flat:
        pickler.fast = True
    try:
        pickler.dump(obj)
    except Exception as error:
        raise errors.UnpicklableError.for_object(obj, error) from error
    if views:
        return buffer.getvalue(), pickler.references, views
    if pickler.references:
        return buffer.getvalue(), pickler.references
    return buffer.getvalue()


def loads(data: bytes, references: Optional[List[object]] = None, buffers: Optional[List[Any]] = None) -> object:
    """Unpickle what :func:`dumps` made in another interpreter; ``references`` are
    the local objects (native TwinObjects or proxies) its references stand for,
    ``buffers`` its out-of-band buffers."""
    unpickler = _Unpickler(io.BytesIO(data), references, buffers)
    try:
        return unpickler.load()
    finally:
        # Its memo holds its own bound methods (the classes find_class gave):
        # a cycle that would keep the references, and so remote objects, alive
        # until the next garbage collection.
        unpickler.memo = {}
        unpickler.references = None


def peer_gone(peer: int) -> None:
    """Peer number ``peer`` ended: forget the routes to it this process cached,
    and what it could import."""
    _routing.forget_peer_number(peer)
    _remote.forget_peer(peer)


def pack_numbers(items: List[Any]) -> Optional[Tuple[str, bytes]]:
    """``("q", bytes)`` for a list of ints that all fit in 64 signed bits,
    ``("d", bytes)`` for a list of floats (packed little-endian), else ``None``.

    Used on PyPy, whose ``array`` module packs a list several times faster than
    pickle or a call through cpyext per item; CPython packs in Rust.
    """
    kind = {int: "q", float: "d"}.get(type(items[0]))
    if kind is None:
        return None
    wanted = type(items[0])
    for item in items:
        if type(item) is not wanted:  # bools and subclasses keep their type via pickle
            return None
    try:
        packed = array.array(kind, items)
    except OverflowError:
        return None
    if sys.byteorder != "little":
        packed.byteswap()
    return kind, packed.tobytes()


def unpack_numbers(kind: str, data: bytes) -> List[Any]:
    """The list :func:`pack_numbers` packed."""
    packed = array.array(kind, data)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


# ------------------------------------------------------------------------- objects


def make_proxy(module: str, qualname: str, owner: int, object_id: int) -> object:
    """A new proxy of object ``object_id`` of peer ``owner``, whose class is
    ``module.qualname``; its ``__init__`` does not run.

    Called by the Rust core only for a reference it has no live proxy for (it keeps
    the identity table and a weak reference to the proxy).
    """
    return _TWIN_OBJECTS.new_proxy(resolve(module, qualname), owner, object_id)  # type: ignore[arg-type]


def proxy_ref(obj: object) -> tuple[int, int] | None:
    """``(owner peer, object id)`` if ``obj`` is a proxy, else None."""
    if type(obj) in _PROXY_NATIVE or isinstance(obj, _remote.RemoteObject):
        return obj._cpy2py_ref  # type: ignore[attr-defined,no-any-return]
    return None


def is_native_twin_object(obj: object) -> bool:
    """Whether ``obj`` is a TwinObject native to this interpreter (not a proxy)."""
    return isinstance(obj, _TWIN_OBJECTS.base) and type(obj) not in _PROXY_NATIVE


# ----------------------------------------------------------------------- exceptions


def _type_path(cls: type) -> str:
    module = getattr(cls, "__module__", None) or "builtins"
    if module == MAIN_ALIAS:
        module = "__main__"
    return "%s.%s" % (module, getattr(cls, "__qualname__", cls.__name__))


def describe_exception(
    exc: BaseException, protocol: int, tb: types.TracebackType | None = None
) -> tuple[str, str, str, Any]:
    """``(type path, str(exc), formatted traceback, pickle or None)`` of ``exc``.

    The pickle is what :func:`dumps` returns: bytes, or bytes and the TwinObjects
    they refer to.

    The traceback text includes chained causes and contexts. ``tb`` is used when
    ``exc.__traceback__`` is not set. The pickle is None when ``exc`` cannot be
    pickled or its pickle does not load back.
    """
    cls = type(exc)
    type_path = _type_path(cls)
    try:
        message = str(exc)
    except Exception:
        message = "<exception str() failed>"
    if tb is None:
        tb = exc.__traceback__
    try:
        tb_text = "".join(traceback.format_exception(cls, exc, tb))
    except Exception:
        tb_text = "%s: %s\n(traceback could not be formatted)\n" % (type_path, message)
    pickled: Any = None
    try:
        data = dumps(exc, protocol)
        # TwinObjects inside travel by reference beside the bytes, as in values.
        if type(data) is tuple:
            loads(data[0], data[1])
        else:
            loads(data)
    except Exception as error:
        _log.debug("exception %s cannot cross by pickle: %s", type_path, error)
    else:
        pickled = data
    return type_path, message, tb_text, pickled


def rebuild_exception(
    type_path: str,
    message: str,
    traceback: str,
    pickled: bytes | None,
    twin_id: str,
    references: Optional[List[Any]] = None,
) -> BaseException:
    """The local exception for one raised in ``twin_id``.

    The unpickled original with an :class:`~cpy2py.errors.RemoteTraceback` as its
    ``__cause__``, or a :class:`~cpy2py.errors.RemoteException` carrying type name,
    message and traceback text when it cannot be unpickled.
    """
    if pickled is not None:
        try:
            exc = loads(pickled, references) if references else loads(pickled)
        except Exception as error:
            _log.debug("exception %s from %r does not unpickle: %s", type_path, twin_id, error)
        else:
            if isinstance(exc, BaseException):
                exc.__cause__ = errors.RemoteTraceback(
                    "Traceback in twinterpreter %r:\n%s" % (twin_id, traceback)
                )
                return exc
    return errors.RemoteException(type_path, message, traceback, twin_id=twin_id)


# ------------------------------------------------------------------------- __main__


def main_module_spec() -> Dict[str, Any]:
    """What a twin needs to import the master's ``__main__`` and the user's modules.

    ``{'path': absolute path of the main script or None, 'module': its module name
    when run with ``-m`` or None, 'sys_path': [...]}``. Both are None when there is no
    main file (``python -c``, stdin, REPL). ``sys_path`` lists the master's
    ``sys.path`` entries outside the interpreter's own installation (prefixes and
    site-packages), absolute, in order.
    """
    main = sys.modules.get("__main__")
    path: Optional[str] = None
    module: Optional[str] = None
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if isinstance(spec_name, str) and spec_name and spec_name != "__main__":
        module = spec_name
    else:
        main_file = getattr(main, "__file__", None)
        if isinstance(main_file, str) and main_file and os.path.isfile(main_file):
            path = os.path.abspath(main_file)
    return {"path": path, "module": module, "sys_path": _user_sys_path()}


def _user_sys_path() -> List[str]:
    own: List[str] = []
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, getattr(sys, "base_exec_prefix", None)):
        if prefix:
            own.append(os.path.realpath(prefix))
    try:
        own.extend(os.path.realpath(p) for p in site.getsitepackages())
    except Exception:  # old virtualenv's site module
        pass
    try:
        own.append(os.path.realpath(site.getusersitepackages()))
    except Exception:
        pass
    result: List[str] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        absolute = os.path.abspath(entry or os.curdir)
        real = os.path.realpath(absolute)
        if any(real == p or real.startswith(p.rstrip(os.sep) + os.sep) for p in own):
            continue
        if not os.path.exists(absolute) or absolute in result:
            continue
        result.append(absolute)
    return result


def become_master() -> None:
    """Make :data:`MAIN_ALIAS` importable in the master (it is ``__main__``)."""
    if _IS_TWIN:
        raise RuntimeError("this process is twinterpreter %r, not a master" % (kernel_state.TWIN_ID,))
    main = sys.modules.get("__main__")
    if main is not None:
        sys.modules.setdefault(MAIN_ALIAS, main)


class _MainLoader(importlib.abc.Loader):
    """Executes the master's main script (or ``-m`` module) as :data:`MAIN_ALIAS`."""

    def __init__(self, path: str, package: Optional[str], run_main: bool) -> None:
        self.path = path
        self.package = package
        self.run_main = run_main

    def is_package(self, fullname: str) -> bool:
        return False

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        if self.path.endswith((".pyc", ".pyo")):
            compiled = importlib.machinery.SourcelessFileLoader(MAIN_ALIAS, self.path).get_code(MAIN_ALIAS)
            if compiled is None:
                raise ImportError("no code in the master's main file %s" % (self.path,))
            code = compiled
        else:
            with io.open_code(self.path) as source_file:
                source = source_file.read()
            code = compile(source, self.path, "exec", dont_inherit=True)
        if self.package is not None:
            module.__package__ = self.package
        if self.run_main:
            module.__name__ = "__main__"
        previous_main = sys.modules.get("__main__")
        sys.modules["__main__"] = module
        _log.debug("loading the master's __main__ from %s (run_main=%s)", self.path, self.run_main)
        try:
            exec(code, module.__dict__)
        except BaseException:
            if previous_main is not None:
                sys.modules["__main__"] = previous_main
            raise


class _ImportAsMainLoader(importlib.abc.Loader):
    """Fallback for a ``-m`` module that is not a plain source file: import it under
    its own name and let :data:`MAIN_ALIAS` refer to it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        # the import system returns whatever sys.modules[MAIN_ALIAS] is afterwards
        sys.modules[MAIN_ALIAS] = importlib.import_module(self.name)


class _MainFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`MAIN_ALIAS` in a twin: the master's main script, loaded lazily."""

    def __init__(self, config: Optional[Dict[str, Any]]) -> None:
        self.config = config or {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != MAIN_ALIAS:
            return None
        config = self.config
        run_main = bool(config.get("run_main"))
        if config.get("path"):
            main_path = config["path"]
            if not os.path.exists(main_path):
                raise ModuleNotFoundError(
                    "the master's __main__ script %r does not exist in twinterpreter %r"
                    % (main_path, kernel_state.TWIN_ID),
                    name=MAIN_ALIAS,
                )
            loader: importlib.abc.Loader = _MainLoader(main_path, None, run_main)
            origin = main_path
        elif config.get("module"):
            name = config["module"]
            real = importlib.util.find_spec(name)
            if real is None:
                raise ModuleNotFoundError(
                    "the master's __main__ module %r is not importable in twinterpreter %r"
                    % (name, kernel_state.TWIN_ID),
                    name=MAIN_ALIAS,
                )
            if isinstance(real.loader, importlib.machinery.SourceFileLoader) and real.origin:
                loader = _MainLoader(real.origin, real.parent, run_main)
                origin = real.origin
            else:
                loader = _ImportAsMainLoader(name)
                origin = real.origin or name
        else:
            reason = config.get("reason") or "the master has no __main__ file"
            raise ModuleNotFoundError(
                "the master's __main__ is not available in twinterpreter %r: %s"
                % (kernel_state.TWIN_ID, reason),
                name=MAIN_ALIAS,
            )
        spec = importlib.util.spec_from_loader(MAIN_ALIAS, loader, origin=origin)
        if spec is not None and isinstance(loader, _MainLoader):
            spec.has_location = True
        return spec


def install_twin_main(config: Optional[Dict[str, Any]]) -> None:
    """Set this twin up to load the master's ``__main__`` on first use.

    ``config`` is ``{'path': ..., 'module': ..., 'run_main': bool, 'reason': ...}`` or
    None (no alias). Called once by the twin bootstrap before serving.
    """
    global _IS_TWIN
    _IS_TWIN = True
    bootstrap = sys.modules.get("__main__")
    if bootstrap is not None:
        sys.modules[BOOTSTRAP_ALIAS] = bootstrap
        if sys.modules.get(MAIN_ALIAS) is bootstrap:
            del sys.modules[MAIN_ALIAS]
    _GLOBAL_CACHE.clear()
    _RESOLVE_CACHE.clear()
    sys.meta_path.insert(0, _MainFinder(config))


def load_main() -> Any:
    """Load the master's ``__main__`` now (for ``run_main``)."""
    return importlib.import_module(MAIN_ALIAS)


def poll_signals() -> None:
    """Runs pending signal handlers (Ctrl-C) and other pending actions on
    interpreters where ``PyErr_CheckSignals`` does not (PyPy's cpyext, which also
    frees the objects made through its C API in an action): they run at a
    backward jump in bytecode, which this loop provides."""
    for _ in range(2):
        pass


def absorb_cancel(cancelled: Type[BaseException], seconds: float) -> bool:
    """Runs bytecode until ``cancelled``, scheduled for this thread by a cancel that
    came as its call returned, is raised (PyPy cannot withdraw it): True if it was
    within ``seconds``."""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            pass
    except cancelled:
        return True
    return False
