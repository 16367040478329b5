"""A PyPy twin's RSS under calls with and without arguments (issue #17): the
reproducer behind docs/pypy-memory.md.

Starts a PyPy twin and makes batches of calls to it, printing the twin's RSS
(MiB) after each batch, for each case:

- ``no arguments``: ``execute(noop)``; the handler calls with ``call0``;
- ``one argument``: ``execute(ident, None)``; the handler builds a 1-tuple
  through cpyext (``PyTuple_New``) and calls with it;
- ``one argument, JIT off``: the same with the twin started as ``pypy --jit off``;
- ``one argument, one noop after batch 1``: the same, with a single
  ``execute(noop)`` after the first batch.

Run: ``target/venv-cpython/bin/python bench/pypy_memory.py [PYPY] [--batch N]``,
where PYPY is a PyPy with cpy2py installed (default ``target/venv-pypy/bin/python``).
"""

import argparse
import os
import stat
import sys
import tempfile

from cpy2py import TwinMaster

BATCHES = 5


def noop():
    return None


def ident(value):
    return value


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


def series(twin_id, executable, batch, with_argument, noop_after_first):
    twin = TwinMaster(executable=executable, twinterpreter_id=twin_id)
    twin.start()
    try:
        for _ in range(1000):  # warm up the paths and the JIT
            twin.execute(ident, None)
        sizes = [rss_mib(twin.pid)]
        for n in range(BATCHES):
            for _ in range(batch):
                if with_argument:
                    twin.execute(ident, None)
                else:
                    twin.execute(noop)
            if n == 0 and noop_after_first:
                twin.execute(noop)
            sizes.append(rss_mib(twin.pid))
        return sizes
    finally:
        twin.stop()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pypy", nargs="?", default=os.path.join(root, "target", "venv-pypy", "bin", "python"))
    parser.add_argument("--batch", type=int, default=100_000, help="calls per batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        # A venv's python must be run by its own path to find its site-packages.
        no_jit = os.path.join(scratch, "pypy-no-jit")
        with open(no_jit, "w") as script:
            script.write('#!/bin/sh\nexec "%s" --jit off "$@"\n' % args.pypy)
        os.chmod(no_jit, stat.S_IRWXU)
        cases = [
            ("no arguments", args.pypy, False, False),
            ("one argument", args.pypy, True, False),
            ("one argument, JIT off", no_jit, True, False),
            ("one argument, one noop after batch 1", args.pypy, True, True),
        ]
        print("| case | RSS after warm-up, then after each batch of %d calls (MiB) | per call in the last %d batches |"
              % (args.batch, BATCHES - 1))
        print("| --- | --- | ---: |")
        for number, (name, executable, with_argument, noop_after_first) in enumerate(cases):
            sizes = series("pypy-memory-%d" % number, executable, args.batch, with_argument, noop_after_first)
            per_call = (sizes[-1] - sizes[1]) * 1048576 / (args.batch * (BATCHES - 1))
            print("| %s | %s | %.0f B |" % (name, ", ".join("%.1f" % s for s in sizes), per_call))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
