"""Large out-of-band buffers (pickle protocol 5's ``PickleBuffer``s: numpy arrays,
``arenahelpers.Blob``) between two processes on this host go through a shared-memory
arena, copied once (issue #15): they arrive intact and writable; every place handed
over comes back once the receiver drops its buffer; a full arena falls back to the
socket; frames forwarded between twins and twins started with arenas off carry their
buffers inline; a buffer outlives the twin that sent it. Each with a CPython and a
PyPy twin, under both masters."""

import gc
import os

import pytest

import procutil
import twinhelpers
import arenahelpers
from arenahelpers import check, echo, hold, overwrite, pattern
from cpy2py import TwinMaster, _native

MIB = 1 << 20


def places_out_here(twin):
    """Places of this process's arena that ``twin`` holds, once it collected its
    garbage (PyPy frees a buffer only then)."""
    twin.execute(gc.collect)
    return _native.arena_places_out(twin.peer)


def places_out_there(twin):
    """Places of ``twin``'s arena that this process holds, once it collected its
    garbage (a PyPy master may need two collections for an object made in C)."""
    gc.collect()
    gc.collect()
    return twin.execute(arenahelpers.places_out_there)


@pytest.fixture
def small_arena_twin(flavour, twin_exe, monkeypatch):
    """A twin whose own arena is 64 MiB (the environment it inherits says so)."""
    monkeypatch.setenv("CPY2PY_ARENA_MIB", "64")
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.FRESH_IDS[flavour])
    master.start()
    monkeypatch.delenv("CPY2PY_ARENA_MIB")
    yield master
    master.destroy()


def test_large_buffers_cross_both_ways_intact_and_writable_and_their_places_come_back(twin):
    used = 0
    for seed in range(6):
        sent = pattern(8 * MIB + 123, seed)
        echoed = twin.execute(echo, sent)
        assert echoed == sent
        used = max(used, places_out_here(twin) + places_out_there(twin))
        echoed.data[:3] = b"xyz"  # the receiver's own memory
        assert bytes(twin.execute(overwrite, echoed).data[:3]) == b"abc"
    assert used >= 1, "no buffer went through an arena"
    del echoed
    # the first buffers went through the socket while the offers were answered
    assert procutil.wait_until(lambda: places_out_here(twin) == 0, timeout=10)
    assert procutil.wait_until(lambda: places_out_there(twin) == 0, timeout=10)


def test_buffers_held_past_a_full_arena_go_through_the_socket(small_arena_twin):
    twin = small_arena_twin
    twin.execute(hold, 1, 2 * MIB)  # its offer is answered by the next call
    held = twin.execute(hold, 10, 16 * MIB)  # 160 MiB: 4 fit in its arena
    assert check(held, 16 * MIB) == [True] * 10
    assert places_out_there(twin) >= 3, "the arena was used"
    assert twin.execute(check, held, 16 * MIB) == [True] * 10
    del held
    assert procutil.wait_until(lambda: places_out_there(twin) == 0, timeout=10)


def test_buffers_between_twins_are_forwarded_inline(twin, fresh_twin, flavour):
    sent = pattern(4 * MIB, 7)
    assert fresh_twin.execute(twinhelpers.echo_via, flavour, sent) == sent
    assert places_out_here(fresh_twin) == 0


def test_a_buffer_outlives_the_twin_that_sent_it(fresh_twin):
    fresh_twin.execute(hold, 1, 2 * MIB)
    held = fresh_twin.execute(hold, 2, 4 * MIB)
    pid = fresh_twin.pid
    fresh_twin.stop()
    assert procutil.wait_until(lambda: not os.path.exists("/proc/%d" % pid), timeout=10)
    assert check(held, 4 * MIB) == [True, True]
    del held
    gc.collect()


def test_with_arenas_off_buffers_go_through_the_socket(flavour, twin_exe, monkeypatch):
    monkeypatch.setenv("CPY2PY_ARENA_MIB", "0")
    twin = TwinMaster(executable=twin_exe, twinterpreter_id="arena-off-" + flavour)
    try:
        twin.start()
        for seed in range(3):
            held = twin.execute(hold, 1, 4 * MIB)
            assert check(held, 4 * MIB) == [True]
        assert places_out_there(twin) == 0
    finally:
        twin.destroy()
