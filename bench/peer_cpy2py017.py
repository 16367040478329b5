"""The original cpy2py (PyPI 0.17.1): ``TwinMaster.execute`` and a ``TwinObject`` method.

Run with the python of its own venv (target/bench-venv-cpy2py017), since it imports
as ``cpy2py`` like ours; argv[1] is the twin's python, which finds the package on
PYTHONPATH (set by the runner).
"""

import os
import sys

from cpy2py import TwinMaster, TwinObject

from _timing import (
    BULK, CALL_METRICS, add, check_add, echo, emit, guarded, noop, threads_suite, timed,
    timed_bulk, timed_twin_starts, wanted, wants_any,
)


class Service(TwinObject):
    """Lives in the twin; its proxy's method calls are measured."""

    __twin_id__ = "bench017"

    def noop(self):
        pass

    def add(self, a, b):
        return a + b


def main():
    python = sys.argv[1]
    result = {}
    if wants_any(CALL_METRICS + ("threads",)):
        twin = TwinMaster(executable=python, twinterpreter_id="bench017")
        twin.start()
        try:
            if twin.execute(os.getpid) == os.getpid():
                raise AssertionError("execute() ran in the master, not in the twin")
            check_add(lambda a, b: twin.execute(add, a, b))
            service = Service()
            check_add(service.add)
            guarded(result, "noop", timed, twin.execute, noop)
            guarded(result, "add", timed, twin.execute, add, 1, 2)
            guarded(result, "method", timed, service.noop)
            guarded(result, "threads", threads_suite, lambda: lambda: twin.execute(noop))
        finally:
            try:
                twin.stop()
            except Exception:  # a twin killed by a failed metric is reported there
                pass
    # A payload that breaks the old kernel kills its twin: one fresh twin per payload.
    for metric in BULK:
        if wanted(metric):
            twin = TwinMaster(executable=python, twinterpreter_id="bulk017_" + metric)
            twin.start()
            guarded(result, metric, timed_bulk, lambda value: twin.execute(echo, value), metric)
            try:
                twin.stop()
            except Exception:  # a twin killed by the payload is reported above
                pass
    guarded(result, "startup", timed_twin_starts, TwinMaster, python, "start017_", noop)
    emit(result)


if __name__ == "__main__":
    main()
