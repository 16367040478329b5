"""Peers of cpy2py, side by side in one run, on the metrics each of them has.

Run by ``cargo xtask bench`` with the python of ``target/bench-venv-peers`` (which has
RPyC, execnet and Pyro5 from PyPI); the original cpy2py (PyPI 0.17.1) imports as
``cpy2py`` like ours, so it runs with the python of ``target/bench-venv-cpy2py017``.
Each peer runs in its own subprocesses (one script per peer in this directory), with a
timeout: its calls (``noop``, ``add(1, 2)``, the bulk echoes) unpinned and pinned to
CPU 0 (children inherit the pinning), its startup and its 4-thread throughput unpinned,
each in a run of its own so that one hanging metric cannot take the others with it. A
peer or metric that fails or hangs is reported as such with its error, never dropped.
Workers are CPython, and PyPy (``pypy3`` on PATH, or CPY2PY_BENCH_PYPY) where the peer
can start a PyPy worker easily; rows where it cannot are marked n/a.

Prints ``{"versions": {...}, "rows": [...]}`` as JSON on the last line of stdout; the
xtask renders it beside the floors and ours. Counts come from the environment (see
``_timing.py``); CPY2PY_BENCH_PEER_TIMEOUT bounds each run (default 300 s).
"""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _timing import BULK, emit, last_json, run_bounded, wanted  # noqa: E402

TIMEOUT = float(os.environ.get("CPY2PY_BENCH_PEER_TIMEOUT", "300"))
OLD_VENV = os.environ.get(
    "CPY2PY_BENCH_VENV_CPY2PY017", os.path.join(ROOT, "target", "bench-venv-cpy2py017")
)
OLD_PYTHON = os.path.join(OLD_VENV, "bin", "python")
PYPY = os.environ.get("CPY2PY_BENCH_PYPY") or shutil.which("pypy3")

#: Whether the bulk echoes are measured pinned too (``--quick`` turns it off: slow
#: peers take seconds per echo, and the targets compare unpinned bulk figures).
PINNED_BULK = os.environ.get("CPY2PY_BENCH_PINNED_BULK", "1") != "0"

#: Runs of each peer and worker: (metrics, pinnings). Startup and threads are measured
#: unpinned only; a metric that hangs is cut off by its own timeout (see _timing.py).
RUNS = [
    (("noop", "add", "method") + BULK + ("startup", "threads"), (False,)),
    (("noop", "add", "method") + (BULK if PINNED_BULK else ()), (True,)),
]

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


def run_peer(script, master, worker, pinned, env_extra):
    """Runs one peer script; returns its JSON result or {"error": ...}."""
    if not os.path.exists(master):
        return {"error": "no python at %s (venv not created)" % master}
    env = dict(os.environ, **env_extra)
    try:
        done = run_bounded([master, os.path.join(HERE, script), worker], TIMEOUT, env=env,
                           preexec_fn=pin(pinned))
    except subprocess.TimeoutExpired:
        return {"error": "hung: no result within %.0f s" % TIMEOUT}
    return last_json(done)


def rows_of(result, metrics, base):
    """Report rows for one run's ``metrics`` from its result (or its error)."""
    rows = []
    for metric in metrics:
        if "error" in result:
            rows.append(dict(base, metric=metric, error=result["error"]))
        elif metric in result:
            rows.append(dict(base, metric=metric, **result[metric]))
    return rows


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
    for peer, script, master, no_pypy in PEERS:
        for name, python in workers:
            for metrics, pinnings in RUNS:
                metrics = [metric for metric in metrics if wanted(metric)]
                if not metrics:
                    continue
                for pinned in pinnings:
                    base = {"group": "peer", "subject": peer, "script": script,
                            "twin": name, "pinned": pinned}
                    if name == "PyPy" and no_pypy:
                        if not pinned:  # one n/a row per metric is enough
                            rows.extend(dict(base, metric=metric, na=no_pypy)
                                        for metric in metrics)
                        continue
                    # The CPython worker is the master's own python (its venv has the
                    # peer); a PyPy worker finds the pure-Python peer on PYTHONPATH.
                    worker = master if name == "CPython" else python
                    env_extra = {"CPY2PY_BENCH_ONLY": ",".join(metrics)}
                    if name == "PyPy" and master in paths:
                        env_extra["PYTHONPATH"] = paths[master]
                    print("measuring: %s, %s worker, %s, %s" % (
                        peer, name, "pinned" if pinned else "unpinned", ",".join(metrics)),
                        file=sys.stderr, flush=True)
                    result = run_peer(script, master, worker, pinned, env_extra)
                    rows.extend(rows_of(result, metrics, base))
    emit({"versions": versions, "rows": rows})


if __name__ == "__main__":
    main()
