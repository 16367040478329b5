"""Functions pinned to a twinterpreter: :func:`twinfunction`."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from . import _native, _routing, errors, kernel_state

__all__ = ["twinfunction"]

F = TypeVar("F", bound=Callable[..., Any])

_native_call = _native.call
_peer_for = _routing.peer_for
_forget = _routing.forget


def twinfunction(twinterpreter_id: str) -> Callable[[F], F]:
    """Decorator: the function always runs in the twinterpreter ``twinterpreter_id``.

    In that twinterpreter the decorator returns the function itself (marked with
    ``__twin_id__``), as cpy2py 0.17 did. Anywhere else it returns a wrapper (with
    the function's ``__name__``, ``__doc__``, ``__module__``, ``__qualname__``,
    ``__annotations__``, and the function as ``__wrapped__``) whose calls are sent
    there (arguments and result by value) and wait for the result; in the master,
    the twin is started on first use unless it was started or stopped explicitly or
    ``CPY2PY_NOAUTO`` is set. Use ``kernel_state.MASTER_ID`` to pin a function to
    the master.

    The function must be reachable by name (defined at module level, or as a method
    of a module-level class): the decorated name travels by reference and, on the
    other side, resolves to that interpreter's decorated function, which is the
    plain function in its own twinterpreter.

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
        func.__twin_id__ = twinterpreter_id  # type: ignore[attr-defined]
        if kernel_state.TWIN_ID == twinterpreter_id:
            return func

        @functools.wraps(func)
        def twin_function(*args: Any, **kwargs: Any) -> Any:
            # _routing.call_in, inline: this is every call's path (a frame less)
            peer = _peer_for(twinterpreter_id)
            try:
                # no empty dict: on PyPy every dict passed to C goes through cpyext
                return _native_call(peer, twin_function, args, kwargs or None)
            except errors.TwinterpeterUnavailable:
                _forget(twinterpreter_id)
                raise

        return twin_function  # type: ignore[return-value]

    return decorator
