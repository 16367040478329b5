"""Soak: mixed load on a PyPy and a CPython twin for a while, then a table.

Run by ``cargo xtask soak --seconds N`` with the CPython venv's python; the twins
are the venv pythons named by CPY2PY_TEST_PYPY and CPY2PY_TEST_CPYTHON. Four
threads run at once until the time is up:

- plain calls (``execute(noop)``) to the PyPy twin;
- TwinObject churn: create an object in the PyPy twin, call it, drop it;
- callbacks: a function in the PyPy twin calls back into the master, 3 deep;
- 64 KiB bytes echoed through the CPython twin;
- a 2 MiB out-of-band buffer (a ``PickleBuffer``, as numpy arrays send theirs)
  echoed through the CPython twin: through the shared-memory arenas, whose places
  must all be back at the end.

The loads first run for a warm-up (10 s, or a sixth of a shorter run) that is not
measured, so that the twins' pools have their threads and PyPy's JIT its loops.
RSS of every process (without its shared memory, which is reported apart and
bounded) is sampled at the start and the end (after a garbage collection) and at
every tenth of the run, and the live exported objects of each
interpreter are counted at the end, after releases are flushed: a leak shows as
growth there. Exits non-zero if any call failed, objects stayed exported, or a
process's RSS moved by more than 10 % after it settled (after 60 s, or a third of
a shorter run: second 20 to 60 of a 60 s soak).

The PyPy twin's GC figures are printed too: PyPy sizes its nursery from the CPU
cache that ``/proc/cpuinfo`` reports (half of it), and a VM that reports a huge L3
gets a huge nursery. Its pages become resident one by one before the first minor
collection, and the old generation may grow to 8 nurseries before the first major
one (PyPy's ``PYPY_GC_MIN`` default), so RSS climbs for a long time without any
leak. ``PYPY_GC_NURSERY`` (inherited by the twin) bounds it.
"""

import gc
import os
import sys
import threading
import time

from arenahelpers import Blob  # bytes that pickle out of band, as numpy arrays do
from cpy2py import TwinMaster, TwinObject, _native, kernel_state, twinfunction

PYPY_ID = "soak-pypy"
CPYTHON_ID = "soak-cpython"
PAYLOAD = bytes(range(256)) * 256  # 64 KiB
#: Seconds of the full load before anything is measured (at most a sixth of the run).
WARMUP = 10.0
#: RSS is compared with its value after this many seconds (or a third of the run)...
SETTLED_AFTER = 60.0
#: ...and must stay within this many percent of it to the end.
DRIFT_PERCENT = 10
#: Resident shared memory a process may hold at the end: two arenas' retained
#: pages (its own for a peer, and the peer's).
SHMEM_MAX_KIB = 2 * 128 * 1024


BLOB = Blob(bytearray(PAYLOAD * 32))  # 2 MiB


def places_out():
    """Places of this process's arena the master holds."""
    return _native.arena_places_out(_native.MASTER_PEER)


def noop():
    """The plain call."""


def echo(value):
    """Returns its argument (by value)."""
    return value


class Churn(TwinObject):
    """Short-lived objects of the PyPy twin."""

    __twin_id__ = PYPY_ID

    def __init__(self, n):
        self.n = n

    def bump(self):
        self.n += 1
        return self.n


@twinfunction(kernel_state.MASTER_ID)
def master_side(depth):
    """Runs in the master; bounces back into the twin while depth is left."""
    return twin_side(depth - 1) + 1 if depth > 0 else 0


@twinfunction(PYPY_ID)
def twin_side(depth):
    """Runs in the PyPy twin; bounces back into the master while depth is left."""
    return master_side(depth - 1) + 1 if depth > 0 else 0


def settle():
    """Collects garbage and sends batched releases (here, twice for PyPy)."""
    gc.collect()
    gc.collect()
    _native.flush_releases()
    return _native.exported_count()


def pypy_gc():
    """The PyPy GC's own memory figures (run in the PyPy twin)."""
    stats = gc.get_stats()
    return {k: str(getattr(stats, k)) for k in ("nursery_size", "total_gc_memory", "peak_memory")}


def rss_kib(pid):
    """Resident memory of ``pid`` without its shared memory (``RssShmem``): the
    arenas' pages, resident once used and bounded by design (see
    :func:`shmem_kib`), would hide or fake a trend in a 20 MiB process."""
    fields = status_kib(pid)
    return fields.get("VmRSS", 0) - fields.get("RssShmem", 0)


def shmem_kib(pid):
    """Resident shared memory of ``pid``: pages of its own arenas and of the ones
    it maps (the first 128 MiB of each stay resident once used)."""
    return status_kib(pid).get("RssShmem", 0)


