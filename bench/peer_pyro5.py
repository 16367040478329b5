"""Pyro5: a daemon subprocess exposing one object, called through a ``Proxy``.

argv[1] is the daemon's python; it finds Pyro5 on PYTHONPATH (set by the runner).
"""

import subprocess
import sys

import Pyro5.api

from _timing import check_add, emit, timed

SERVER = """
import sys
import Pyro5.api

@Pyro5.api.expose
class Service:
    def noop(self):
        pass
    def add(self, a, b):
        return a + b
    def version(self):
        return sys.version.split()[0] + " " + sys.implementation.name
    @Pyro5.api.oneway
    def stop(self):
        daemon.shutdown()

daemon = Pyro5.api.Daemon(host="127.0.0.1")
uri = daemon.register(Service, "service")
print(uri, flush=True)
daemon.requestLoop()
"""


def main():
    python = sys.argv[1]
    server = subprocess.Popen([python, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        uri = server.stdout.readline().strip()
        if not uri:
            raise RuntimeError("the Pyro5 daemon printed no URI (exit %s)" % server.wait(10))
        with Pyro5.api.Proxy(uri) as proxy:
            check_add(proxy.add)
            result = {"noop": timed(proxy.noop), "add": timed(proxy.add, 1, 2)}
            result["worker_version"] = proxy.version()
            proxy.stop()
    finally:
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    emit(result)


if __name__ == "__main__":
    main()
