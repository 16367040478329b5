"""execnet: a ``popen`` gateway running a channel request loop; argv[1] is the worker python."""

import sys

import execnet

from _timing import check_add, emit, timed

LOOP = """
def noop():
    pass
def add(a, b):
    return a + b
funcs = {"noop": noop, "add": add}
for name, args in channel:
    channel.send(funcs[name](*args))
"""


def main():
    python = sys.argv[1]
    gateway = execnet.makegateway("popen//python=%s" % python)
    channel = gateway.remote_exec(LOOP)

    def call(name, *args):
        channel.send((name, args))
        return channel.receive()

    check_add(lambda a, b: call("add", a, b))
    result = {"noop": timed(call, "noop"), "add": timed(call, "add", 1, 2)}
    result["worker_version"] = gateway.remote_exec(
        "import sys; channel.send(sys.version.split()[0] + ' ' + sys.implementation.name)"
    ).receive()
    channel.close()
    gateway.exit()
    emit(result)


if __name__ == "__main__":
    main()
