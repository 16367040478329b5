"""Awaiting a request from asyncio: the one way cpy2py completes an asyncio future.

Private, and a leaf: it imports of cpy2py only the native module, so that both the
executor side (``_futures``) and remote iterators (``_remote``) build on it.
asyncio itself is imported by whoever awaits, so that a twin's startup skips it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from . import _native

if TYPE_CHECKING:
    import asyncio

__all__ = ["start_async"]

#: ``native(on_done)``: sends one request and returns its handle (for
#: ``_native.cancel``); ``on_done(ok, value)`` gets its outcome.
Submit = Callable[[Callable[[bool, Any], None]], Optional[Tuple[int, int, int]]]


def _settle(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if future.done():  # the awaiting task was cancelled: drop the outcome
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def start_async(native: Submit) -> Any:
    """Awaits the outcome of the request ``native`` sends, on the running loop; a
    cancelled await cancels the request."""
    import asyncio

    loop = asyncio.get_running_loop()
    future: "asyncio.Future[Any]" = loop.create_future()

    def on_done(ok: bool, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, ok, value)
        except RuntimeError:  # the loop is closed: nobody awaits it any more
            pass

    handle = native(on_done)
    try:
        return await future
    except asyncio.CancelledError:
        if handle is not None:
            _native.cancel(handle)
        raise
