"""cpy2py's own figures, for a CPython twin and a PyPy twin, in one run.

Run by ``cargo xtask bench`` with the CPython venv's python; the twins are the venv
pythons named by CPY2PY_TEST_CPYTHON and CPY2PY_TEST_PYPY. Each group of metrics is
measured in a fresh subprocess of this script, unpinned and pinned to CPU 0 (the twin
inherits the pinning), with a timeout:

- calls: ``execute(noop)``, ``execute(add, 1, 2)``, a TwinObject method call, an
  attribute read, an attribute read of a plain object by reference (a
  ``RemoteObject``), iterating a remote 100,000-int generator, echoes of a 64 MiB
  numpy array (as cpy2py sends it, and pickled with protocol 4 as bytes; CPython
  twin only), a depth-10 callback bounce (master -> twin -> master ... 10 hops,
  each hop a nested call), and echoes of 1 MiB of bytes, a 100,000-int list and a
  10,000-entry str -> float dict;
- startup (unpinned): ``TwinMaster.start()`` until the first ``execute`` returns,
  beside ``<twin python> -c pass`` and ``-c "import cpy2py"`` (floor rows);
- threads (unpinned): calls/s of 4 threads calling ``execute(noop)`` at once, and of
  one thread;
- futures (unpinned): calls/s of 10,000 ``submit(noop)`` in flight at once, against
  10,000 ``execute(noop)`` one at a time; and of ``asyncio.gather`` over 1,000
  ``aexecute(noop)``, against 1,000 ``loop.run_in_executor(None, execute, noop)`` on
  asyncio's default thread pool (the best of 5 alternated runs each). Beside them,
  ``concurrent.futures.InterpreterPoolExecutor`` if this CPython has it (3.14+);
- rust: the Rust host's no-op (the ``embed_pypy`` example), if it is built;
- ssh (unpinned): ``execute(noop)`` of a twin started through a throw-away sshd on
  127.0.0.1 (``integration-tests/python/sshd.py``), beside the transport's floor: a
  1-byte ping-pong with an echo loop run by the same interpreter through ssh with
  the same options (a connection of its own, so that the twin's session is not
  disturbed); measured in alternating blocks.

A group that fails or hangs becomes rows with its error. Prints one JSON object on
the last line of stdout: ``{"versions": {...}, "rows": [...]}``; the xtask renders it.
Counts come from the environment (see ``_timing.py``).
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _timing import (  # noqa: E402
    BULK, BULK_CALLS, BULK_SECONDS, CALLS, emit, failure, guarded, last_json, na, run_bounded,
    stats, threads_suite, timed, timed_bulk,
    timed_starts, timed_twin_starts, wanted,
)

from cpy2py import TwinMaster, TwinObject, by_ref, kernel_state, twinfunction  # noqa: E402

TWIN_ID = "bench"
TIMEOUT = float(os.environ.get("CPY2PY_BENCH_TIMEOUT", "600"))
HOPS = 10
CALL_METRICS = ("noop", "add", "method", "attribute", "ref_attribute", "bounce10") + BULK + (
    "generator_100k", "numpy_64mib", "numpy_64mib_pickle4",
)
GENERATOR_ITEMS = 100000
NUMPY_BYTES = 64 << 20


def noop():
    """The call being measured."""


def add(a, b):
    return a + b


def echo(value):
    return value


class Bench(TwinObject):
    """Lives in the twin; its proxy's method call and attribute read are measured."""

    __twin_id__ = TWIN_ID

    def __init__(self):
        self.x = 1

    def noop(self):
        pass


class Plain(object):
    """A plain object, made in the twin and read through a generic proxy."""

    def __init__(self):
        self.x = 1


def make_plain():
    return by_ref(Plain())


def numbers(n):
    """The generator iterated from the master: one item per int."""
    for i in range(n):
        yield i


def iterate_remote(twin):
    """Creates a remote generator of GENERATOR_ITEMS ints and iterates it here."""
    count = 0
    for _ in twin.execute(numbers, GENERATOR_ITEMS):
        count += 1
    return count


