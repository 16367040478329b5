"""Pyro5: a daemon subprocess exposing one object, called through a ``Proxy``.

argv[1] is the daemon's python; it finds Pyro5 on PYTHONPATH (set by the runner).
Pyro5's default serializer (serpent) returns bytes as a base64 dict, which the echo
turns back into bytes with ``serpent.tobytes`` (part of the measured time).
"""

import subprocess
import sys
import time

import Pyro5.api
import serpent

from _timing import (
    BULK, CALL_METRICS, check_add, emit, guarded, threads_suite, timed, timed_bulk,
    timed_starts, wants_any,
)

SERVER = """
import sys
import Pyro5.api

@Pyro5.api.expose
class Service:
    def noop(self):
        pass
    def add(self, a, b):
        return a + b
    def echo(self, value):
        return value
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


def start(python):
    server = subprocess.Popen(
        [python, "-c", SERVER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    uri = server.stdout.readline().strip()
    if not uri:
        raise RuntimeError("the Pyro5 daemon printed no URI (exit %s)" % server.wait(10))
    return server, uri


def stop(server, proxy):
    proxy.stop()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()


def main():
    python = sys.argv[1]
    result = {}
    if wants_any(CALL_METRICS + ("threads",)):
        server, uri = start(python)
        try:
            with Pyro5.api.Proxy(uri) as proxy:
                check_add(proxy.add)
                guarded(result, "noop", timed, proxy.noop)
                guarded(result, "add", timed, proxy.add, 1, 2)

                def echo(value):
                    answer = proxy.echo(value)
                    return serpent.tobytes(answer) if isinstance(value, bytes) else answer

                for metric in BULK:
                    guarded(result, metric, timed_bulk, echo, metric)
                # A proxy belongs to the thread that made it: one per thread.
                guarded(result, "threads", threads_suite,
                        lambda: Pyro5.api.Proxy(uri).noop)
                result["worker_version"] = proxy.version()
                stop(server, proxy)
        finally:
            if server.poll() is None:
                server.kill()

    def start_and_first_call():
        begin = time.perf_counter()
        server, uri = start(python)
        with Pyro5.api.Proxy(uri) as proxy:
            proxy.noop()
            took = time.perf_counter() - begin
            stop(server, proxy)
        return took

    guarded(result, "startup", timed_starts, start_and_first_call)
    emit(result)


if __name__ == "__main__":
    main()
