"""Exceptions raised in a twin re-raise in the master with type, message, traceback."""

import pytest

import twinhelpers
from cpy2py import RemoteObject, errors


def test_exception_keeps_type_and_message_with_the_remote_traceback(twin):
    with pytest.raises(ValueError) as info:
        twin.execute(twinhelpers.raise_value_error, "boom 42")
    error = info.value
    assert type(error) is ValueError
    assert str(error) == "boom 42"
    cause = error.__cause__
    assert isinstance(cause, errors.RemoteTraceback)
    text = str(cause)
    assert repr(twin.twinterpreter_id) in text
    assert "raise_value_error" in text  # the remote function's frame
    assert "twinhelpers.py" in text
    assert "ValueError: boom 42" in text


def test_builtin_exceptions_of_builtins(twin):
    with pytest.raises(ZeroDivisionError):
        twin.execute(divmod, 1, 0)
    with pytest.raises(KeyError) as info:
        twin.execute(dict().pop, "missing")
    assert info.value.args == ("missing",)
    with pytest.raises(ValueError, match="invalid literal"):
        twin.execute(int, "not a number")


def test_custom_exception_keeps_type_and_attributes(twin):
    with pytest.raises(twinhelpers.CustomError) as info:
        twin.execute(twinhelpers.raise_custom_error, "custom", 7)
    assert type(info.value) is twinhelpers.CustomError
    assert info.value.code == 7
    assert str(info.value) == "custom"
    assert "raise_custom_error" in str(info.value.__cause__)


def test_chained_remote_exception_shows_its_cause(twin):
    with pytest.raises(RuntimeError, match="outer x"):
        twin.execute(twinhelpers.raise_chained, "x")
    try:
        twin.execute(twinhelpers.raise_chained, "x")
    except RuntimeError as error:
        text = str(error.__cause__)
    assert "KeyError: 'inner x'" in text
    assert "RuntimeError: outer x" in text


def test_an_exception_holding_an_object_that_does_not_pickle_arrives_as_itself(twin):
    with pytest.raises(twinhelpers.LockedError, match="locked up") as info:
        twin.execute(twinhelpers.raise_locked, "locked up")
    assert isinstance(info.value.lock, RemoteObject)  # its lock stays in the twin
    assert "raise_locked" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "raiser, args, type_name, message",
    [(twinhelpers.raise_bad_init, ("a", "b"), "twinhelpers.BadInitError", "a-b")],
    ids=["does-not-unpickle"],
)
def test_unpicklable_exception_degrades_to_remote_exception(twin, raiser, args, type_name, message):
    with pytest.raises(errors.RemoteException) as info:
        twin.execute(raiser, *args)
    error = info.value
    assert error.type_name == type_name
    assert error.remote_message == message
    assert raiser.__name__ in error.remote_traceback
    text = str(error)
    assert type_name in text and message in text and raiser.__name__ in text
    assert twin.execute(twinhelpers.add, 1, 2) == 3


def test_remote_sys_exit_is_an_exception_and_the_twin_survives(twin):
    with pytest.raises(SystemExit) as info:
        twin.execute(twinhelpers.exit_now, 3)
    assert info.value.code == 3
    assert twin.is_alive
    assert twin.execute(twinhelpers.add, 2, 2) == 4


def test_twin_stays_usable_after_exceptions(twin):
    for _ in range(20):
        with pytest.raises(ValueError):
            twin.execute(twinhelpers.raise_value_error, "again")
    assert twin.execute(twinhelpers.echo, "still here") == "still here"
