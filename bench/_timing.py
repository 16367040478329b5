"""Shared helpers for the benchmarks: payloads, timing loops and statistics.

Every benchmark times single operations after a warm-up and reports the median and
the p99 in microseconds. The counts come from the environment, set by
``cargo xtask bench`` (``--quick`` lowers them):

- CPY2PY_BENCH_CALLS: measured calls of each small-call metric (default 20000);
- CPY2PY_BENCH_BULK_CALLS: measured echoes of each bulk payload (default 200), fewer
  if they take longer than CPY2PY_BENCH_BULK_SECONDS (default 5);
- CPY2PY_BENCH_STARTUPS: measured process or twin starts (default 10);
- CPY2PY_BENCH_THREAD_CALLS: calls per thread in the throughput runs (default 5000);
- CPY2PY_BENCH_METRIC_TIMEOUT: seconds after which a metric counts as hung (default 120).

CPY2PY_BENCH_ONLY, a comma-separated list of metric names (see METRICS), restricts a
script to those metrics.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

CALLS = int(os.environ.get("CPY2PY_BENCH_CALLS", "20000"))
WARMUP = max(CALLS // 10, 10)
BULK_CALLS = int(os.environ.get("CPY2PY_BENCH_BULK_CALLS", "200"))
STARTUPS = int(os.environ.get("CPY2PY_BENCH_STARTUPS", "10"))
THREAD_CALLS = int(os.environ.get("CPY2PY_BENCH_THREAD_CALLS", "5000"))
THREADS = 4
#: Bulk echoes stop early once they have taken this long (at least 3 are measured).
BULK_SECONDS = float(os.environ.get("CPY2PY_BENCH_BULK_SECONDS", "5"))
#: A metric still running after this long is reported as hung.
METRIC_TIMEOUT = int(os.environ.get("CPY2PY_BENCH_METRIC_TIMEOUT", "120"))

#: Metric names, as they appear in report.json.
METRICS = (
    "noop", "add", "method", "attribute", "ref_attribute", "bytes_1mib", "list_100k",
    "dict_10k", "generator_100k", "numpy_64mib", "numpy_64mib_pickle4", "startup", "bounce10",
    "threads", "submit_10k", "gather_1k", "rust_host_noop", "ssh_noop",
)
_ONLY = {name for name in os.environ.get("CPY2PY_BENCH_ONLY", "").split(",") if name}

#: Size of the bytes payload.
BULK_BYTES = 1 << 20


#: Figures measured beside a metric (its floors), wanted whenever it is.
COMPANIONS = {"startup_pass": "startup", "startup_import": "startup", "ssh_floor": "ssh_noop"}


def wanted(metric):
    """Whether CPY2PY_BENCH_ONLY lets ``metric`` run."""
    return not _ONLY or COMPANIONS.get(metric, metric) in _ONLY


def make_payload(metric):
    """The payload echoed by a bulk metric."""
    if metric == "bytes_1mib":
        return os.urandom(BULK_BYTES)
    if metric == "list_100k":
        return list(range(100_000))
    if metric == "dict_10k":
        return {"key%d" % i: i * 0.5 for i in range(10_000)}
    raise ValueError(metric)


#: The bulk metrics, each the echo of one payload.
BULK = ("bytes_1mib", "list_100k", "dict_10k")
#: The metrics of a peer's "calls" run (both pinnings); startup and threads run alone.
CALL_METRICS = ("noop", "add") + BULK


def stats(samples, **extra):
    samples = sorted(samples)
    result = {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[min(int(len(samples) * 0.99), len(samples) - 1)] * 1e6,
        "samples": len(samples),
    }
    result.update(extra)
    return result


def timed(op, *args, calls=None, warmup=None, budget=None):
    """Median and p99 of ``op(*args)`` over ``calls`` (default CALLS) timed calls, or
    fewer (at least 3) once the timed calls have taken ``budget`` seconds."""
    calls = CALLS if calls is None else calls
    warmup = max(calls // 10, 2) if warmup is None else warmup
    for _ in range(warmup):
        op(*args)
    samples = []
    clock = time.perf_counter
    deadline = None if budget is None else clock() + budget
    for i in range(calls):
        start = clock()
        op(*args)
        end = clock()
        samples.append(end - start)
        if deadline is not None and end > deadline and i >= 2:
            break
    return stats(samples)


def timed_bulk(echo, metric):
    """Times ``echo(payload)`` for one bulk metric; checks the echo once."""
    payload = make_payload(metric)
    result = echo(payload)
    if result != payload:
        raise AssertionError("%s: the echo differs from the payload (%s)" % (
            metric, type(result).__name__))
    measured = timed(echo, payload, calls=BULK_CALLS, warmup=2, budget=BULK_SECONDS)
    if metric == "bytes_1mib":
        # MB/s of payload moved per round trip (one way; it travels both ways).
        measured["mb_s"] = BULK_BYTES / measured["median_us"]
        measured["payload_bytes"] = BULK_BYTES
    return measured


def throughput(make_call, threads):
    """Total calls/s of ``threads`` threads calling at once. Each thread gets its own
    callable from ``make_call()`` (called in that thread), warms it up, then calls it
    THREAD_CALLS times once all threads are ready."""
    barrier = threading.Barrier(threads + 1)
    errors = []

    def worker():
        try:
            call = make_call()
            for _ in range(max(THREAD_CALLS // 10, 2)):
                call()
            barrier.wait(timeout=120)
            for _ in range(THREAD_CALLS):
                call()
        except BaseException as error:  # reported below
            errors.append(repr(error))
            barrier.abort()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass  # a worker failed: its error is reported below
    start = time.perf_counter()
    for thread in workers:
        thread.join(timeout=300)
    elapsed = time.perf_counter() - start
    if any(thread.is_alive() for thread in workers):
        raise RuntimeError("%d threads: calls hang" % threads)
    if errors:
        raise RuntimeError("%d threads: %s" % (threads, errors[0]))
    return {"calls_per_s": threads * THREAD_CALLS / elapsed, "threads": threads,
            "calls": threads * THREAD_CALLS}


def threads_suite(make_call):
    """One thread's and THREADS threads' calls/s, and their ratio."""
    one = throughput(make_call, 1)
    many = throughput(make_call, THREADS)
    many["one_thread_calls_per_s"] = one["calls_per_s"]
    many["speedup"] = many["calls_per_s"] / one["calls_per_s"]
    return many


def timed_starts(start_and_stop):
    """Median and p99 over STARTUPS runs of ``start_and_stop()``, after one discarded
    run that fills the page cache. If it returns a number, that is the run's time in
    seconds (so that it can leave its shutdown out); otherwise the whole call is timed."""
    start_and_stop()
    samples = []
    for _ in range(STARTUPS):
        start = time.perf_counter()
        took = start_and_stop()
        samples.append(took if isinstance(took, float) else time.perf_counter() - start)
    return stats(samples)


def timed_twin_starts(twin_master, python, prefix, noop):
    """``timed_starts`` of a cpy2py twin (ours or the original: ``twin_master`` is that
    package's TwinMaster), from ``start()`` to the first ``execute(noop)`` returned;
    each start gets a fresh twin id, as a new twin would."""
    count = [0]

    def start_and_first_call():
        count[0] += 1
        twin = twin_master(executable=python, twinterpreter_id="%s%d" % (prefix, count[0]))
        begin = time.perf_counter()
        twin.start()
        twin.execute(noop)
        took = time.perf_counter() - begin
        twin.stop()
        return took

    return timed_starts(start_and_first_call)


def na(result, metric, reason):
    """Marks ``metric`` as not measurable for this peer (if it was asked for)."""
    if wanted(metric):
        result[metric] = {"na": reason}


def wants_any(metrics):
    return any(wanted(metric) for metric in metrics)


class Hung(Exception):
    """Raised in the main thread when a metric runs longer than METRIC_TIMEOUT."""


def _hung(signum, frame):
    raise Hung("no result within %d s" % METRIC_TIMEOUT)


def guarded(result, metric, measure, *args):
    """Runs ``measure(*args)`` into ``result[metric]`` if the metric is wanted; an
    exception, or running longer than METRIC_TIMEOUT, becomes ``{"error": ...}`` so that
    one failing metric keeps the rest."""
    if not wanted(metric):
        return
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(METRIC_TIMEOUT)
    try:
        result[metric] = measure(*args)
    except Exception as error:  # reported, never dropped
        result[metric] = {"error": "%s: %s" % (type(error).__name__, error)}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_bounded(args, timeout, **kwargs):
    """``subprocess.run(args, capture_output=True, text=True)`` in a session of its
    own; on timeout the whole process group is killed (twins, servers and workers
    included) and ``subprocess.TimeoutExpired`` is raised."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL, start_new_session=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(args, proc.returncode, out, err)


def failure(done):
    """The error of a finished run: its exit status and its last line on stderr."""
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
    return "exit %s: %s" % (done.returncode, tail[0] if tail else "no output")


def last_json(done):
    """The JSON object on the last line of a run's stdout, or {"error": ...}."""
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": failure(done)}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"error": "unreadable output: %r" % lines[-1][:200]}


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


def echo(value):
    return value
