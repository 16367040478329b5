"""``cpy2py._runtime``, the Python policy the Rust core calls, tested in-process."""

import collections
import functools
import os
import sys
import pickle
import threading

import pytest

import twinhelpers
from cpy2py import _runtime, errors, kernel_state


def module_level_function():
    return 1


class ModuleLevelClass(object):
    class Nested(object):
        def method(self):
            return 2


def test_global_name_of_functions_classes_and_builtins():
    assert _runtime.global_name(module_level_function) == (__name__, "module_level_function")
    assert _runtime.global_name(ModuleLevelClass) == (__name__, "ModuleLevelClass")
    assert _runtime.global_name(ModuleLevelClass.Nested) == (__name__, "ModuleLevelClass.Nested")
    assert _runtime.global_name(ModuleLevelClass.Nested.method) == (
        __name__,
        "ModuleLevelClass.Nested.method",
    )
    assert _runtime.global_name(len) == ("builtins", "len")
    assert _runtime.global_name(collections.OrderedDict) == ("collections", "OrderedDict")
    assert _runtime.global_name(twinhelpers.echo) == ("twinhelpers", "echo")
    # the twinfunction wrapper is what the name finds
    assert _runtime.global_name(twinhelpers.where_master) == ("twinhelpers", "where_master")
    # cached answers stay right
    for _ in range(3):
        assert _runtime.global_name(module_level_function) == (__name__, "module_level_function")


def test_global_name_refuses_what_is_not_reachable_by_name():
    def local_function():
        return 3

    assert _runtime.global_name(lambda: 1) is None
    assert _runtime.global_name(local_function) is None
    assert _runtime.global_name(functools.partial(module_level_function)) is None
    assert _runtime.global_name(ModuleLevelClass.Nested().method) is None  # bound method
    assert _runtime.global_name([].append) is None
    assert _runtime.global_name(object()) is None
    assert _runtime.global_name(42) is None
    assert _runtime.global_name("module_level_function") is None


def test_global_name_checks_identity():
    def impostor():
        return 4

    impostor.__module__ = __name__
    impostor.__qualname__ = "module_level_function"
    assert _runtime.global_name(impostor) is None


def test_master_main_is_named_by_the_alias(monkeypatch):
    main = sys.modules["__main__"]

    def script_function():
        return 5

    script_function.__module__ = "__main__"
    script_function.__qualname__ = "cpy2py_test_script_function"
    monkeypatch.setattr(main, "cpy2py_test_script_function", script_function, raising=False)
    assert _runtime.global_name(script_function) == (_runtime.MAIN_ALIAS, "cpy2py_test_script_function")
    assert _runtime.resolve(_runtime.MAIN_ALIAS, "cpy2py_test_script_function") is script_function
    assert _runtime.resolve("__main__", "cpy2py_test_script_function") is script_function


def test_resolve_finds_nested_names_and_imports():
    assert _runtime.resolve(__name__, "ModuleLevelClass.Nested") is ModuleLevelClass.Nested
    assert _runtime.resolve("builtins", "len") is len
    assert _runtime.resolve("os.path", "join") is os.path.join
    import json.decoder

    assert _runtime.resolve("json.decoder", "JSONDecoder") is json.decoder.JSONDecoder


def test_resolve_errors_name_what_was_missing():
    with pytest.raises(ImportError) as missing_module:
        _runtime.resolve("cpy2py_no_such_module_for_tests", "f")
    assert "cpy2py_no_such_module_for_tests" in str(missing_module.value)
    assert isinstance(missing_module.value, ModuleNotFoundError)
    with pytest.raises(AttributeError) as missing_attribute:
        _runtime.resolve(__name__, "ModuleLevelClass.Missing")
    assert "ModuleLevelClass.Missing" in str(missing_attribute.value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        [1, "two", (3.0, b"four")],
        {"set": {1, 2}, "frozen": frozenset("ab")},
        collections.OrderedDict([("b", 1), ("a", 2)]),
        twinhelpers.Color.GREEN,
        twinhelpers.Point(1, 2),
        twinhelpers.Box([1]),
        module_level_function,
        ModuleLevelClass,
    ],
    ids=repr,
)
def test_dumps_loads_round_trip(value):
    copy = _runtime.loads(_runtime.dumps(value, 4))
    assert copy == value
    assert type(copy) is type(value)


@pytest.mark.parametrize(
    "make, fragment",
    [(lambda: (lambda: 1), "lambda"), (lambda: [1, {"deep": lambda: 1}], "lambda")],
    ids=["lambda", "nested-lambda"],
)
def test_dumps_raises_unpicklable_error(make, fragment):
    obj = make()
    with pytest.raises(errors.UnpicklableError) as info:
        _runtime.dumps(obj, 4)
    message = str(info.value)
    assert fragment in message.lower()
    assert repr(obj)[:50] in message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("nested", [False, True], ids=["lock", "nested-lock"])