def status_kib(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[name] = int(value.split()[0])
    return fields


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    pypy = TwinMaster(executable=os.environ["CPY2PY_TEST_PYPY"], twinterpreter_id=PYPY_ID)
    cpython = TwinMaster(
        executable=os.environ["CPY2PY_TEST_CPYTHON"], twinterpreter_id=CPYTHON_ID
    )
    pypy.start()
    cpython.start()
    processes = {"master (CPython)": os.getpid(), "PyPy twin": pypy.pid, "CPython twin": cpython.pid}

    def one_round():
        pypy.execute(noop)
        Churn(1).bump()
        assert twin_side(3) == 3
        assert cpython.execute(echo, PAYLOAD) == PAYLOAD
        assert bytes(cpython.execute(echo, BLOB).data) == bytes(BLOB.data)

    one_round()  # every path has run once before the warm-up

    counts = {"calls": 0, "objects": 0, "callbacks": 0, "bytes echoes": 0, "buffer echoes": 0}
    errors = []

    def loop(kind, step, until, record=True):
        n = 0
        try:
            while time.monotonic() < until:
                step()
                n += 1
        except Exception as error:  # reported, and fails the soak
            errors.append("%s: %r" % (kind, error))
        if record:
            counts[kind] = n

    def churn():
        obj = Churn(1)
        assert obj.bump() == 2

    steps = {
        "calls": lambda: pypy.execute(noop),
        "objects": churn,
        "callbacks": lambda: twin_side(3),
        "bytes echoes": lambda: cpython.execute(echo, PAYLOAD),
        "buffer echoes": lambda: cpython.execute(echo, BLOB),
    }
    only = os.environ.get("CPY2PY_SOAK_ONLY")  # one load alone, to find a leak
    if only:
        steps = {only: steps[only]}
        counts = {only: 0}
    # Warm-up under the full load: the twins' pools reach the threads this load
    # needs, and PyPy's JIT compiles its loops, before anything is measured.
    warm_until = time.monotonic() + min(WARMUP, seconds / 6)
    warmers = [threading.Thread(target=loop, args=(k, s, warm_until, False)) for k, s in steps.items()]
    for t in warmers:
        t.start()
    for t in warmers:
        t.join(WARMUP + 120)
    settle()
    pypy.execute(settle)
    rss_start = {name: rss_kib(pid) for name, pid in processes.items()}

    started = time.monotonic()
    stop = started + seconds
    threads = [threading.Thread(target=loop, args=(k, s, stop)) for k, s in steps.items()]
    for t in threads:
        t.start()
    series = []  # (seconds since start, {process: RSS KiB})
    settled_at = min(SETTLED_AFTER, seconds / 3)
    for at in sorted({seconds * tenth / 10 for tenth in range(1, 11)} | {settled_at}):
        time.sleep(max(0.0, started + at - time.monotonic()))
        if not any(t.is_alive() for t in threads):
            break
        series.append((time.monotonic() - started, {n: rss_kib(p) for n, p in processes.items()}))
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.monotonic() - started

    exported = {
        "master (CPython)": settle(),
        "PyPy twin": pypy.execute(settle),
        "CPython twin": cpython.execute(settle),
    }
    # the master's releases reach the twins before these calls: count again
    exported["PyPy twin"] = pypy.execute(settle)
    places = {
        "master (CPython)": _native.arena_places_out(cpython.peer),
        "CPython twin": cpython.execute(places_out),
    }
    rss_end = {name: rss_kib(pid) for name, pid in processes.items()}
    shmem_end = {name: shmem_kib(pid) for name, pid in processes.items()}
    gc_figures = pypy.execute(pypy_gc)
    pypy.stop()
    cpython.stop()

    total = sum(counts.values())
    print(
        "Soak of %.0f s: %d operations (%.0f/s) from %d threads.\n"
        % (elapsed, total, total / elapsed, len(threads))
    )
    print("| load | operations | per second |")
    print("| --- | ---: | ---: |")
    for kind, n in counts.items():
        print("| %s | %d | %.0f |" % (kind, n, n / elapsed))
    print(
        "\n| process | RSS start (MiB) | RSS end (MiB) | shared memory end (MiB) "
        "| live exported objects at the end | arena places not given back |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in processes:
        print(
            "| %s | %.1f | %.1f | %.1f | %d | %s |"
            % (
                name,
                rss_start[name] / 1024,
                rss_end[name] / 1024,
                shmem_end[name] / 1024,
                exported[name],
                places.get(name, "—"),
            )
        )
    print("\nRSS during the run (MiB):\n")
    print("| s | " + " | ".join(processes) + " |")
    print("| ---: |" + " ---: |" * len(processes))
    for at, rss in series:
        print("| %.0f | " % at + " | ".join("%.1f" % (rss[n] / 1024) for n in processes) + " |")
    print(
        "\nPyPy twin GC at the end: nursery %(nursery_size)s, GC memory %(total_gc_memory)s, "
        "peak %(peak_memory)s" % gc_figures
        + (" (PYPY_GC_NURSERY=%s)" % os.environ["PYPY_GC_NURSERY"] if "PYPY_GC_NURSERY" in os.environ else "")
        + "."
    )
    drift = rss_drift(series, settled_at)
    print(
        "\nRSS from %.0f s on, against its value then (allowed: ±%d %%): %s."
        % (settled_at, DRIFT_PERCENT, ", ".join("%s %+.1f %%" % item for item in drift.items()))
    )
    for name, percent in drift.items():
        if abs(percent) > DRIFT_PERCENT:
            errors.append("the RSS of the %s moved %+.1f %% after %.0f s" % (name, percent, settled_at))
    for name, kib in shmem_end.items():
        # its own arena and the master's (or each twin's): at most 128 MiB each
        if kib > SHMEM_MAX_KIB:
            errors.append("the %s holds %.1f MiB of shared memory" % (name, kib / 1024))
    if errors:
        print("\nErrors:\n" + "\n".join("- " + e for e in errors))
    return 1 if errors or any(exported.values()) or any(places.values()) else 0


def rss_drift(series, settled_at):
    """Per process, the largest move of its RSS after ``settled_at`` seconds, in
    percent of its RSS then (the first sample at or after it)."""
    later = [rss for at, rss in series if at >= settled_at - 0.5]
    if not later:
        raise RuntimeError("the soak ended before its RSS had settled")
    base = later[0]
    return {
        name: max((100.0 * (rss[name] - base[name]) / base[name] for rss in later), key=abs)
        for name in base
    }


if __name__ == "__main__":
    sys.exit(main())
