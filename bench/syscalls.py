"""System calls per round trip, on each side: ``execute(noop)`` through cpy2py beside
the blocking 1-byte socketpair ping-pong of ``floor.py`` (issue #18).

For each twin interpreter, runs N round trips while ``strace -c -f`` is attached to
this process (the master) and to the far side, and prints per side the calls per
round trip, by name, from strace's summaries. Warm-up calls run before strace
attaches. Needs ``strace`` and the right to attach (root, or ptrace_scope 0).

Run: ``target/venv-cpython/bin/python bench/syscalls.py NAME=PYTHON ... [--calls N]``.
"""

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from floor import ECHO  # noqa: E402  (the floor's own echo loop)
from cpy2py import TwinMaster  # noqa: E402


def noop():
    return None


def attach(pid, out):
    """strace -c on every thread of ``pid``; returns once it is attached."""
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-o", out, "-p", str(pid)],
        stderr=subprocess.PIPE, text=True)
    # strace says "Process N attached" on stderr once per thread it attached
    # (after warnings of its own probes, if any).
    said = []
    while not said or "attached" not in said[-1]:
        line = tracer.stderr.readline()
        if not line:
            tracer.kill()
            raise RuntimeError("strace could not attach to %d: %s" % (pid, " ".join(said)))
        said.append(line.strip())
    time.sleep(0.2)  # the other threads' attach lines; nothing is measured yet
    return tracer


def detach(tracer):
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)


def per_call(path, calls):
    """{syscall: calls per round trip} from an ``strace -c`` summary."""
    counts = {}
    with open(path) as summary:
        for line in summary:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3]) / calls
    return {name: n for name, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= 0.01}


def traced(master_pid, far_pid, run, calls, scratch, tag):
    master_out = os.path.join(scratch, tag + "-master.txt")
    far_out = os.path.join(scratch, tag + "-far.txt")
    # The far side's tracer first: the master's, with -f, would trace it too.
    tracers = [attach(far_pid, far_out), attach(master_pid, master_out)]
    try:
        run(calls)
    finally:
        for tracer in tracers:
            detach(tracer)
    return per_call(master_out, calls), per_call(far_out, calls)


def floor_pair(python):
    ours, theirs = socket.socketpair()
    env = dict(os.environ, BENCH_FD=str(theirs.fileno()))
    child = subprocess.Popen([python, "-c", ECHO], env=env, pass_fds=(theirs.fileno(),),
                             stdin=subprocess.DEVNULL)
    theirs.close()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 30, 0))

    def run(calls):
        for _ in range(calls):
            ours.send(b"x")
            ours.recv(1)
    return ours, child, run


def show(title, sides):
    for side, counts in zip(("master", "far side"), sides):
        total = sum(counts.values())
        print("| %s | %s | %.2f | %s |" % (
            title, side, total, ", ".join("%s %.2f" % kv for kv in counts.items())))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("twins", nargs="+", help="NAME=PYTHON")
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    print("| round trip | side | syscalls per round trip | by name |")
    print("| --- | --- | ---: | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.twins:
            name, python = spec.split("=", 1)
            ours, child, run = floor_pair(python)
            try:
                run(1000)
                show("floor, %s" % name, traced(os.getpid(), child.pid, run, args.calls, scratch, name + "-floor"))
            finally:
                ours.close()
                child.wait(30)
            twin = TwinMaster(executable=python, twinterpreter_id="syscalls-" + name)
            twin.start()
            try:
                for _ in range(1000):
                    twin.execute(noop)

                def calls(n):
                    for _ in range(n):
                        twin.execute(noop)
                show("`execute(noop)`, %s twin" % name,
                     traced(os.getpid(), twin.pid, calls, args.calls, scratch, name + "-ours"))
            finally:
                twin.stop()


if __name__ == "__main__":
    main()