def test_dumps_leaves_what_never_pickles_to_travel_by_reference(nested):
    lock = threading.Lock()
    data, references = _runtime.dumps([1, {"deep": lock}] if nested else lock, 4)
    assert references == [lock]
    copy = _runtime.loads(data, [lock])
    assert (copy[1]["deep"] if nested else copy) is lock


def raise_it(exc):
    raise exc


def test_describe_and_rebuild_a_picklable_exception():
    try:
        raise_it(twinhelpers.CustomError("broken", code=7))
    except twinhelpers.CustomError as caught:
        described = _runtime.describe_exception(caught, 4)
    type_path, message, traceback_text, pickled = described
    assert type_path == "twinhelpers.CustomError"
    assert message == "broken"
    assert "raise_it" in traceback_text
    assert "CustomError: broken" in traceback_text
    assert pickled is not None
    rebuilt = _runtime.rebuild_exception(type_path, message, traceback_text, pickled, "somewhere")
    assert type(rebuilt) is twinhelpers.CustomError
    assert rebuilt.code == 7
    assert str(rebuilt) == "broken"
    assert isinstance(rebuilt.__cause__, errors.RemoteTraceback)
    assert str(rebuilt.__cause__) == "Traceback in twinterpreter 'somewhere':\n" + traceback_text


def test_describe_includes_chained_causes():
    try:
        twinhelpers.raise_chained("x")
    except RuntimeError as caught:
        traceback_text = _runtime.describe_exception(caught, 4)[2]
    assert "KeyError: 'inner x'" in traceback_text
    assert "RuntimeError: outer x" in traceback_text


def test_an_exception_holding_a_lock_pickles_with_the_lock_by_reference():
    try:
        twinhelpers.raise_locked("locked")
    except Exception as caught:
        pickled = _runtime.describe_exception(caught, 4)[3]
        assert type(pickled) is tuple and pickled[1] == [caught.lock]


@pytest.mark.parametrize("raiser", [twinhelpers.raise_bad_init])
def test_unrebuildable_exceptions_degrade_to_remote_exception(raiser):
    try:
        raiser("a", "b")
    except Exception as caught:
        type_path, message, traceback_text, pickled = _runtime.describe_exception(caught, 4)
    assert pickled is None
    rebuilt = _runtime.rebuild_exception(type_path, message, traceback_text, pickled, "somewhere")
    assert isinstance(rebuilt, errors.RemoteException)
    assert rebuilt.type_name == type_path
    assert rebuilt.remote_message == message
    assert raiser.__name__ in rebuilt.remote_traceback
    assert type_path in str(rebuilt) and raiser.__name__ in str(rebuilt)


def test_rebuild_with_a_pickle_that_does_not_load():
    rebuilt = _runtime.rebuild_exception("m.E", "msg", "tb", b"not a pickle", "x")
    assert isinstance(rebuilt, errors.RemoteException)


def test_main_module_spec_in_the_master():
    spec = _runtime.main_module_spec()
    assert set(spec) >= {"path", "module", "sys_path"}
    assert spec["path"] is None or os.path.isabs(spec["path"])
    here = os.path.dirname(os.path.abspath(__file__))
    assert here in spec["sys_path"]
    assert all(os.path.isabs(entry) for entry in spec["sys_path"])
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    for entry in spec["sys_path"]:
        real = os.path.realpath(entry)
        assert not any(real == p or real.startswith(p + os.sep) for p in prefixes), entry


def test_master_kernel_state():
    assert kernel_state.is_master()
    assert not kernel_state.is_twinterpreter()
    assert kernel_state.TWIN_ID == kernel_state.MASTER_ID
    assert kernel_state.is_twinterpreter(kernel_state.MASTER_ID)
    assert not kernel_state.is_twinterpreter(twinhelpers.TWIN_IDS["pypy"])


def test_large_buffers_leave_the_pickle_out_of_band():
    payload = bytearray(range(256)) * 400  # 100 KiB
    value = [pickle.PickleBuffer(payload), b"small"]  # what numpy arrays reduce to
    data, references, views = _runtime.dumps(value, 5, out_of_band=True)
    assert references is None and len(views) == 1 and views[0].nbytes == len(payload)
    assert len(data) < 1024  # the buffer is not in the pickle
    copy = _runtime.loads(data, None, [bytearray(view) for view in views])
    assert copy == [payload, b"small"] and type(copy[0]) is bytearray
    small = _runtime.dumps(pickle.PickleBuffer(bytearray(100)), 5, out_of_band=True)
    assert type(small) is bytes  # under the threshold: in band
