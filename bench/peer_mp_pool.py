"""multiprocessing: ``ProcessPoolExecutor(max_workers=1).submit(f).result()``."""

import time
from concurrent.futures import ProcessPoolExecutor

from _timing import (
    BULK, CALL_METRICS, add, check_add, echo, emit, guarded, noop, threads_suite, timed,
    timed_bulk, timed_starts, wants_any,
)


def start_and_first_call():
    begin = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=1)
    pool.submit(noop).result()
    took = time.perf_counter() - begin
    pool.shutdown()
    return took


def main():
    result = {}
    if wants_any(CALL_METRICS + ("threads",)):
        with ProcessPoolExecutor(max_workers=1) as pool:
            check_add(lambda a, b: pool.submit(add, a, b).result())
            guarded(result, "noop", timed, lambda: pool.submit(noop).result())
            guarded(result, "add", timed, lambda: pool.submit(add, 1, 2).result())
            for metric in BULK:
                guarded(result, metric, timed_bulk,
                        lambda value: pool.submit(echo, value).result(), metric)
            guarded(result, "threads", threads_suite,
                    lambda: lambda: pool.submit(noop).result())
    guarded(result, "startup", timed_starts, start_and_first_call)
    emit(result)


if __name__ == "__main__":
    main()
