"""Functions pinned to a twinterpreter (:func:`twinfunction`) and :func:`localmethod`."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from . import _native, errors, kernel_state
from .master import _forget_peer, _peer_for

__all__ = ["twinfunction", "localmethod"]

F = TypeVar("F", bound=Callable[..., Any])

_native_call = _native.call


def twinfunction(twinterpreter_id: str) -> Callable[[F], F]:
    """Decorator: the function always runs in the twinterpreter ``twinterpreter_id``.

    Called in that twinterpreter, it runs directly. Called anywhere else, the call is
    sent there (arguments and result by value) and waits for the result; in the
    master, the twin is started on first use unless ``CPY2PY_NOAUTO`` is set. Use
    ``kernel_state.MASTER_ID`` to pin a function to the master.

    The function must be reachable by name (defined at module level, or as a method
    of a module-level class): the decorated name travels by reference and, on the
    other side, resolves to the same decorated function, which then runs locally.

    ::

        @twinfunction('pypy3')
        def hot_loop(n):
            ...
    """
    if not isinstance(twinterpreter_id, str):
        raise TypeError(
            "twinfunction takes the twinterpreter id, e.g. @twinfunction('pypy3'), not %r"
            % (twinterpreter_id,)
        )

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def twin_function(*args: Any, **kwargs: Any) -> Any:
            if kernel_state.TWIN_ID == twinterpreter_id:
                return func(*args, **kwargs)
            peer = _peer_for(twinterpreter_id)
            try:
                # no empty dict: on PyPy every dict passed to C goes through cpyext
                return _native_call(peer, twin_function, args, kwargs or None)
            except errors.TwinterpeterUnavailable:
                _forget_peer(twinterpreter_id)
                raise

        twin_function.__twin_id__ = twinterpreter_id  # type: ignore[attr-defined]
        return twin_function  # type: ignore[return-value]

    return decorator


def localmethod(func: F) -> F:
    """Mark a method of a TwinObject to run in the caller's interpreter instead of the
    object's native twin (a marker; TwinObject honours it)."""
    func.__cpy2py_local__ = True  # type: ignore[attr-defined]
    return func