def has_numpy():
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def measure_numpy(twin, pickle4):
    """Echo of a 64 MiB numpy array: as cpy2py sends it (protocol 5, its buffer out
    of band), or pickled with protocol 4 by the caller and sent as bytes."""
    import pickle

    import numpy

    array = numpy.arange(NUMPY_BYTES // 8, dtype=numpy.float64)
    if pickle4:
        def round_trip():
            return pickle.loads(twin.execute(echo, pickle.dumps(array, 4)))
    else:
        def round_trip():
            return twin.execute(echo, array)
    if not (round_trip() == array).all():
        raise AssertionError("the array came back different")
    measured = timed(round_trip, calls=BULK_CALLS, warmup=1, budget=BULK_SECONDS)
    measured["mb_s"] = NUMPY_BYTES / measured["median_us"]
    measured["payload_bytes"] = NUMPY_BYTES
    return measured


def measure_generator(twin):
    if iterate_remote(twin) != GENERATOR_ITEMS:
        raise AssertionError("the remote generator lost items")
    return timed(iterate_remote, twin, calls=BULK_CALLS, warmup=2, budget=BULK_SECONDS)


@twinfunction(TWIN_ID)
def bounce_twin(hops):
    """One hop into the twin; the next hop goes back to the master."""
    if hops > 1:
        bounce_master(hops - 1)


@twinfunction(kernel_state.MASTER_ID)
def bounce_master(hops):
    """One hop back into the master (a callback on the waiting thread)."""
    if hops > 1:
        bounce_twin(hops - 1)


def measure_calls(python):
    twin = TwinMaster(executable=python, twinterpreter_id=TWIN_ID)
    twin.start()
    result = {}
    try:
        obj = Bench()
        guarded(result, "noop", timed, twin.execute, noop)
        guarded(result, "add", timed, twin.execute, add, 1, 2)
        guarded(result, "method", timed, obj.noop)
        guarded(result, "attribute", timed, lambda: obj.x)
        plain = twin.execute(make_plain)
        guarded(result, "ref_attribute", timed, lambda: plain.x)
        guarded(result, "bounce10", measure_bounce)
        for metric in BULK:
            guarded(result, metric, timed_bulk, lambda value: twin.execute(echo, value), metric)
        guarded(result, "generator_100k", measure_generator, twin)
        if twin.execute(has_numpy):
            guarded(result, "numpy_64mib", measure_numpy, twin, False)
            guarded(result, "numpy_64mib_pickle4", measure_numpy, twin, True)
        else:
            na(result, "numpy_64mib", "numpy is not installed for this twin")
            na(result, "numpy_64mib_pickle4", "numpy is not installed for this twin")
    finally:
        twin.stop()
    return result


def measure_bounce():
    """Depth-10 bounce from the master; also per hop (each hop is one nested call)."""
    result = timed(bounce_twin, HOPS)
    result["hops"] = HOPS
    result["per_hop_median_us"] = result["median_us"] / HOPS
    result["per_hop_p99_us"] = result["p99_us"] / HOPS
    return result


def measure_startup(python):
    """Twin start to first call returned, beside the bare interpreter's starts."""
    result = {}
    run = lambda *args: subprocess.run(  # noqa: E731
        [python, *args], check=True, timeout=120, stdin=subprocess.DEVNULL)
    guarded(result, "startup_pass", timed_starts, lambda: run("-c", "pass"))
    guarded(result, "startup_import", timed_starts, lambda: run("-c", "import cpy2py"))
    guarded(result, "startup", timed_twin_starts, TwinMaster, python, "start", noop)
    return result


def measure_threads(python):
    twin = TwinMaster(executable=python, twinterpreter_id=TWIN_ID)
    twin.start()
    result = {}
    try:
        guarded(result, "threads", threads_suite, lambda: lambda: twin.execute(noop))
    finally:
        twin.stop()
    return result


PIPELINED = 10000
GATHERED = 1000
FUTURE_RUNS = 5


def best_rate(calls, run, baseline):
    """calls/s of the best of FUTURE_RUNS runs of ``run`` and of ``baseline``, each
    ``calls`` calls, alternated so that both see the same machine."""
    import time

    best = {"ours": 0.0, "baseline": 0.0}
    for _ in range(FUTURE_RUNS):
        for name, body in (("ours", run), ("baseline", baseline)):
            start = time.perf_counter()
            body()
            best[name] = max(best[name], calls / (time.perf_counter() - start))
    return {"calls_per_s": best["ours"], "baseline_calls_per_s": best["baseline"],
            "speedup": best["ours"] / best["baseline"], "calls": calls}


def measure_submit(twin):
    def pipelined():
        futures = [twin.submit(noop) for _ in range(PIPELINED)]
        for future in futures:
            future.result(timeout=TIMEOUT)

    def one_at_a_time():
        for _ in range(PIPELINED):
            twin.execute(noop)

    result = best_rate(PIPELINED, pipelined, one_at_a_time)
    result["baseline"] = "execute one at a time"
    return result


def measure_gather(twin):
    import asyncio

    async def gathered():
        await asyncio.gather(*[twin.aexecute(noop) for _ in range(GATHERED)])

    async def on_threads():
        loop = asyncio.get_running_loop()
        await asyncio.gather(*[loop.run_in_executor(None, twin.execute, noop) for _ in range(GATHERED)])

    loop = asyncio.new_event_loop()
    try:
        result = best_rate(GATHERED, lambda: loop.run_until_complete(gathered()),
                           lambda: loop.run_until_complete(on_threads()))
    finally:
        loop.close()
    result["baseline"] = "run_in_executor on asyncio's thread pool"
    return result


def measure_interpreter_pool():
    """10,000 pipelined no-ops on CPython's own subinterpreter pool, if it has one."""
    import concurrent.futures
    import time

    pool_type = getattr(concurrent.futures, "InterpreterPoolExecutor", None)
    if pool_type is None:
        return {"na": "this CPython (%s) has no concurrent.futures.InterpreterPoolExecutor (3.14+)"
                % sys.version.split()[0]}
    best = 0.0
    with pool_type(max_workers=2) as pool:
        for _ in range(FUTURE_RUNS):
            start = time.perf_counter()
            for future in [pool.submit(noop) for _ in range(PIPELINED)]:
                future.result()
            best = max(best, PIPELINED / (time.perf_counter() - start))
    return {"calls_per_s": best, "calls": PIPELINED}


def measure_futures(python):
    twin = TwinMaster(executable=python, twinterpreter_id=TWIN_ID)
    twin.start()
    result = {}
    try:
        guarded(result, "submit_10k", measure_submit, twin)
        guarded(result, "gather_1k", measure_gather, twin)
    finally:
        twin.stop()
    if wanted("submit_10k"):
        try:
            result["interpreter_pool_10k"] = measure_interpreter_pool()
        except Exception as error:  # reported, never dropped
            result["interpreter_pool_10k"] = {"error": "%s: %s" % (type(error).__name__, error)}
    return result


#: The far side of the ssh floor: echoes each byte it reads, unbuffered.
SSH_ECHO = "import os\nwhile True:\n b = os.read(0, 1)\n if not b: break\n os.write(1, b)\n"


#: Blocks of calls that alternate between the ssh floor and the ssh twin: wake-up
#: latency through ssh drifts over seconds on a busy VM, and each side gets its share.
SSH_BLOCKS = 5


class SshEcho(object):
    """An echo loop in ``python`` behind ssh, with the same options as the twin's."""

    def __init__(self, server, python):
        self.process = subprocess.Popen(
            server.ssh_command("exec", python, "-c", "'%s'" % SSH_ECHO),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.out = self.process.stdin.fileno()
        self.back = self.process.stdout.fileno()

    def round_trip(self):
        os.write(self.out, b"x")
        if os.read(self.back, 1) != b"x":
            raise RuntimeError("the ssh echo ended: %s" % (self.process.poll(),))

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


def samples_of(op, calls):
    """Durations of ``calls`` calls of ``op``, after a tenth as many unmeasured."""
    for _ in range(max(calls // 10, 2)):
        op()
    clock = time.perf_counter
    samples = []
    for _ in range(calls):
        start = clock()
        op()
        samples.append(clock() - start)
    return samples


def measure_ssh(python):
    """A twin behind a loopback sshd, beside a byte ping-pong through ssh, in
    alternating blocks."""
    import tempfile

    sys.path.insert(0, os.path.join(ROOT, "integration-tests", "python"))
    import sshd

    available, reason = sshd.available()
    if not available:
        if os.environ.get("CI") == "true":
            return {"ssh_noop": {"error": reason}, "ssh_floor": {"error": reason}}
        return {"ssh_noop": {"na": reason}, "ssh_floor": {"na": reason}}
    floor, ours = [], []
    with tempfile.TemporaryDirectory(prefix="cpy2py-bench-sshd-") as directory:
        with sshd.Sshd(directory) as server:
            echo = SshEcho(server, python)
            twin = TwinMaster(executable=python, twinterpreter_id="bench-ssh", host=server.host,
                              ssh_options=server.ssh_options())
            twin.start()
            try:
                block = max(CALLS // SSH_BLOCKS, 3)
                for _ in range(SSH_BLOCKS):
                    floor += samples_of(echo.round_trip, block)
                    ours += samples_of(lambda: twin.execute(noop), block)
            finally:
                twin.stop()
                echo.close()
    return {"ssh_floor": stats(floor), "ssh_noop": stats(ours)}


def measure_rust_host(python):
    """The Rust host example's no-op round trip, if it is built."""
    example = os.path.join(ROOT, "target", "release", "examples", "embed_pypy")
    if not os.path.exists(example):
        return {"rust_host_noop": {"na": "target/release/examples/embed_pypy is not built"}}
    done = run_bounded([example], TIMEOUT, env=dict(os.environ, CPY2PY_EXAMPLE_PYPY=python))
    if done.returncode != 0:
        return {"rust_host_noop": {"error": "embed_pypy: " + failure(done)}}
    for line in done.stdout.splitlines():
        if line.startswith("round trip of a no-op call"):
            median = float(line.split("median ")[1].split(" ")[0])
            p99 = float(line.split("p99 ")[1].split(" ")[0])
            calls = int(line.split("over ")[1].split(" ")[0])
            return {"rust_host_noop": {"median_us": median, "p99_us": p99, "samples": calls}}
    return {"rust_host_noop": {"error": "embed_pypy printed no round-trip line"}}


GROUPS = {
    "calls": (measure_calls, CALL_METRICS, (False, True)),
    "startup": (measure_startup, ("startup",), (False,)),
    "threads": (measure_threads, ("threads",), (False,)),
    "futures": (measure_futures, ("submit_10k", "gather_1k"), (False,)),
    "rust": (measure_rust_host, ("rust_host_noop",), (False, True)),
    "ssh": (measure_ssh, ("ssh_noop",), (False,)),
}


def child_main(group, python, pinned):
    if pinned:
        os.sched_setaffinity(0, {0})
    emit(GROUPS[group][0](python))


def run_child(group, python, pinned):
    """Runs one group in a subprocess; returns its results or {"error": ...}."""
    try:
        done = run_bounded(
            [sys.executable, __file__, "--child", group, python, "1" if pinned else "0"],
            TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": "hung: no result within %.0f s" % TIMEOUT}
    sys.stderr.write(done.stderr)
    return last_json(done)


def interpreter(python):
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.implementation.name, sys.version.split()[0])"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout.strip()


def rows_of(result, metrics, twin, pinned):
    """Flat report rows from one child's results."""
    rows = []
    for metric in metrics:
        if not wanted(metric):
            continue
        names = [metric]
        if metric == "startup":
            names = ["startup_pass", "startup_import", "startup"]
        elif metric == "ssh_noop":
            names = ["ssh_floor", "ssh_noop"]
        elif metric == "submit_10k" and twin == "CPython":
            names = ["submit_10k", "interpreter_pool_10k"]  # the pool once, beside CPython
        for name in names:
            row = {"group": "ours", "subject": "cpy2py", "twin": twin, "pinned": pinned,
                   "metric": name}
            if name == "rust_host_noop":
                row.update(subject="cpy2py (Rust host)", metric="noop")
            elif name == "ssh_floor":
                row.update(group="floor", subject="ssh ping-pong", metric="rtt_1B", payload_bytes=1)
            elif name in ("startup_pass", "startup_import"):
                row.update(group="floor", subject="interpreter start")
            elif name == "interpreter_pool_10k":
                # the master's own subinterpreters: no twin involved
                row.update(group="peer", subject="InterpreterPoolExecutor", metric="submit_10k")
            if "error" in result:
                row["error"] = result["error"]
            elif name in result:
                row.update(result[name])
            else:
                continue
            rows.append(row)
    return rows


def main():
    import importlib.metadata

    twins = [
        (name, os.environ[var])
        for name, var in (("CPython", "CPY2PY_TEST_CPYTHON"), ("PyPy", "CPY2PY_TEST_PYPY"))
        if os.environ.get(var)
    ]
    versions = {
        "master": interpreter(sys.executable),
        "twins": {name: interpreter(python) for name, python in twins},
        "cpy2py": importlib.metadata.version("cpy2py"),
    }
    rows = []
    for name, python in twins:
        for group, (_, metrics, pinnings) in GROUPS.items():
            if not any(wanted(metric) for metric in metrics):
                continue
            for pinned in pinnings:
                print("measuring: cpy2py %s, %s twin, %s" % (
                    group, name, "pinned" if pinned else "unpinned"), file=sys.stderr, flush=True)
                rows.extend(rows_of(run_child(group, python, pinned), metrics, name, pinned))
    emit({"versions": versions, "rows": rows})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        main()
