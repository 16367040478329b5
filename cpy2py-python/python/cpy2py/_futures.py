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
the future.

Cancelling works on calls in flight: ``future.cancel()`` (a :class:`TwinFuture`)
and cancelling the asyncio task that awaits a call mark it cancelled here at once
and send a cancel message; the interpreter running the call raises
:class:`cpy2py.errors.CallCancelled` in it at its next bytecode, and its reply is
dropped. A call that has finished is not affected.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures._base as _futures_base
import itertools
import threading
import time
from typing import Any, Callable, Iterable, Iterator, List, Optional, Set, Tuple

from . import _native, _runtime
from ._aio import start_async

__all__ = [
    "TwinFuture",
    "Outstanding",
    "submit_call",
    "start_async",
    "map_with",
    "apply_chunk",
    "aio",
    "time_left",
]

#: Names a request in flight, for ``_native.cancel``.
Handle = Tuple[int, int, int]



class TwinFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """The future of a call running in another interpreter.

    Unlike other running futures, it can be cancelled: :meth:`cancel` marks it
    cancelled at once (waiters and done-callbacks see it as any cancelled future)
    and asks the interpreter running the call to interrupt it.
    """

    _handle: Optional[Handle] = None
    _outstanding: Optional["Outstanding"] = None

    def __init__(self) -> None:
        super().__init__()
        # Its request leaves as it is made: running from the start (what
        # set_running_or_notify_cancel does, without taking the lock).
        self._state = _futures_base.RUNNING

    def __call__(self, ok: bool, value: Any) -> None:
        """Receives the call's outcome (cpy2py's completion thread calls it)."""
        if self._outstanding is not None:
            self._outstanding.discard(self)
        try:
            if ok:
                self.set_result(value)
            else:
                self.set_exception(value)
        except concurrent.futures.InvalidStateError:  # cancelled: its outcome is dropped
            pass

    def cancel(self) -> bool:
        """Cancels the call, running or not; False only if it has completed."""
        # The stdlib's states and waiters (concurrent.futures._base, the same from
        # Python 3.8 to 3.14 and in PyPy): a running future becomes cancelled as a
        # pending one would, and its waiters hear of it as set_running_or_notify_cancel
        # would tell them.
        with self._condition:
            if self._state != _futures_base.RUNNING:
                return super().cancel()
            self._state = _futures_base.CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]  # private, not in typeshed
        if self._handle is not None:
            _native.cancel(self._handle)
        return True


class Outstanding(object):
    """The futures of one executor that have not completed, for ``shutdown(wait=True)``."""

    def __init__(self) -> None:
        self._futures: Set["concurrent.futures.Future[Any]"] = set()
        self._lock = threading.Lock()

    def add(self, future: "concurrent.futures.Future[Any]") -> None:
        with self._lock:
            self._futures.add(future)

    def discard(self, future: "concurrent.futures.Future[Any]") -> None:
        """``future`` has its outcome (called by whoever completes it)."""
        with self._lock:
            self._futures.discard(future)

    def __len__(self) -> int:
        with self._lock:
            return len(self._futures)

    def cancel_all(self) -> None:
        """Cancels every future added so far that has not completed."""
        with self._lock:
            pending = list(self._futures)
        for future in pending:
            future.cancel()

    def wait(self) -> None:
        """Waits until every future added so far has completed."""
        with self._lock:
            pending = list(self._futures)
        concurrent.futures.wait(pending)


#: ``send(on_done, call, args, kwargs)``: sends one call and returns its handle.
Send = Callable[[Callable[[bool, Any], None], Any, Tuple[Any, ...], Any], Optional[Handle]]


def submit_call(
    send: Send, call: Any, args: Tuple[Any, ...], kwargs: Any, outstanding: Outstanding
) -> "concurrent.futures.Future[Any]":
    """A running future for ``call(*args, **kwargs)``, which ``send`` sends. The
    future itself receives the outcome: no closure per call (thousands may be in
    flight, and every object they hold is work for the cyclic collector)."""
    future = TwinFuture()
    future._outstanding = outstanding
    # Tracked before it leaves: its outcome may come before send returns.
    outstanding.add(future)
    try:
        future._handle = send(future, call, args, kwargs)
    except BaseException:
        outstanding.discard(future)
        raise
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


def time_left() -> Optional[float]:
    """Seconds left until the deadline of the call this thread serves, or None.

    A call made with a timeout (``execute_timeout``, ``call_timeout``) carries it as
    its deadline to the interpreter that runs it; calls that interpreter makes on its
    behalf inherit what is left, and fail with ``TwinterpreterTimeout`` once it has
    passed. Long work can ask this to stop early.
    """
    return _native.time_left()


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
