"""multiprocessing: a ``Pipe`` to a worker process running a request loop."""

import multiprocessing

from _timing import add, check_add, emit, noop, timed

FUNCS = {"noop": noop, "add": add}


def worker(conn):
    while True:
        try:
            name, args = conn.recv()
        except EOFError:
            return
        conn.send(FUNCS[name](*args))


def main():
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=worker, args=(theirs,), daemon=True)
    proc.start()
    theirs.close()

    def call(name, *args):
        ours.send((name, args))
        return ours.recv()

    check_add(lambda a, b: call("add", a, b))
    result = {"noop": timed(call, "noop"), "add": timed(call, "add", 1, 2)}
    ours.close()
    proc.join(10)
    emit(result)


if __name__ == "__main__":
    main()
