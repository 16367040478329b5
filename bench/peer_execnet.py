"""execnet: a ``popen`` gateway running a channel request loop; argv[1] is the worker python."""

import sys
import time

import execnet

from _timing import (
    BULK, CALL_METRICS, check_add, emit, guarded, na, timed, timed_bulk, timed_starts,
    wants_any,
)

LOOP = """
def noop():
    pass
def add(a, b):
    return a + b
def echo(value):
    return value
funcs = {"noop": noop, "add": add, "echo": echo}
for name, args in channel:
    channel.send(funcs[name](*args))
"""


def start(python):
    gateway = execnet.makegateway("popen//python=%s" % python)
    channel = gateway.remote_exec(LOOP)

    def call(name, *args):
        channel.send((name, args))
        return channel.receive()

    def stop():
        channel.close()
        gateway.exit()

    return gateway, call, stop


def main():
    python = sys.argv[1]
    result = {}
    if wants_any(CALL_METRICS):
        gateway, call, stop = start(python)
        check_add(lambda a, b: call("add", a, b))
        guarded(result, "noop", timed, call, "noop")
        guarded(result, "add", timed, call, "add", 1, 2)
        for metric in BULK:
            guarded(result, metric, timed_bulk, lambda value: call("echo", value), metric)
        result["worker_version"] = gateway.remote_exec(
            "import sys; channel.send(sys.version.split()[0] + ' ' + sys.implementation.name)"
        ).receive()
        stop()

    def start_and_first_call():
        begin = time.perf_counter()
        _, call, stop = start(python)
        call("noop")
        took = time.perf_counter() - begin
        stop()
        return took

    guarded(result, "startup", timed_starts, start_and_first_call)
    na(result, "threads", "one channel carries one conversation; replies would mix")
    emit(result)


if __name__ == "__main__":
    main()
