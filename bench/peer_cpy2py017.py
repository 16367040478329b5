"""The original cpy2py (PyPI 0.17.1): ``TwinMaster.execute`` and a ``TwinObject`` method.

Run with the python of its own venv (target/bench-venv-cpy2py017), since it imports
as ``cpy2py`` like ours; argv[1] is the twin's python, which finds the package on
PYTHONPATH (set by the runner).
"""

import os
import sys

from cpy2py import TwinMaster, TwinObject

from _timing import add, check_add, emit, noop, timed


class Service(TwinObject):
    """Lives in the twin; its proxy's method calls are measured."""

    __twin_id__ = "bench017"

    def noop(self):
        pass

    def add(self, a, b):
        return a + b


def version():
    return sys.version.split()[0] + " " + sys.implementation.name


def main():
    twin = TwinMaster(executable=sys.argv[1], twinterpreter_id="bench017")
    twin.start()
    try:
        if twin.execute(os.getpid) == os.getpid():
            raise AssertionError("execute() ran in the master, not in the twin")
        check_add(lambda a, b: twin.execute(add, a, b))
        service = Service()
        check_add(service.add)
        result = {
            "noop": timed(twin.execute, noop),
            "add": timed(twin.execute, add, 1, 2),
            "method": timed(service.noop),
            "worker_version": twin.execute(version),
        }
    finally:
        twin.stop()
    emit(result)


if __name__ == "__main__":
    main()
