"""Functions and classes of the cpy2py 0.17 compatibility tests (``test_compat``).

Imported by name in every interpreter of a test run, so this module must import
without pytest and run on Python 3.9 (PyPy).
"""

import importlib
import os

import cpy2py
from cpy2py import TwinObject, kernel_state, twinfunction
from twinhelpers import FRESH_IDS, TWIN_IDS

# -- group state -------------------------------------------------------------------

_RECORDED = []


def record(*args, **kwargs):
    """An initializer: notes where it ran and with what."""
    _RECORDED.append((kernel_state.TWIN_ID, args, kwargs))


def recorded():
    return list(_RECORDED)


def clear_recorded():
    del _RECORDED[:]


def fail_to_initialize(message):
    raise RuntimeError(message)


def register_from_twin(kind, tag, init_existing):
    """Run in a twin: registers :func:`record` with the group state, via the path
    cpy2py 0.17 gave it."""
    from cpy2py.kernel import state

    getattr(state.TWIN_GROUP_STATE, "add_" + kind)(record, tag, init_existing=init_existing)


# -- ids ---------------------------------------------------------------------------

ID_ENV = ("__CPY2PY_TWIN_ID__", "__CPY2PY_MASTER_ID__")


def ids():
    """This interpreter's ids, what ``is_twinterpreter`` says with either spelling,
    and whether the id variables are still in the environment."""
    return {
        "TWIN_ID": kernel_state.TWIN_ID,
        "MASTER_ID": kernel_state.MASTER_ID,
        "kernel_id=TWIN_ID": kernel_state.is_twinterpreter(kernel_id=kernel_state.TWIN_ID),
        "twin_id=TWIN_ID": kernel_state.is_twinterpreter(twin_id=kernel_state.TWIN_ID),
        "positional TWIN_ID": kernel_state.is_twinterpreter(kernel_state.TWIN_ID),
        "kernel_id=other": kernel_state.is_twinterpreter(kernel_id="compat-no-such-twin"),
        "twin_id=other": kernel_state.is_twinterpreter(twin_id="compat-no-such-twin"),
        "env": {name: os.environ.get(name) for name in ID_ENV},
        "MasterThing": MasterThing.__twin_id__,
        "NoneThing": NoneThing.__twin_id__,
    }


class MasterThing(TwinObject):
    """Native to the master: no ``__twin_id__``."""

    def twin_ids(self):
        return (kernel_state.TWIN_ID, self.__twin_id__, type(self).__twin_id__)


class NoneThing(TwinObject):
    """Native to the master: ``__twin_id__ = None``."""

    __twin_id__ = None


def twin_id_of(obj):
    return obj.__twin_id__


# -- twinfunctions -----------------------------------------------------------------


@twinfunction(kernel_state.MASTER_ID)
def in_master(value: int) -> tuple:
    """Runs in the master."""
    return (kernel_state.TWIN_ID, value)


@twinfunction(kernel_state.TWIN_ID)
def native_everywhere(value):
    """Native wherever this module is imported."""
    return value


@twinfunction(TWIN_IDS["cpython"])
def in_twin_cpython(value):
    return (kernel_state.TWIN_ID, value)


@twinfunction(TWIN_IDS["pypy"])
def in_twin_pypy(value):
    return (kernel_state.TWIN_ID, value)


IN_TWIN = {"cpython": in_twin_cpython, "pypy": in_twin_pypy}


@twinfunction(FRESH_IDS["cpython"])
def in_fresh_cpython(value):
    return (kernel_state.TWIN_ID, value)


@twinfunction(FRESH_IDS["pypy"])
def in_fresh_pypy(value):
    return (kernel_state.TWIN_ID, value)


IN_FRESH = {"cpython": in_fresh_cpython, "pypy": in_fresh_pypy}


def call_in_fresh(flavour, value):
    """Run in a twin: calls the twinfunction pinned to the ``flavour`` fresh twin."""
    return IN_FRESH[flavour](value)


FUNCTION_META = ("__name__", "__qualname__", "__doc__", "__module__", "__annotations__", "__defaults__")


def function_facts(name):
    """What this module's twinfunction ``name`` is here: wrapped or plain, and its
    metadata."""
    func = globals()[name]
    facts = {attr: getattr(func, attr) for attr in FUNCTION_META}
    facts["wrapped"] = hasattr(func, "__wrapped__")
    facts["__twin_id__"] = func.__twin_id__
    return facts


# -- module paths of cpy2py 0.17 ---------------------------------------------------

#: (module path, name, the object it must be)
ALIASES = (
    ("cpy2py.proxy.baseclass", "TwinObject", cpy2py.TwinObject),
    ("cpy2py.proxy.baseclass", "localmethod", cpy2py.localmethod),
    ("cpy2py.proxy.function", "twinfunction", cpy2py.twinfunction),
    ("cpy2py.twinterpreter.master", "TwinMaster", cpy2py.TwinMaster),
    ("cpy2py.kernel.exceptions", "TwinterpeterUnavailable", cpy2py.TwinterpeterUnavailable),
    ("cpy2py.kernel.exceptions", "TwinterpeterTerminated", cpy2py.TwinterpeterTerminated),
    ("cpy2py.twinterpreter.exceptions", "TwinterpreterUnavailable", cpy2py.TwinterpreterUnavailable),
    ("cpy2py.twinterpreter.exceptions", "TwinterpreterTerminated", cpy2py.TwinterpreterTerminated),
    ("cpy2py.utility.compat", "range", range),
    ("cpy2py.utility.compat", "unicode_str", str),
)


def alias_facts():
    """``[(path, name, is it ours)]`` for each old path, plus the module paths that
    must be our modules themselves."""
    import logging

    facts = [(path, name, getattr(importlib.import_module(path), name) is ours) for path, name, ours in ALIASES]
    from cpy2py.kernel import state
    from cpy2py.proxy.proxy import InstanceProxy
    from cpy2py.twinterpreter.group_state import TwinGroupState
    from cpy2py.utility import compat

    import cpy2py.kernel.state

    facts += [
        ("cpy2py.kernel.state", "module", state is kernel_state and cpy2py.kernel.state is kernel_state),
        ("cpy2py.proxy.proxy", "InstanceProxy", isinstance(InstanceProxy, type)),
        ("cpy2py.twinterpreter.group_state", "TwinGroupState", isinstance(kernel_state.TWIN_GROUP_STATE, TwinGroupState)),
        ("cpy2py.utility.compat", "stringabc", compat.stringabc == (str, bytes)),
        ("cpy2py.utility.compat", "NullHandler", compat.NullHandler is logging.NullHandler),
    ]
    return facts
