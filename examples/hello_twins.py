"""hello_twins: a CPython master runs parts of this script in a PyPy twin.

    cargo xtask build
    target/venv-cpython/bin/python examples/hello_twins.py

The PyPy interpreter is ``$CPY2PY_EXAMPLE_PYPY`` (default ``pypy3``); it needs cpy2py
installed, e.g. ``CPY2PY_EXAMPLE_PYPY=target/venv-pypy/bin/python``.

It shows where each part runs (interpreter and process id), how much faster a hot
loop runs in PyPy, and what a round trip to the twin costs.
"""

import os
import platform
import statistics
import sys
import time

from cpy2py import TwinMaster, kernel_state, twinfunction

PYPY = os.environ.get("CPY2PY_EXAMPLE_PYPY", "pypy3")
TWIN_ID = "pypy"
LOOP_SIZE = 3_000_000
NOOP_CALLS = 2_000


def where():
    """Which interpreter runs this, in which process."""
    return "%-8s %-7s (Python %s) pid %d" % (
        kernel_state.TWIN_ID,
        platform.python_implementation(),
        platform.python_version(),
        os.getpid(),
    )


def loop(n):
    """Pure-Python number crunching: what a JIT is for."""
    total = 0
    for i in range(n):
        total += (i * i) % 7 ^ (i >> 3)
    return total


@twinfunction(TWIN_ID)
def hot_loop(n):
    """``loop``, pinned to the PyPy twin: called anywhere, it runs there."""
    return loop(n)


def noop():
    return None


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main():
    print("master: %s" % where())
    started = time.perf_counter()
    with TwinMaster(executable=PYPY, twinterpreter_id=TWIN_ID) as pypy:
        print("twin %r started in %.2f s (%s)" % (TWIN_ID, time.perf_counter() - started, PYPY))

        # a function of this very script, run in the twin
        print("twin:   %s" % pypy.execute(where))

        # the same loop here (CPython) and, via @twinfunction, there (PyPy)
        hot_loop(1000)  # first call: nothing to measure but the JIT warming up
        local_result, local_time = timed(loop, LOOP_SIZE)
        twin_result, twin_time = timed(hot_loop, LOOP_SIZE)
        assert local_result == twin_result
        print("\nloop(%s):" % format(LOOP_SIZE, ","))
        print("  here, %-8s %8.3f s" % (platform.python_implementation() + ":", local_time))
        print("  in the twin, PyPy: %8.3f s  (%.1fx, call overhead included)" % (twin_time, local_time / twin_time))

        # the cost of a call: a no-op round trip master -> twin -> master
        for _ in range(200):
            pypy.execute(noop)
        samples = []
        for _ in range(NOOP_CALLS):
            call_started = time.perf_counter_ns()
            pypy.execute(noop)
            samples.append(time.perf_counter_ns() - call_started)
        samples.sort()
        print("\npypy.execute(noop) round trip over %s calls:" % format(NOOP_CALLS, ","))
        print(
            "  median %.1f µs, p10 %.1f µs, p90 %.1f µs"
            % (
                statistics.median(samples) / 1000,
                samples[len(samples) // 10] / 1000,
                samples[len(samples) * 9 // 10] / 1000,
            )
        )
    print("\ntwin stopped; alive: %s" % pypy.is_alive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
