"""Where a bulk echo's time goes with a PyPy twin beside a CPython twin (issue #18).

For each bulk payload of ``cargo xtask bench`` (1 MiB bytes, a 100k-int list, a 10k
str->float dict) and each twin interpreter: the median echo through cpy2py, and
``perf record`` of the twin while it echoes, summed by the shared object the
samples fall in (cpy2py's ``_native`` module, the interpreter library, the kernel,
libc, JIT-compiled code) and, within ``_native``, by function.

Run: ``target/venv-cpython/bin/python bench/bulk_profile.py NAME=PYTHON ...
[--seconds S]``; needs ``perf`` and the right to profile another process (root).
"""

import argparse
import collections
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import BULK, make_payload  # noqa: E402
from cpy2py import TwinMaster  # noqa: E402


def echo(value):
    return value


def median_ms(twin, payload, calls=30):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        twin.execute(echo, payload)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def profile(twin, payload, seconds, scratch, tag):
    """{dso: share}, {_native function: share} of the twin's samples while echoing
    (shares in % of all its samples)."""
    data = os.path.join(scratch, tag + ".data")
    recorder = subprocess.Popen(
        ["perf", "record", "-q", "-F", "2000", "-o", data, "-p", str(twin.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)  # perf attaches
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        twin.execute(echo, payload)
    recorder.send_signal(signal.SIGINT)
    recorder.wait(30)
    by_dso = collections.Counter()
    for share, fields in perf_report(data, "dso", []):
        by_dso[short(fields[0])] += share
    native = collections.Counter()
    dsos = [name for name in by_dso if name == "_native"]
    if dsos:
        native_so = [line for line in perf_report_raw(data, "dso") if "_native" in line]
        path = native_so[0].split()[-1] if native_so else ""
        for share, fields in perf_report(data, "sym", ["--dsos", os.path.basename(path)]):
            native[" ".join(fields[1:])[:70]] += share
    return by_dso, native


def perf_report_raw(data, sort, extra=()):
    return subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
         "--percent-limit", "0.5", *extra],
        capture_output=True, text=True, check=True).stdout.splitlines()


def perf_report(data, sort, extra):
    """(share in %, the other fields) per line of a perf report."""
    for line in perf_report_raw(data, sort, extra):
        parts = line.split()
        if parts and parts[0].endswith("%"):
            yield float(parts[0].rstrip("%")), parts[1:]


def short(dso):
    if dso.startswith("["):
        return dso  # [kernel.kallsyms], [unknown] (JIT code), [vdso]
    name = os.path.basename(dso)
    return "_native" if name.startswith("_native") else name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("twins", nargs="+", help="NAME=PYTHON")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    twins = []
    for spec in args.twins:
        name, python = spec.split("=", 1)
        twin = TwinMaster(executable=python, twinterpreter_id="profile-" + name)
        twin.start()
        twins.append((name, twin))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for metric in BULK:
                payload = make_payload(metric)
                print("\n### %s\n" % metric)
                for name, twin in twins:
                    for _ in range(20):
                        twin.execute(echo, payload)  # warm-up (PyPy's JIT)
                    ms = median_ms(twin, payload)
                    by_dso, native = profile(twin, payload, args.seconds, scratch, metric + name)
                    print("- %s twin: median echo %.2f ms; twin's samples by object: %s" % (
                        name, ms, ", ".join("%s %.0f%%" % kv for kv in by_dso.most_common(6))))
                    if native:
                        print("  - in _native: %s" % ", ".join(
                            "%s %.1f%%" % kv for kv in native.most_common(5)))
                    sys.stdout.flush()
    finally:
        for _, twin in twins:
            twin.stop()


if __name__ == "__main__":
    main()
