"""Bootstrap of a twinterpreter: ``python -m cpy2py.twin``.

A master starts this with the environment variable ``CPY2PY_TWIN_CONFIG`` (JSON, see
``TwinMaster._twin_config``) plus whatever the Rust kernel needs to connect. It sets
:mod:`cpy2py.kernel_state`, extends ``sys.path`` with the master's, optionally takes
the master's ``sys.argv``, arranges for the master's ``__main__`` to be importable
(lazily), then serves requests until the master stops it or goes away, and exits
without waiting for leftover non-daemon threads.

Running it by hand does nothing useful: it needs a master.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from typing import Any, Dict

from . import _native, _runtime, kernel_state
from .master import CONFIG_ENV, CONFIG_VERSION

_log = logging.getLogger("__cpy2py__.twin")


def _take_inherited() -> Dict[str, str]:
    """The kernel's variables, out of the environment: programs this twin starts
    must not look like twins of our master."""
    return {name: os.environ.pop(name) for name in _native.TWIN_ENV if name in os.environ}


def _read_config(inherited: Dict[str, str]) -> Dict[str, Any]:
    raw = os.environ.pop(CONFIG_ENV, None)
    if raw is None and inherited:
        # Started by a host that embeds the kernel (not a Python master): no
        # __main__ alias or sys.path to take over.
        return {"version": CONFIG_VERSION}
    if raw is None:
        raise SystemExit(
            "cpy2py.twin: %s is not set; a twinterpreter is started by a cpy2py master "
            "(cpy2py.TwinMaster), not by hand" % (CONFIG_ENV,)
        )
    config = json.loads(raw)
    if not isinstance(config, dict):
        raise SystemExit("cpy2py.twin: the configuration from the master is not a JSON object")
    if config.get("version") != CONFIG_VERSION:
        raise SystemExit(
            "cpy2py.twin: configuration version %r from the master, expected %r: the "
            "master and this interpreter have different cpy2py versions"
            % (config.get("version"), CONFIG_VERSION)
        )
    return config


def _prepare(config: Dict[str, Any]) -> None:
    """Everything before serving: paths, argv, the ``__main__`` alias."""
    if kernel_state.TWIN_ID == kernel_state.MASTER_ID:
        raise SystemExit("cpy2py.twin: twin id %r equals the master's id" % (kernel_state.TWIN_ID,))
    additions = [entry for entry in config.get("sys_path") or () if entry not in sys.path]
    sys.path[0:0] = additions
    if config.get("argv") is not None:
        sys.argv[:] = config["argv"]
    main = config.get("main")
    _runtime.install_twin_main(main)
    _log.debug(
        "twinterpreter %r (pid %d, %s %s) of master %r; sys.path += %r; main: %r",
        kernel_state.TWIN_ID,
        os.getpid(),
        sys.implementation.name,
        sys.version.split()[0],
        kernel_state.MASTER_ID,
        additions,
        main,
    )
    if main and main.get("run_main") and (main.get("path") or main.get("module")):
        _runtime.load_main()


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def main() -> None:
    """Run this process as a twinterpreter; never returns."""
    status = 0
    try:
        inherited = _take_inherited()
        config = _read_config(inherited)
        _prepare(config)
        _native.serve(inherited)
        _log.debug("twinterpreter %r: served, exiting", kernel_state.TWIN_ID)
    except SystemExit as exit_request:
        if isinstance(exit_request.code, str):
            sys.stderr.write(exit_request.code + "\n")
            status = 2
        else:
            status = exit_request.code or 0
    except BaseException:
        traceback.print_exc()
        status = 1
    _flush_stdio()
    os._exit(status)


if __name__ == "__main__":
    main()
