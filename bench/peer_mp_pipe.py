"""multiprocessing: a ``Pipe`` to a worker process running a request loop."""

import multiprocessing
import time

from _timing import (
    BULK, CALL_METRICS, add, check_add, echo, emit, guarded, na, noop, timed, timed_bulk,
    timed_starts, wants_any,
)

FUNCS = {"noop": noop, "add": add, "echo": echo}


def worker(conn, parents_end):
    # A forked worker inherits the parent's end too: without closing it, the
    # parent closing its own would never reach this loop as end-of-file.
    parents_end.close()
    while True:
        try:
            name, args = conn.recv()
        except EOFError:
            return
        conn.send(FUNCS[name](*args))


def start():
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=worker, args=(theirs, ours), daemon=True)
    proc.start()
    theirs.close()

    def call(name, *args):
        ours.send((name, args))
        return ours.recv()

    def stop():
        ours.close()
        proc.join(10)

    return call, stop


def start_and_first_call():
    begin = time.perf_counter()
    call, stop = start()
    call("noop")
    took = time.perf_counter() - begin
    stop()
    return took


def main():
    result = {}
    if wants_any(CALL_METRICS):
        call, stop = start()
        check_add(lambda a, b: call("add", a, b))
        guarded(result, "noop", timed, call, "noop")
        guarded(result, "add", timed, call, "add", 1, 2)
        for metric in BULK:
            guarded(result, metric, timed_bulk, lambda value: call("echo", value), metric)
        stop()
    guarded(result, "startup", timed_starts, start_and_first_call)
    na(result, "threads", "one Pipe cannot be shared by threads without a lock")
    emit(result)


if __name__ == "__main__":
    main()
