"""Resource limits that a long-running job meets (issue #17): large frames crossing
between twins through the master at once, with other calls going on; what sending a
large payload costs the sender's memory."""

import os
import platform
import signal
import threading
import time

import pytest

import faulthelpers
import limithelpers
import procutil
from cpy2py import TwinMaster, errors

MIB = 1 << 20
#: the wire's default frame limit (cpy2py_wire::DEFAULT_MAX_FRAME)
FRAME_LIMIT = 256 * MIB
#: PyPy's cpyext copies a bytes object whole as it first enters C code (into the
#: PyBytesObject it makes for it), before cpy2py sees it: on a PyPy sender that copy
#: comes on top of what cpy2py needs.
ENTERING_C = 1.0 if platform.python_implementation() == "PyPy" else 0.0

CROSS_SIZE = 200 << 20  # under the 256 MiB frame limit
CROSS_ROUNDS = 3


@pytest.fixture
def crossing_twins():
    """A PyPy and a CPython twin that push payloads at each other, and a bystander."""
    masters = [
        TwinMaster(executable=procutil.twin_executable(flavour), twinterpreter_id=twin_id)
        for flavour, twin_id in limithelpers.CROSS_IDS.items()
    ]
    masters.append(TwinMaster(executable=procutil.twin_executable("cpython"),
                              twinterpreter_id=limithelpers.BYSTANDER_ID))
    try:
        for master in masters:
            master.start()
        yield masters
    finally:
        for master in masters:
            master.destroy()


@pytest.mark.timeout(600)
def test_two_twins_push_200_mib_at_each_other_through_the_master(crossing_twins):
    cpython, pypy, bystander = crossing_twins
    results = {}

    def push(sender, to_flavour, fill):
        try:
            results[to_flavour] = sender.execute(
                limithelpers.push, to_flavour, CROSS_SIZE, CROSS_ROUNDS, fill)
        except BaseException as error:  # reported by the assertion below
            results[to_flavour] = error

    pushers = [
        threading.Thread(target=push, args=(cpython, "pypy", 1)),
        threading.Thread(target=push, args=(pypy, "cpython", 2)),
    ]
    for pusher in pushers:
        pusher.start()
    # Meanwhile another twin's calls keep completing, each within its own timeout.
    noops = 0
    slowest = 0.0
    while any(pusher.is_alive() for pusher in pushers):
        started = time.monotonic()
        bystander.execute_timeout(10, limithelpers.noop)
        slowest = max(slowest, time.monotonic() - started)
        noops += 1
    for pusher in pushers:
        pusher.join()
    assert results == {
        "pypy": [(CROSS_SIZE, b"\x01", b"\x01")] * CROSS_ROUNDS,
        "cpython": [(CROSS_SIZE, b"\x02", b"\x02")] * CROSS_ROUNDS,
    }
    assert noops > CROSS_ROUNDS, (noops, slowest)


@pytest.mark.timeout(120)
def test_a_stopped_twin_does_not_hold_up_traffic_between_other_twins(crossing_twins):
    cpython, pypy, bystander = crossing_twins
    size = 16 << 20  # more than a socket buffer holds
    assert pypy.execute(limithelpers.push_to_bystander, 1) == 1
    pushed = {}
    os.kill(bystander.pid, signal.SIGSTOP)
    try:
        pusher = threading.Thread(
            target=lambda: pushed.update(n=pypy.execute(limithelpers.push_to_bystander, size)))
        pusher.start()
        # The master is forwarding the PyPy twin's frame to the stopped twin, which
        # reads none of it; the PyPy twin still answers through the master.
        for _ in range(20):
            assert cpython.execute_timeout(10, limithelpers.ask_pypy) == "PyPy"
        assert pusher.is_alive() and not pushed
    finally:
        os.kill(bystander.pid, signal.SIGCONT)
    pusher.join(60)
    assert pushed == {"n": size}


@pytest.mark.timeout(180)
def test_twice_the_frame_limit_is_refused_before_the_sender_copies_it(twin):
    size = 2 * FRAME_LIMIT
    data = b"\x01" * size  # resident before the call
    try:
        limithelpers.reset_peak_rss()
        before = limithelpers.rss_mib()
        with pytest.raises(errors.CPy2PyException, match="frame limit") as info:
            twin.execute(faulthelpers.length, data)
        grew = limithelpers.peak_rss_mib() - before
    finally:
        del data
    assert "length" in str(info.value)
    assert grew <= (ENTERING_C + 0.1) * size / MIB, "the sender grew %.0f MiB" % grew
    assert twin.execute(faulthelpers.echo, "usable") == "usable"


@pytest.mark.timeout(180)
def test_sending_200_mib_costs_the_sender_at_most_32_mib_more(twin):
    size = 200 * MIB
    data = b"\x01" * size
    try:
        limithelpers.reset_peak_rss()
        before = limithelpers.rss_mib()
        assert twin.execute(faulthelpers.length, data) == size
        grew = limithelpers.peak_rss_mib() - before
    finally:
        del data
    assert grew <= ENTERING_C * size / MIB + 32, "the sender grew %.0f MiB" % grew
