"""multiprocessing: a method call on a ``BaseManager`` proxy of a registered object."""

import time
from multiprocessing.managers import BaseManager

from _timing import (
    BULK, CALL_METRICS, check_add, emit, guarded, threads_suite, timed, timed_bulk,
    timed_starts, wants_any,
)


class Service:
    def noop(self):
        pass

    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value


class Manager(BaseManager):
    pass


Manager.register("Service", Service)


def start_and_first_call():
    begin = time.perf_counter()
    manager = Manager()
    manager.start()
    manager.Service().noop()
    took = time.perf_counter() - begin
    manager.shutdown()
    return took


def main():
    result = {}
    if wants_any(CALL_METRICS + ("threads",)):
        with Manager() as manager:
            service = manager.Service()
            check_add(service.add)
            guarded(result, "noop", timed, service.noop)
            guarded(result, "add", timed, service.add, 1, 2)
            for metric in BULK:
                guarded(result, metric, timed_bulk, service.echo, metric)
            # A proxy opens one connection per thread.
            guarded(result, "threads", threads_suite, lambda: service.noop)
    guarded(result, "startup", timed_starts, start_and_first_call)
    emit(result)


if __name__ == "__main__":
    main()
