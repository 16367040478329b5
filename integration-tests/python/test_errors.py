"""The exception hierarchy: the original's names, aliases, stdlib bases, pickling."""

import pickle

import pytest

import cpy2py
from cpy2py import errors


def test_everything_derives_from_the_base():
    for name in (
        "TwinterpeterUnavailable",
        "TwinterpeterTerminated",
        "TwinterpreterTimeout",
        "UnpicklableError",
        "RemoteException",
        "RemoteTraceback",
    ):
        cls = getattr(errors, name)
        assert issubclass(cls, errors.CPy2PyException), name
        assert issubclass(cls, Exception), name
    assert issubclass(errors.CPy2PyException, Exception)


def test_original_names_and_correctly_spelled_aliases_are_the_same_classes():
    assert errors.TwinterpreterUnavailable is errors.TwinterpeterUnavailable
    assert errors.TwinterpreterTerminated is errors.TwinterpeterTerminated
    assert cpy2py.TwinterpeterUnavailable is errors.TwinterpeterUnavailable
    assert cpy2py.TwinterpreterTerminated is errors.TwinterpeterTerminated


def test_stdlib_bases_for_existing_except_clauses():
    terminated = errors.TwinterpeterTerminated("twinterpreter 'x' killed by signal 9", twin_id="x")
    assert isinstance(terminated, errors.TwinterpeterUnavailable)
    assert isinstance(terminated, RuntimeError)
    assert terminated.twin_id == "x"
    assert isinstance(errors.TwinterpreterTimeout("slow"), TimeoutError)
    assert isinstance(errors.TwinterpreterTimeout("slow"), OSError)
    assert str(errors.TwinterpreterTimeout("slow")) == "slow"
    assert isinstance(errors.UnpicklableError("no"), TypeError)
    with pytest.raises(RuntimeError):
        raise errors.TwinterpeterUnavailable("not started")
    with pytest.raises(TimeoutError):
        raise errors.TwinterpreterTimeout("slow")


def test_unpicklable_error_names_object_type_and_reason():
    obj = object()
    reason = TypeError("cannot pickle this")
    error = errors.UnpicklableError.for_object(obj, reason)
    message = str(error)
    assert repr(obj) in message
    assert "object" in message
    assert "TypeError: cannot pickle this" in message
    assert error.object_repr == repr(obj)


def test_unpicklable_error_truncates_long_reprs():
    huge = ["x" * 1000]
    error = errors.UnpicklableError.for_object(huge, TypeError("because"))
    assert len(error.object_repr) <= errors.REPR_LIMIT
    assert "because" in str(error)
    assert len(str(error)) < 400


def test_remote_exception_str_shows_type_message_and_traceback():
    error = errors.RemoteException("pkg.Odd", "odd things", "Traceback ...\n  File x\npkg.Odd: odd things\n")
    text = str(error)
    assert "pkg.Odd" in text
    assert "odd things" in text
    assert "File x" in text
    assert (error.type_name, error.remote_message) == ("pkg.Odd", "odd things")


def test_remote_traceback_str_is_the_text():
    assert str(errors.RemoteTraceback("Traceback in twinterpreter 'x':\nline")) == (
        "Traceback in twinterpreter 'x':\nline"
    )


@pytest.mark.parametrize(
    "error",
    [
        errors.TwinterpeterUnavailable("down", twin_id="a"),
        errors.TwinterpeterTerminated("dead", twin_id="b"),
        errors.TwinterpreterTimeout("slow", twin_id="c"),
        errors.UnpicklableError.for_object(object(), TypeError("nope")),
        errors.RemoteException("m.T", "msg", "tb", twin_id="d"),
        errors.RemoteTraceback("tb text"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_pickle_with_their_attributes(error):
    # errors raised in a twin travel to the master by pickle
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_public_api():
    assert set(cpy2py.__all__) >= {
        "TwinMaster",
        "twinfunction",
        "kernel_state",
        "localmethod",
        "CPy2PyException",
        "TwinterpeterUnavailable",
        "TwinterpeterTerminated",
        "TwinterpreterUnavailable",
        "TwinterpreterTerminated",
        "TwinterpreterTimeout",
        "UnpicklableError",
        "RemoteException",
        "RemoteTraceback",
    }
    for name in cpy2py.__all__:
        assert getattr(cpy2py, name) is not None, name

    def method(self):
        return 1

    assert cpy2py.localmethod(method) is method
    assert method.__cpy2py_local__ is True
