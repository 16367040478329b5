"""Several twins of one interpreter behind one :class:`~concurrent.futures.Executor`:
:class:`TwinPool`, e.g. PyPy workers for a CPython program."""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any, Callable, Iterable, Iterator, List, Optional, TypeVar

from . import _futures
from .master import TwinMaster

__all__ = ["TwinPool"]

_T = TypeVar("_T")


class TwinPool(concurrent.futures.Executor):
    """``size`` twins running ``executable``, started now; each call goes to the twin
    with the fewest calls in flight.

    :param executable: the interpreter of every twin (a path or a name in ``PATH``).
    :param size: how many twins (default: the number of CPUs).
    :param twinterpreter_id: the twins' ids are ``"<twinterpreter_id>-<n>"``, n from 0
        (default: the basename of ``executable``).
    :param master_options: passed on to each :class:`~cpy2py.TwinMaster`
        (``main_module``, ``call_timeout``, ...).

    The twins are ordinary twins (``pool.twins``): objects made by a call live in the
    twin that ran it. ``with TwinPool(...) as pool:`` shuts the pool down at the end.
    """

    def __init__(
        self,
        executable: str,
        size: Optional[int] = None,
        *,
        twinterpreter_id: Optional[str] = None,
        **master_options: Any,
    ) -> None:
        if size is None:
            size = os.cpu_count() or 1
        if size < 1:
            raise ValueError("a TwinPool needs at least one twin, not size=%r" % (size,))
        prefix = twinterpreter_id or os.path.basename(executable)
        #: the pool's twins, in id order
        self.twins: List[TwinMaster] = [
            TwinMaster(executable, "%s-%d" % (prefix, n), **master_options) for n in range(size)
        ]
        self._in_flight = [0] * size
        self._lock = threading.Lock()
        self._shut = False
        try:
            self._start_all()
        except BaseException:
            self.shutdown(wait=False)
            raise

    def _start_all(self) -> None:
        """Starts the twins side by side (each start mostly waits for its child)."""
        errors: List[BaseException] = []

        def start(twin: TwinMaster) -> None:
            try:
                twin.start()
            except BaseException as error:  # noqa: B902 - re-raised below
                errors.append(error)

        threads = [threading.Thread(target=start, args=(twin,), daemon=True) for twin in self.twins]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[_T]":
        """:meth:`TwinMaster.submit` on the least busy twin."""
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit to a TwinPool after shutdown()")
            n = min(range(len(self.twins)), key=self._in_flight.__getitem__)
            self._in_flight[n] += 1
        try:
            future = self.twins[n].submit(fn, *args, **kwargs)
        except BaseException:
            self._done(n)
            raise
        future.add_done_callback(lambda _: self._done(n))
        return future

    def _done(self, n: int) -> None:
        with self._lock:
            self._in_flight[n] -= 1

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """:meth:`TwinMaster.map` spread over the twins (a chunk per request)."""
        return _futures.map_with(self.submit, fn, iterables, timeout, chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops every twin, after their submitted calls complete if ``wait``; then
        :meth:`submit` raises RuntimeError."""
        with self._lock:
            self._shut = True
        for twin in self.twins:
            twin.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __repr__(self) -> str:
        return "TwinPool(%s)" % ", ".join(repr(twin) for twin in self.twins)
