"""Exceptions of cpy2py: one hierarchy under :class:`CPy2PyException`.

The names of the original pure-Python cpy2py are kept, spelling included, so that
existing ``except`` clauses keep working: :class:`TwinterpeterUnavailable` (a
:class:`RuntimeError`) and its subclass :class:`TwinterpeterTerminated`. The correctly
spelled :data:`TwinterpreterUnavailable` and :data:`TwinterpreterTerminated` are the
very same classes.

Every exception here is raised with its message as the only positional argument, so it
pickles and travels between interpreters like any other exception; extra details are
keyword-only attributes.

The Rust core (``cpy2py._native``) raises these by importing this module.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "CPy2PyException",
    "TwinterpeterUnavailable",
    "TwinterpeterTerminated",
    "TwinterpreterUnavailable",
    "TwinterpreterTerminated",
    "TwinterpreterTimeout",
    "UnpicklableError",
    "RemoteException",
    "RemoteTraceback",
    "CallCancelled",
]

#: Longest object ``repr`` quoted in an error message.
REPR_LIMIT = 200


class CPy2PyException(Exception):
    """Base of every exception raised by cpy2py itself."""


class TwinterpeterUnavailable(CPy2PyException, RuntimeError):
    """A twinterpreter cannot be used: never started, stopped, or failed to start.

    ``twin_id`` names the twinterpreter when known.
    """

    def __init__(self, *args: Any, twin_id: Optional[str] = None) -> None:
        super().__init__(*args)
        self.twin_id = twin_id


class TwinterpeterTerminated(TwinterpeterUnavailable):
    """A twinterpreter ended (stopped, crashed or killed) while or before it was used.

    The message names the twin and how it ended (e.g. ``killed by signal 9``).
    """


#: Correctly spelled alias of :class:`TwinterpeterUnavailable` (the same class).
TwinterpreterUnavailable = TwinterpeterUnavailable
#: Correctly spelled alias of :class:`TwinterpeterTerminated` (the same class).
TwinterpreterTerminated = TwinterpeterTerminated


class TwinterpreterTimeout(CPy2PyException, TimeoutError):
    """A call to a twinterpreter did not complete within its timeout."""

    def __init__(self, *args: Any, twin_id: Optional[str] = None) -> None:
        super().__init__(*args)
        self.twin_id = twin_id


def _short_repr(obj: object, limit: int = REPR_LIMIT) -> str:
    """``repr(obj)``, truncated to about ``limit`` characters; never raises."""
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        text = object.__repr__(obj)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _type_name(obj: object) -> str:
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    if module in (None, "builtins"):
        return qualname
    return "%s.%s" % (module, qualname)


class UnpicklableError(CPy2PyException, TypeError):
    """An argument, result or exception cannot be pickled to cross to another
    interpreter.

    The message names the object (its ``repr``, truncated), its type and why pickling
    failed. Attributes: ``object_repr``, ``object_type``, ``reason``.
    """

    def __init__(
        self,
        *args: Any,
        object_repr: Optional[str] = None,
        object_type: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> None:
        super().__init__(*args)
        self.object_repr = object_repr
        self.object_type = object_type
        self.reason = reason

    @classmethod
    def for_object(cls, obj: object, error: BaseException) -> "UnpicklableError":
        """The error for ``obj`` failing to pickle with ``error``."""
        object_repr = _short_repr(obj)
        object_type = _type_name(obj)
        reason = "%s: %s" % (type(error).__name__, error)
        message = "cannot pickle %s (type %s) to send it to another interpreter: %s" % (
            object_repr,
            object_type,
            reason,
        )
        return cls(message, object_repr=object_repr, object_type=object_type, reason=reason)


class RemoteException(CPy2PyException):
    """An exception raised in another interpreter that could not be recreated here
    (it could not be pickled there or unpickled here).

    Attributes: ``type_name`` (``module.qualname`` of the remote exception type),
    ``remote_message`` (its ``str``), ``remote_traceback`` (the formatted remote
    traceback) and ``twin_id`` (where it was raised, if known).
    """

    def __init__(
        self,
        type_name: str,
        remote_message: str,
        remote_traceback: str,
        *,
        twin_id: Optional[str] = None,
    ) -> None:
        super().__init__(type_name, remote_message, remote_traceback)
        self.type_name = type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.twin_id = twin_id

    def __str__(self) -> str:
        where = "" if self.twin_id is None else " in twinterpreter %r" % (self.twin_id,)
        return "%s: %s (raised%s; it could not be recreated here)\n\nRemote traceback:\n%s" % (
            self.type_name,
            self.remote_message,
            where,
            self.remote_traceback.rstrip("\n"),
        )


class CallCancelled(BaseException):
    """Raised in a call running in this interpreter when the interpreter that made it
    cancels it (``future.cancel()``, or cancelling the asyncio task awaiting it).

    It arrives between two bytecodes of the call's thread, wherever the call is; code
    blocked in C (a sleep, a lock) sees it when that returns. A ``BaseException``, as
    ``asyncio.CancelledError`` is, so that ``except Exception`` lets it through: clean
    up in ``finally`` and let it propagate. The caller does not see it: its future is
    cancelled already.
    """

    def __init__(self, message: str = "its caller cancelled it") -> None:
        super().__init__(message)


class RemoteTraceback(CPy2PyException):
    """The traceback text of an exception raised in another interpreter.

    Set as the ``__cause__`` of the re-raised exception, so that Python prints the
    remote traceback above the local one (like ``concurrent.futures``). Its ``str`` is
    the traceback text.
    """

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return self.traceback_text
