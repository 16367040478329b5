"""Round trip of a no-op call to a twin, beside the socketpair floor, in one run.

Run by ``cargo xtask bench`` with the CPython venv's python; the twins are the
venv pythons named by CPY2PY_TEST_CPYTHON and CPY2PY_TEST_PYPY. Each figure is
measured in a fresh subprocess, unpinned and pinned to CPU 0 (the child inherits
the pinning), and printed as a markdown table with medians, p99 and the ratio to
the floor measured for the same interpreter pair and pinning.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time

from cpy2py import TwinObject

CALLS = int(os.environ.get("CPY2PY_BENCH_CALLS", "20000"))
WARMUP = CALLS // 10

ECHO = (
    "import os, socket\n"
    "s = socket.socket(fileno=int(os.environ['BENCH_FD']))\n"
    "while True:\n"
    "    d = s.recv(1)\n"
    "    if not d: break\n"
    "    s.send(d)\n"
)


def noop():
    """The call being measured."""


class Bench(TwinObject):
    """Lives in the twin; its proxy's method call and attribute read are measured."""

    __twin_id__ = "bench"

    def __init__(self):
        self.x = 1

    def noop(self):
        pass


def stats(samples):
    samples = sorted(samples)
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
    }


def measure_floor(python):
    """CPython here, ``python`` running a Python echo loop there, 1 byte each way."""
    ours, theirs = socket.socketpair()
    theirs.set_inheritable(True)
    env = dict(os.environ, BENCH_FD=str(theirs.fileno()))
    child = subprocess.Popen([python, "-c", ECHO], env=env, pass_fds=(theirs.fileno(),))
    theirs.close()
    samples = []
    for i in range(WARMUP + CALLS):
        start = time.perf_counter()
        ours.send(b"x")
        ours.recv(1)
        if i >= WARMUP:
            samples.append(time.perf_counter() - start)
    ours.close()
    child.wait(timeout=30)
    return stats(samples)


def _time(op):
    for _ in range(WARMUP):
        op()
    samples = []
    for _ in range(CALLS):
        start = time.perf_counter()
        op()
        samples.append(time.perf_counter() - start)
    return stats(samples)


def measure_noop(python):
    """execute(noop), a proxy method call and a proxy attribute read, one twin."""
    from cpy2py import TwinMaster

    twin = TwinMaster(executable=python, twinterpreter_id="bench")
    twin.start()
    try:
        obj = Bench()
        return {
            "noop": _time(lambda: twin.execute(noop)),
            "method": _time(obj.noop),
            "attribute": _time(lambda: obj.x),
        }
    finally:
        twin.stop()


def measure_rust_host(python):
    """The Rust host example's no-op round trip, if it is built."""
    example = os.path.join(
        os.path.dirname(__file__), "..", "..", "target", "release", "examples", "embed_pypy"
    )
    if not os.path.exists(example):
        return None
    out = subprocess.run(
        [example], env=dict(os.environ, CPY2PY_EXAMPLE_PYPY=python),
        check=True, capture_output=True, text=True, timeout=600,
    ).stdout
    for line in out.splitlines():
        if line.startswith("round trip of a no-op call"):
            median = float(line.split("median ")[1].split(" ")[0])
            p99 = float(line.split("p99 ")[1].split(" ")[0])
            return {"median_us": median, "p99_us": p99}
    return None


def child_main(kind, python, pinned):
    if pinned:
        os.sched_setaffinity(0, {0})
    measure = {"floor": measure_floor, "noop": measure_noop, "rust": measure_rust_host}[kind]
    print(json.dumps(measure(python)))


def run(kind, python, pinned):
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, python, "1" if pinned else "0"],
        check=True, capture_output=True, text=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    twins = [
        (name, os.environ[var])
        for name, var in (("CPython", "CPY2PY_TEST_CPYTHON"), ("PyPy", "CPY2PY_TEST_PYPY"))
        if os.environ.get(var)
    ]
    print(f"{CALLS} calls after {WARMUP} warm-up; CPython {sys.version.split()[0]} master.\n")
    print(
        "| twin | pinning | floor µs (p99) | execute(noop) µs (p99) | ratio | "
        "proxy method call µs (p99) | proxy attribute read µs (p99) | Rust host no-op µs (p99) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    cell = lambda r: "%.1f (%.1f)" % (r["median_us"], r["p99_us"]) if r else "n/a"
    for name, python in twins:
        for pinned in (False, True):
            floor = run("floor", python, pinned)
            ours = run("noop", python, pinned)
            rust = run("rust", python, pinned)
            ratio = ours["noop"]["median_us"] / floor["median_us"]
            print(
                f"| {name} | {'CPU 0' if pinned else 'none'} | {cell(floor)} | {cell(ours['noop'])} | "
                f"{ratio:.2f}× | {cell(ours['method'])} | {cell(ours['attribute'])} | {cell(rust)} |"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        main()
