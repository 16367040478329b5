"""Concurrent calls, callback chains and twinfunctions across interpreters."""

import os
import threading

import pytest

import procutil
import twinhelpers
from cpy2py import TwinMaster, errors, kernel_state


def test_concurrent_calls_each_get_their_own_results(twin):
    threads_count, calls = 8, 200
    barrier = threading.Barrier(threads_count)
    done = [0] * threads_count
    failures = []

    def worker(thread_no):
        try:
            barrier.wait(timeout=30)
            for call_no in range(calls):
                payload = ("p", thread_no, call_no, "x" * (call_no % 13))
                result = twin.execute(twinhelpers.tagged, thread_no, call_no, payload)
                if result != (thread_no, call_no, payload, twin.twinterpreter_id):
                    failures.append((thread_no, call_no, result))
                    return
                done[thread_no] += 1
        except BaseException as error:  # reported below
            failures.append((thread_no, repr(error)))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert not any(thread.is_alive() for thread in threads), "calls hang"
    assert failures == []
    assert done == [calls] * threads_count


@pytest.mark.parametrize("depth", [2, 3, 50])
def test_callback_chain_master_twin_master(twin, flavour, depth):
    # bounce_master is pinned to the master, bounce_<flavour> to the twin; each level
    # calls the other, so the chain alternates master, twin, master, ...
    trail = twinhelpers.bounce_master(flavour, depth, [])
    assert len(trail) == depth
    twin_pid = twin.pid
    master_levels = trail[0::2]
    twin_levels = trail[1::2]
    assert [level[:2] for level in master_levels] == [(kernel_state.MASTER_ID, os.getpid())] * len(master_levels)
    assert [level[:2] for level in twin_levels] == [(twin.twinterpreter_id, twin_pid)] * len(twin_levels)
    # a callback runs on the thread that waits for it: one thread per interpreter
    assert {level[2] for level in master_levels} == {threading.get_ident()}
    assert len({level[2] for level in twin_levels}) <= 1


def test_callback_chains_from_several_threads(twin, flavour):
    results = {}

    def worker(n):
        try:
            results[n] = (threading.get_ident(), twinhelpers.bounce_master(flavour, 10, []))
        except BaseException as error:
            results[n] = error

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    for n in range(4):
        assert not isinstance(results[n], BaseException), results[n]
        ident, trail = results[n]
        assert len(trail) == 10
        assert {level[2] for level in trail[0::2]} == {ident}


def test_twinfunction_runs_in_its_twin(twin, flavour):
    where = twinhelpers.WHERE[flavour]()
    assert where["twin_id"] == twin.twinterpreter_id
    assert where["pid"] == twin.pid != os.getpid()
    assert where["implementation"] == twinhelpers.IMPLEMENTATIONS[flavour]
    assert where["is_twinterpreter"] and not where["is_master"]
    assert twinhelpers.WHERE[flavour].__twin_id__ == twin.twinterpreter_id
    assert twinhelpers.WHERE[flavour].__name__ == "where_" + flavour


def test_twinfunction_runs_locally_when_already_there(twin, flavour):
    outer, inner = twin.execute(twinhelpers.call_where, flavour)
    assert outer["pid"] == inner["pid"] == twin.pid
    assert outer["thread"] == inner["thread"]
    # pinned to the master and called in the master: a plain local call
    here = twinhelpers.where_master()
    assert here["pid"] == os.getpid() and here["thread"] == threading.get_ident()


def test_twin_calls_a_twinfunction_pinned_to_the_master(twin):
    outer, inner = twin.execute(twinhelpers.call_where_master)
    assert outer["pid"] == twin.pid
    assert inner["pid"] == os.getpid()
    assert inner["is_master"] and inner["twin_id"] == kernel_state.MASTER_ID
    assert inner["thread"] == threading.get_ident()


