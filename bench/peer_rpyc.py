"""RPyC: a classic-mode server subprocess; argv[1] is the server's python.

The server python finds rpyc on PYTHONPATH (set by the runner), so a PyPy server
uses the same pure-Python package as the CPython master.
"""

import os
import socket
import subprocess
import sys
import time

import rpyc

from _timing import check_add, emit, timed

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
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    python = sys.argv[1]
    port = free_port()
    server = subprocess.Popen([python, "-c", SERVER, str(port)])
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
        result = {"noop": timed(noop), "add": timed(add, 1, 2)}
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
