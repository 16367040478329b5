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


def measure_noop(python):
    from cpy2py import TwinMaster

    twin = TwinMaster(executable=python, twinterpreter_id="bench")
    twin.start()
    try:
        for _ in range(WARMUP):
            twin.execute(noop)
        samples = []
        for _ in range(CALLS):
            start = time.perf_counter()
            twin.execute(noop)
            samples.append(time.perf_counter() - start)
        return stats(samples)
    finally:
        twin.stop()


def child_main(kind, python, pinned):
    if pinned:
        os.sched_setaffinity(0, {0})
    result = measure_floor(python) if kind == "floor" else measure_noop(python)
    print(json.dumps(result))


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
    print("| twin | pinning | floor median µs | floor p99 µs | execute(noop) median µs | p99 µs | ratio to floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, python in twins:
        for pinned in (False, True):
            floor = run("floor", python, pinned)
            ours = run("noop", python, pinned)
            ratio = ours["median_us"] / floor["median_us"]
            print(
                f"| {name} | {'CPU 0' if pinned else 'none'} | {floor['median_us']:.1f} | "
                f"{floor['p99_us']:.1f} | {ours['median_us']:.1f} | {ours['p99_us']:.1f} | {ratio:.2f}× |"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        main()