def test_twin_calls_a_twinfunction_of_another_twin(twin, flavour):
    other_flavour = "pypy" if flavour == "cpython" else "cpython"
    other_exe = procutil.twin_executable(other_flavour)
    other = TwinMaster(executable=other_exe, twinterpreter_id=twinhelpers.TWIN_IDS[other_flavour])
    was_alive = other.is_alive
    other.start()
    try:
        outer, inner = twin.execute(twinhelpers.call_where, other_flavour)
        assert outer["pid"] == twin.pid
        assert inner["pid"] == other.pid
        assert inner["implementation"] == twinhelpers.IMPLEMENTATIONS[other_flavour]
        # and back, through the master, with a callback into the first twin
        trail = other.execute(twinhelpers.call_where, flavour)
        assert trail[1]["pid"] == twin.pid
    finally:
        if not was_alive:
            other.stop()


def test_large_payloads_between_twins_from_many_threads(twin, flavour):
    # Frames of 64 KiB and more are read into their own buffers and written with
    # their large byte strings spliced in; between twins the master forwards them
    # whole. Several threads share each socket, so frames must not interleave.
    other_flavour = "pypy" if flavour == "cpython" else "cpython"
    other = TwinMaster(
        executable=procutil.twin_executable(other_flavour),
        twinterpreter_id=twinhelpers.TWIN_IDS[other_flavour],
    )
    was_alive = other.is_alive
    other.start()
    failures = []

    def worker(n):
        try:
            for size in (40 << 10, 1 << 20, 3 << 20):
                value = [os.urandom(size), "between", os.urandom(size // 3 + n), bytes(size)]
                if twin.execute(twinhelpers.echo_via, other_flavour, value) != value:
                    failures.append((n, size, "twin to twin"))
                if twin.execute(twinhelpers.echo, value) != value:
                    failures.append((n, size, "master to twin"))
        except BaseException as error:  # reported below
            failures.append((n, repr(error)))

    try:
        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "calls hang"
        assert failures == []
    finally:
        if not was_alive:
            other.stop()


def test_a_twin_reaches_another_twin_restarted_under_the_same_id(twin, flavour):
    # The calling twin caches the other's peer number; the restarted twin gets a
    # new one, and the master's notice that the old one ended drops the cache.
    other_flavour = "pypy" if flavour == "cpython" else "cpython"
    other = TwinMaster(
        executable=procutil.twin_executable(other_flavour),
        twinterpreter_id=twinhelpers.TWIN_IDS[other_flavour],
    )
    was_alive = other.is_alive
    other.start()
    try:
        first = twin.execute(twinhelpers.call_where, other_flavour)[1]["pid"]
        assert first == other.pid
        other.stop()
        other.start()
        assert other.pid != first
        # the very first call after the restart reaches the new process
        assert twin.execute(twinhelpers.call_where, other_flavour)[1]["pid"] == other.pid
    finally:
        if not was_alive:
            other.stop()


def test_twinfunction_starts_its_twin_on_demand(flavour, twin_exe, monkeypatch):
    monkeypatch.delenv("CPY2PY_NOAUTO", raising=False)
    twin_id = twinhelpers.AUTO_IDS[flavour]
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twin_id)
    try:
        assert not master.is_alive
        where = twinhelpers.WHERE_AUTO[flavour]()
        assert master.is_alive
        assert where["twin_id"] == twin_id and where["pid"] == master.pid
        master.stop()
        monkeypatch.setenv("CPY2PY_NOAUTO", "1")
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            twinhelpers.WHERE_AUTO[flavour]()
        assert twin_id in str(info.value)
        assert not master.is_alive
    finally:
        master.destroy()


def test_twin_asks_the_master_to_start_a_twin_on_demand(twin, flavour, twin_exe, monkeypatch):
    monkeypatch.delenv("CPY2PY_NOAUTO", raising=False)
    twin_id = twinhelpers.AUTO_IDS[flavour]
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twin_id)
    try:
        where = twin.execute(twinhelpers.WHERE_AUTO[flavour])
        assert master.is_alive
        assert where["twin_id"] == twin_id and where["pid"] == master.pid != twin.pid
    finally:
        master.destroy()
