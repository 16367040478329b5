"""The Python socketpair floor: a 1-byte ping-pong, CPython here, Python code there.

Both ends use blocking sockets without a Python timeout: a socket with
``settimeout`` polls before every ``recv`` (one more system call per round trip
than the minimum, 13.1 vs 17.8-22.0 us pinned on one machine), which is not the
floor. The hang guard is ``SO_RCVTIMEO`` instead, applied by the kernel inside the
``recvfrom`` itself.

``floor.py NAME=PYTHON ...`` measures, for each interpreter and unpinned and pinned to
CPU 0 (the child inherits the pinning), round trips of one byte between this process
and a child of PYTHON running an echo loop, and prints
``{"rows": [...]}`` as JSON on the last line of stdout. Run by ``cargo xtask bench``
with the CPython venv's python. Counts come from the environment (see ``_timing.py``).
"""

import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import CALLS, WARMUP, emit, stats  # noqa: E402

ECHO = (
    "import os, socket\n"
    "s = socket.socket(fileno=int(os.environ['BENCH_FD']))\n"
    "while True:\n"
    "    d = s.recv(1)\n"
    "    if not d: break\n"
    "    s.send(d)\n"
)


def measure(python, pinned):
    ours, theirs = socket.socketpair()
    env = dict(os.environ, BENCH_FD=str(theirs.fileno()))
    saved = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {0})  # inherited by the child
    child = subprocess.Popen(
        [python, "-c", ECHO], env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
    )
    theirs.close()
    try:
        # A recv that hears nothing for 30 s fails (EAGAIN) instead of hanging.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 30, 0))
        samples = []
        for i in range(WARMUP + CALLS):
            start = time.perf_counter()
            ours.send(b"x")
            ours.recv(1)
            if i >= WARMUP:
                samples.append(time.perf_counter() - start)
    finally:
        os.sched_setaffinity(0, saved)
        ours.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    return stats(samples)


def main():
    rows = []
    for spec in sys.argv[1:]:
        name, python = spec.split("=", 1)
        for pinned in (False, True):
            print("measuring: Python socketpair floor, %s, %s" % (
                name, "pinned" if pinned else "unpinned"), file=sys.stderr, flush=True)
            row = {"group": "floor", "subject": "Python socketpair", "twin": name,
                   "pinned": pinned, "metric": "rtt_1B", "payload_bytes": 1}
            try:
                row.update(measure(python, pinned))
            except Exception as error:  # reported, never dropped
                row["error"] = "%s: %s" % (type(error).__name__, error)
            rows.append(row)
    emit({"rows": rows})


if __name__ == "__main__":
    main()
