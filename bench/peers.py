"""Peers of cpy2py, side by side in one run: the `noop` and `add(1, 2)` round trips.

Run by ``cargo xtask bench`` with the python of ``target/bench-venv-peers`` (which has
RPyC, execnet and Pyro5 from PyPI); the original cpy2py (PyPI 0.17.1) imports as
``cpy2py`` like ours, so it runs with the python of ``target/bench-venv-cpy2py017``.
Each peer runs in its own subprocess (one script per peer in this directory), unpinned
and pinned to CPU 0 (children inherit the pinning), with a timeout; a peer that fails
or hangs is reported as such with its error, never dropped. Workers are CPython, and
PyPy (``pypy3`` on PATH, or CPY2PY_BENCH_PYPY) where the peer can start a PyPy worker
easily; rows where it cannot are marked n/a. The Python socketpair floor (CPython
master ⇄ a child of the worker's interpreter) is measured in the same run for the
ratios. Prints a markdown table; the raw data goes to ``target/bench/peers.json``.

CPY2PY_BENCH_CALLS sets the number of measured calls (default 20000; warm-up a tenth).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _timing import CALLS, WARMUP, stats  # noqa: E402

TIMEOUT = float(os.environ.get("CPY2PY_BENCH_PEER_TIMEOUT", "120"))
OLD_VENV = os.environ.get(
    "CPY2PY_BENCH_VENV_CPY2PY017", os.path.join(ROOT, "target", "bench-venv-cpy2py017")
)
OLD_PYTHON = os.path.join(OLD_VENV, "bin", "python")
PYPY = os.environ.get("CPY2PY_BENCH_PYPY") or shutil.which("pypy3")

ECHO = (
    "import os, socket\n"
    "s = socket.socket(fileno=int(os.environ['BENCH_FD']))\n"
    "while True:\n"
    "    d = s.recv(1)\n"
    "    if not d: break\n"
    "    s.send(d)\n"
)

# (peer, script, master python, PyPy support: None, or why not)
PEERS = [
    ("multiprocessing `Pipe` + worker loop", "peer_mp_pipe.py", sys.executable,
     "multiprocessing cannot start a PyPy worker"),
    ("multiprocessing `Manager` proxy", "peer_mp_manager.py", sys.executable,
     "multiprocessing cannot start a PyPy worker"),
    ("multiprocessing `ProcessPoolExecutor`", "peer_mp_pool.py", sys.executable,
     "multiprocessing cannot start a PyPy worker"),
    ("execnet `popen` gateway + channel loop", "peer_execnet.py", sys.executable, None),
    ("RPyC classic", "peer_rpyc.py", sys.executable, None),
    ("Pyro5 `Proxy`", "peer_pyro5.py", sys.executable, None),
    ("cpy2py 0.17.1 (PyPI) `execute`", "peer_cpy2py017.py", OLD_PYTHON, None),
]
PACKAGES = {
    "peer_execnet.py": "execnet",
    "peer_rpyc.py": "rpyc",
    "peer_pyro5.py": "Pyro5",
    "peer_cpy2py017.py": "cpy2py",
}


def pin(pinned):
    return (lambda: os.sched_setaffinity(0, {0})) if pinned else None


def site_packages(python):
    """The site-packages of ``python``'s venv, for a PyPy worker's PYTHONPATH."""
    out = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout.strip()


def version_of(python, package):
    try:
        out = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version(%r))" % package],
            capture_output=True, text=True, timeout=60,
        )
    except OSError as error:
        return "not installed (%s)" % error
    return out.stdout.strip() if out.returncode == 0 else "not installed"


def interpreter(python):
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.implementation.name, sys.version.split()[0])"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout.strip()


def measure_floor(python, pinned):
    """CPython here, ``python`` running a Python echo loop there, 1 byte each way."""
    ours, theirs = socket.socketpair()
    env = dict(os.environ, BENCH_FD=str(theirs.fileno()))
    child = subprocess.Popen(
        [python, "-c", ECHO], env=env, pass_fds=(theirs.fileno(),), preexec_fn=pin(pinned)
    )
    theirs.close()
    saved = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {0})
    try:
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
        child.wait(timeout=30)
    return stats(samples)


def run_peer(script, master, worker, pinned, env_extra):
    """Runs one peer script; returns its JSON result or {"error": ...}."""
    if not os.path.exists(master):
        return {"error": "no python at %s (venv not created)" % master}
    env = dict(os.environ, **env_extra)
    start = time.monotonic()
    try:
        out = subprocess.run(
            [master, os.path.join(HERE, script), worker],
            capture_output=True, text=True, timeout=TIMEOUT, env=env,
            preexec_fn=pin(pinned), stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"error": "hung: no result within %.0f s" % TIMEOUT}
    elapsed = time.monotonic() - start
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = [line for line in out.stderr.strip().splitlines() if line.strip()][-1:]
        return {"error": "exit %s: %s" % (out.returncode, tail[0] if tail else "no output")}
    try:
        result = json.loads(lines[-1])
    except ValueError:
        return {"error": "unreadable output: %r" % lines[-1][:200]}
    result["seconds"] = elapsed
    return result


def cell(result, floor=None):
    if not result:
        return "n/a"
    text = "%.1f (%.1f)" % (result["median_us"], result["p99_us"])
    if floor:
        text += " %.1f×" % (result["median_us"] / floor["median_us"])
    return text


def main():
    workers = [("CPython", sys.executable)]
    if PYPY:
        workers.append(("PyPy", PYPY))
    versions = {
        "master": interpreter(sys.executable),
        "workers": {name: interpreter(python) for name, python in workers},
        "peers": {},
    }
    for _, script, master, _ in PEERS:
        if script in PACKAGES:
            versions["peers"][PACKAGES[script]] = version_of(master, PACKAGES[script])
    paths = {}
    for _, script, master, _ in PEERS:
        if os.path.exists(master) and master not in paths:
            paths[master] = site_packages(master)

    rows = []
    floors = {}
    for pinned in (False, True):
        for name, python in workers:
            print("measuring: Python floor, %s, %s" % (name, "pinned" if pinned else "unpinned"),
                  file=sys.stderr, flush=True)
            floors[(name, pinned)] = measure_floor(python, pinned)
    for peer, script, master, no_pypy in PEERS:
        for name, python in workers:
            for pinned in (False, True):
                row = {"peer": peer, "script": script, "worker": name, "pinned": pinned}
                if name == "PyPy" and no_pypy:
                    if pinned:
                        continue  # one n/a row is enough
                    row["na"] = no_pypy
                else:
                    # The CPython worker is the master's own python (its venv has the
                    # peer); a PyPy worker finds the pure-Python peer on PYTHONPATH.
                    worker = master if name == "CPython" else python
                    env_extra = {}
                    if name == "PyPy" and master in paths:
                        env_extra["PYTHONPATH"] = paths[master]
                    print("measuring: %s, %s worker, %s" % (
                        peer, name, "pinned" if pinned else "unpinned"),
                        file=sys.stderr, flush=True)
                    row.update(run_peer(script, master, worker, pinned, env_extra))
                rows.append(row)

    print("%d calls after %d warm-up; master %s; workers: %s. Cells: median µs (p99 µs) "
          "and the median's ratio to the Python socketpair floor measured here for the "
          "same worker interpreter and pinning.\n" % (
              CALLS, WARMUP, versions["master"],
              ", ".join("%s %s" % kv for kv in versions["workers"].items())))
    print("Peer versions: %s.\n" % ", ".join(
        "%s %s" % kv for kv in versions["peers"].items()))
    print("| peer | worker | pinning | `noop` µs (p99) ratio | `add(1, 2)` µs (p99) ratio |")
    print("| --- | --- | --- | ---: | ---: |")
    for pinned in (False, True):
        for name, _ in workers:
            floor = floors[(name, pinned)]
            print("| Python socketpair floor | %s | %s | %s | |" % (
                name, "CPU 0" if pinned else "none", cell(floor)))
    for row in rows:
        pinning = "CPU 0" if row["pinned"] else "none"
        floor = floors[(row["worker"], row["pinned"])]
        if "na" in row:
            pinning = "—"
            noop = "n/a (%s)" % row["na"]
            add = "n/a"
        elif "error" in row:
            noop = "**failed**: %s" % row["error"].replace("|", "\\|")
            add = "failed"
        else:
            noop, add = cell(row["noop"], floor), cell(row["add"], floor)
        print("| %s | %s | %s | %s | %s |" % (row["peer"], row["worker"], pinning, noop, add))

    out_dir = os.path.join(ROOT, "target", "bench")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "peers.json"), "w") as f:
        json.dump({
            "calls": CALLS, "warmup": WARMUP, "versions": versions,
            "floors": [{"worker": w, "pinned": p, **s} for (w, p), s in floors.items()],
            "peers": rows,
        }, f, indent=2)


if __name__ == "__main__":
    main()
