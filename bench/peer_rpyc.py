"""RPyC: a classic-mode server subprocess; argv[1] is the server's python.

The server python finds rpyc on PYTHONPATH (set by the runner), so a PyPy server
uses the same pure-Python package as the CPython master. RPyC copies only immutable
builtins (brine): a list or dict argument reaches the server as a reference to the
caller's object, so those echoes are not comparable and are reported as n/a.
"""

import socket
import subprocess
import sys
import time

import rpyc

from _timing import (
    CALL_METRICS, check_add, emit, guarded, na, timed, timed_bulk, wants_any,
)

SERVER = """
import sys
from rpyc.utils.server import OneShotServer
from rpyc.core.service import ClassicService
server = OneShotServer(ClassicService, hostname="127.0.0.1", port=int(sys.argv[1]),
                       protocol_config={"allow_all_attrs": True})
server.start()
"""

DEFS = """
def noop():
    pass
def add(a, b):
    return a + b
def echo(value):
    return value
"""
BY_REFERENCE = "RPyC passes lists and dicts by reference (netref), not as a copy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    python = sys.argv[1]
    result = {}
    na(result, "list_100k", BY_REFERENCE)
    na(result, "dict_10k", BY_REFERENCE)
    na(result, "startup", "not measured: the server's readiness is found by polling")
    na(result, "threads", "not measured: one connection, not meant for concurrent callers")
    if not wants_any(CALL_METRICS):
        emit(result)
        return
    port = free_port()
    server = subprocess.Popen([python, "-c", SERVER, str(port)], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = rpyc.classic.connect("127.0.0.1", port)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        conn.execute(DEFS)
        noop = conn.namespace["noop"]
        add = conn.namespace["add"]
        check_add(add)
        guarded(result, "noop", timed, noop)
        guarded(result, "add", timed, add, 1, 2)
        guarded(result, "bytes_1mib", timed_bulk, conn.namespace["echo"], "bytes_1mib")
        remote_sys = conn.modules.sys
        result["worker_version"] = "%s %s" % (
            remote_sys.version.split()[0], remote_sys.implementation.name
        )
        conn.close()
    finally:
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    emit(result)


if __name__ == "__main__":
    main()
