"""Calls that do not block the caller: :class:`concurrent.futures.Future` and asyncio.

Private; ``TwinMaster.submit``/``map``/``aexecute``, :class:`cpy2py.TwinPool` and
:func:`aio` (exported as ``cpy2py.aio``) live on it. It imports of cpy2py only the
native module and ``_runtime``.

A request leaves before ``submit`` returns. Its outcome reaches the future from the
process's one completion thread (``cpy2py-completions``): done-callbacks of a
:class:`~concurrent.futures.Future` run there, so a callback that blocks holds up
the completions behind it. An asyncio future is completed on its own loop, through
``loop.call_soon_threadsafe``. No thread waits per call.

Errors found before the request leaves (a twin that is not running, an argument
that cannot be sent) raise from ``submit`` itself; everything after arrives through
the future. A call in flight cannot be cancelled yet: ``Future.cancel()`` returns
False, as for any running future, and a cancelled asyncio task stops waiting while
the twin finishes the call (its reply is then dropped).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Set, Tuple

if TYPE_CHECKING:  # asyncio is imported by whoever awaits; a twin's startup skips it
    import asyncio

from . import _native, _runtime

__all__ = ["Outstanding", "start", "start_async", "map_with", "apply_chunk", "aio"]

#: ``native(on_done)``: sends one request; ``on_done(ok, value)`` gets its outcome.
Submit = Callable[[Callable[[bool, Any], None]], None]


class Outstanding(object):
    """The futures of one executor that have not completed, for ``shutdown(wait=True)``."""

    def __init__(self) -> None:
        self._futures: Set["concurrent.futures.Future[Any]"] = set()
        self._lock = threading.Lock()

    def add(self, future: "concurrent.futures.Future[Any]") -> None:
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._discard)

    def _discard(self, future: "concurrent.futures.Future[Any]") -> None:
        with self._lock:
            self._futures.discard(future)

    def __len__(self) -> int:
        with self._lock:
            return len(self._futures)

    def wait(self) -> None:
        """Waits until every future added so far has completed."""
        with self._lock:
            pending = list(self._futures)
        concurrent.futures.wait(pending)


def start(native: Submit, outstanding: Optional[Outstanding] = None) -> "concurrent.futures.Future[Any]":
    """A running future for the request ``native`` sends."""
    future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
    future.set_running_or_notify_cancel()

    def on_done(ok: bool, value: Any) -> None:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    native(on_done)
    if outstanding is not None:
        outstanding.add(future)
    return future


def completed(call: Callable[..., Any], args: Tuple[Any, ...], kwargs: Any) -> "concurrent.futures.Future[Any]":
    """A future of ``call(*args, **kwargs)`` run here, now (a twin's own calls)."""
    future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(call(*args, **(kwargs or {})))
    except BaseException as error:  # noqa: B902 - delivered through the future
        future.set_exception(error)
    return future


def _settle(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if future.done():  # the awaiting task was cancelled: drop the outcome
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def start_async(native: Submit) -> Any:
    """Awaits the outcome of the request ``native`` sends, on the running loop."""
    import asyncio

    loop = asyncio.get_running_loop()
    future: "asyncio.Future[Any]" = loop.create_future()

    def on_done(ok: bool, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, ok, value)
        except RuntimeError:  # the loop is closed: nobody awaits it any more
            pass

    native(on_done)
    return await future


def apply_chunk(call: Callable[..., Any], chunk: List[Tuple[Any, ...]]) -> List[Any]:
    """Runs in the twin for ``map(..., chunksize=n)``: ``call`` over one chunk."""
    return [call(*args) for args in chunk]


def _chunks(items: Iterator[Tuple[Any, ...]], size: int) -> Iterator[List[Tuple[Any, ...]]]:
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


def map_with(
    submit: Callable[..., "concurrent.futures.Future[Any]"],
    call: Callable[..., Any],
    iterables: Tuple[Iterable[Any], ...],
    timeout: Optional[float],
    chunksize: int,
) -> Iterator[Any]:
    """``Executor.map`` over ``submit``: every request leaves now, results come in
    order; ``chunksize`` items travel per request."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1, not %r" % (chunksize,))
    deadline = None if timeout is None else time.monotonic() + timeout
    if chunksize == 1:
        futures = [submit(call, *args) for args in zip(*iterables)]
    else:
        futures = [submit(apply_chunk, call, chunk) for chunk in _chunks(zip(*iterables), chunksize)]

    def results() -> Iterator[Any]:
        try:
            futures.reverse()  # pop from the end: a result is not kept once yielded
            while futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                result = futures.pop().result(remaining)
                if chunksize == 1:
                    yield result
                else:
                    yield from result
        finally:
            for future in futures:
                future.cancel()

    return results()


def _method_of_proxy(target: Any) -> Optional[Tuple[Any, str]]:
    """``(proxy, method name)`` if ``target`` is a method of a proxy, or a callable
    proxy itself (then its ``__call__``); else None."""
    owner = getattr(target, "__self__", None)
    if owner is not None and _runtime.proxy_ref(owner) is not None:
        function = getattr(target, "__func__", None)
        name = getattr(function, "_cpy2py_forwards", None) or getattr(target, "__name__", None)
        if isinstance(name, str):
            return owner, name
    if _runtime.proxy_ref(target) is not None:
        return target, "__call__"
    return None


async def aio(method: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``await cpy2py.aio(proxy.method, *args, **kwargs)``: calls a method of an object
    that lives in another interpreter (a TwinObject's, or any object's held by
    reference) without blocking the event loop, as ``TwinMaster.aexecute`` calls
    functions. A callable proxy itself may be given too (``aio(remote_function)``)."""
    found = _method_of_proxy(method)
    if found is None:
        raise TypeError(
            "cpy2py.aio takes a method of a proxy (an object living in another interpreter), "
            "not %r; run functions with TwinMaster.aexecute" % (method,)
        )
    proxy, name = found
    return await start_async(
        lambda on_done: _native.call_method_async(on_done, proxy, name, args, kwargs or None)
    )
