"""How a large buffer can get from one process to another on this machine: the
measurement behind the choice of path for out-of-band buffers (issue #15).

For each size, the median time for one direction (sender has the buffer, receiver
has it in memory it owns and has read one byte of every page), by:

- ``socket``: the path cpy2py takes: ``sendall`` of the buffer on a socketpair,
  ``recv_into`` a fresh private mapping advised for huge pages, as the kernel's
  big frame buffers are;
- ``memfd``: a fresh sealed ``memfd`` per buffer: ``write`` into it, seal it, pass
  it with ``SCM_RIGHTS``; the receiver maps it copy-on-write (writable, as a
  received value must be) and reads it;
- ``arena``: a shared mapping set up once and reused: the sender copies into it
  (pages already faulted in), a one-byte message tells the receiver, which reads
  the pages in place;
- ``memcpy``: the floor of any by-value path, one copy into fresh memory in one
  process (``memcpy prefaulted`` beside it: into memory already faulted in).

Run: ``python3 bench/bulk_paths.py [--calls N]``; pin with ``taskset -c 0`` to see
the one-core case. Prints a table; nothing here is part of ``cargo xtask bench``.
"""

import argparse
import fcntl
import mmap
import os
import socket
import statistics
import threading
import time

SIZES = [1 << 20, 4 << 20, 16 << 20, 64 << 20]
PAGE = mmap.PAGESIZE


def fresh(n):
    """A private anonymous mapping, as the kernel's big receive buffers are."""
    memory = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if n >= 4 << 20:
        memory.madvise(mmap.MADV_HUGEPAGE)
    return memory


def read_pages(view):
    """Reads a byte of every page (what using the received value costs at least)."""
    return sum(view[i] for i in range(0, len(view), PAGE))


def median_ms(run, calls):
    times = []
    for _ in range(calls):
        times.append(run())
    return statistics.median(times) * 1e3


def socket_path(src, calls):
    a, b = socket.socketpair()
    n = len(src)

    def send():
        for _ in range(calls):
            a.sendall(src)
            a.recv(1)

    sender = threading.Thread(target=send)
    sender.start()

    def once():
        started = time.perf_counter()
        memory = fresh(n)
        view = memoryview(memory)
        got = 0
        while got < n:
            got += b.recv_into(view[got:], n - got)
        read_pages(view)
        took = time.perf_counter() - started
        view.release()
        memory.close()
        b.send(b"k")
        return took

    try:
        return median_ms(once, calls)
    finally:
        sender.join()
        a.close()
        b.close()


def memfd_path(src, calls):
    a, b = socket.socketpair()
    n = len(src)
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

    def once():
        started = time.perf_counter()
        fd = os.memfd_create("cpy2py-buffer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        written = 0
        while written < n:
            written += os.write(fd, src[written:])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        socket.send_fds(a, [b"m"], [fd])
        os.close(fd)
        _, fds, _, _ = socket.recv_fds(b, 1, 1)
        memory = mmap.mmap(fds[0], n, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fds[0])
        view = memoryview(memory)
        read_pages(view)
        took = time.perf_counter() - started
        view.release()
        memory.close()
        return took

    try:
        return median_ms(once, calls)
    finally:
        a.close()
        b.close()


def arena_path(src, calls):
    a, b = socket.socketpair()
    n = len(src)
    fd = os.memfd_create("cpy2py-arena", os.MFD_CLOEXEC)
    os.ftruncate(fd, n)
    sender_map = mmap.mmap(fd, n)
    receiver_map = mmap.mmap(fd, n)
    os.close(fd)
    sender_view, receiver_view = memoryview(sender_map), memoryview(receiver_map)
    sender_view[:] = src  # the arena is reused: its pages are in
    read_pages(receiver_view)

    def once():
        started = time.perf_counter()
        sender_view[:] = src
        a.send(b"a")
        b.recv(1)
        read_pages(receiver_view)
        return time.perf_counter() - started

    try:
        return median_ms(once, calls)
    finally:
        sender_view.release()
        receiver_view.release()
        sender_map.close()
        receiver_map.close()
        a.close()
        b.close()


def memcpy_floor(src, calls, prefaulted):
    n = len(src)
    kept = fresh(n)
    kept_view = memoryview(kept)

    def once():
        started = time.perf_counter()
        if prefaulted:
            kept_view[:] = src
            took = time.perf_counter() - started
        else:
            memory = fresh(n)
            view = memoryview(memory)
            view[:] = src
            took = time.perf_counter() - started
            view.release()
            memory.close()
        return took

    try:
        return median_ms(once, calls)
    finally:
        kept_view.release()
        kept.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=15, help="transfers per size and path")
    args = parser.parse_args()
    paths = [
        ("socket", socket_path),
        ("memfd", memfd_path),
        ("arena", arena_path),
        ("memcpy", lambda src, calls: memcpy_floor(src, calls, False)),
        ("memcpy prefaulted", lambda src, calls: memcpy_floor(src, calls, True)),
    ]
    print("| size | " + " | ".join(name for name, _ in paths) + " |")
    print("| ---: | " + " | ".join("---:" for _ in paths) + " |")
    for size in SIZES:
        src = memoryview(os.urandom(1 << 20) * (size >> 20))
        cells = []
        for _, path in paths:
            ms = path(src, args.calls)
            cells.append("%.2f ms (%.2f GB/s)" % (ms, size / ms / 1e6))
        print("| %d MiB | %s |" % (size >> 20, " | ".join(cells)))


if __name__ == "__main__":
    main()
