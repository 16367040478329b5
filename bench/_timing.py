"""Shared timing helpers for the peer benchmarks: warm-up, then N timed calls."""

import json
import os
import statistics
import sys
import time

CALLS = int(os.environ.get("CPY2PY_BENCH_CALLS", "20000"))
WARMUP = max(CALLS // 10, 10)


def stats(samples):
    samples = sorted(samples)
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[min(int(len(samples) * 0.99), len(samples) - 1)] * 1e6,
        "calls": len(samples),
    }


def timed(op, *args):
    """Median and p99 of ``op(*args)`` over CALLS calls after WARMUP warm-up calls."""
    for _ in range(WARMUP):
        op(*args)
    samples = []
    clock = time.perf_counter
    for _ in range(CALLS):
        start = clock()
        op(*args)
        samples.append(clock() - start)
    return stats(samples)


def check_add(add):
    result = add(1, 2)
    if result != 3:
        raise AssertionError("add(1, 2) returned %r" % (result,))


def emit(result):
    """The runner reads the last line of stdout as JSON."""
    sys.stdout.flush()
    print(json.dumps(result))


def noop():
    """The no-op being called remotely."""


def add(a, b):
    return a + b
