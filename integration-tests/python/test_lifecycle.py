"""Starting, stopping and restarting twins; the TwinMaster singleton; no leaks."""

import json
import os
import signal

import pytest

import procutil
import twinhelpers
from cpy2py import TwinMaster, kernel_state


def test_start_stop_cycles_leave_no_processes_and_no_fds(flavour, twin_exe):
    master = TwinMaster(executable=twin_exe, twinterpreter_id="cycle-" + flavour)
    try:
        # warm-up: the kernel's own lasting resources exist after the first twin
        master.start()
        assert master.execute(twinhelpers.add, 1, 1) == 2
        master.stop()
        children = procutil.child_pids()
        fds = procutil.open_fds()

        pids = set()
        for cycle in range(20):
            assert master.start() is True
            assert master.is_alive
            pids.add(master.pid)
            assert master.execute(twinhelpers.add, cycle, 1) == cycle + 1
            master.stop()
            assert not master.is_alive
        assert len(pids) == 20

        # stop() waits for the process: no child (and no zombie) may be left at all
        assert procutil.child_pids() == children, "twins left behind (or zombies)"
        # a peer's socket may be closed just after stop() returns (also the warm-up's,
        # which may still be in the baseline): compare counts, allowing that moment
        settled = procutil.wait_until(lambda: len(procutil.open_fds()) <= len(fds), timeout=5)
        leaked = {fd: target for fd, target in procutil.open_fds().items() if fds.get(fd) != target}
        assert settled, "file descriptors leaked: %r" % (leaked,)
    finally:
        master.destroy()


def test_start_is_idempotent_and_reinit_keeps_a_running_twin(fresh_twin, twin_exe):
    pid = fresh_twin.pid
    assert fresh_twin.start() is True
    assert fresh_twin.pid == pid
    again = TwinMaster(executable=twin_exe, twinterpreter_id=fresh_twin.twinterpreter_id)
    assert again is fresh_twin
    assert again.is_alive and again.pid == pid
    assert TwinMaster(twinterpreter_id=fresh_twin.twinterpreter_id) is fresh_twin
    assert fresh_twin.execute(os.getpid) == pid


def test_start_after_stop_gives_a_fresh_twin(fresh_twin):
    first = fresh_twin.pid
    assert fresh_twin.stop() is False
    assert not fresh_twin.is_alive
    assert fresh_twin.pid is None
    fresh_twin.start()
    assert fresh_twin.is_alive
    assert fresh_twin.pid != first
    assert fresh_twin.execute(os.getpid) == fresh_twin.pid


def test_start_after_a_crash_gives_a_fresh_twin(fresh_twin):
    first = fresh_twin.pid
    os.kill(first, signal.SIGKILL)
    assert procutil.wait_until(lambda: not fresh_twin.is_alive, timeout=1.0)
    fresh_twin.start()
    assert fresh_twin.is_alive
    assert fresh_twin.pid != first
    assert fresh_twin.execute(twinhelpers.add, 20, 22) == 42


def test_stop_is_harmless_when_not_running(fresh_twin):
    fresh_twin.stop()
    fresh_twin.stop()
    assert not fresh_twin.is_alive


def test_context_manager_starts_and_stops(flavour, twin_exe):
    master = TwinMaster(executable=twin_exe, twinterpreter_id="with-" + flavour)
    try:
        with master as entered:
            assert entered is master
            assert master.is_alive
            pid = master.pid
            assert master.execute(os.getpid) == pid
        assert not master.is_alive
        assert pid not in procutil.child_pids()
    finally:
        master.destroy()


def test_context_manager_stops_on_error(flavour, twin_exe):
    master = TwinMaster(executable=twin_exe, twinterpreter_id="with-" + flavour)
    try:
        with pytest.raises(KeyError):
            with master:
                raise KeyError("inside")
        assert not master.is_alive
    finally:
        master.destroy()


def test_repr_and_attributes(fresh_twin, twin_exe, flavour):
    text = repr(fresh_twin)
    assert fresh_twin.twinterpreter_id in text and "alive" in text
    assert fresh_twin.twinterpreter_id == twinhelpers.FRESH_IDS[flavour]
    assert fresh_twin.executable == twin_exe
    fresh_twin.stop()
    assert "alive" not in repr(fresh_twin)


# -- the singleton store (no processes) ---------------------------------------------------


def test_one_master_per_twin_id():
    first = TwinMaster("cpy2py-singleton-probe")
    try:
        assert TwinMaster("cpy2py-singleton-probe") is first
        assert TwinMaster(twinterpreter_id="cpy2py-singleton-probe") is first
        assert TwinMaster(executable="cpy2py-singleton-probe", kernel="async") is first
        assert first.twinterpreter_id == "cpy2py-singleton-probe"
        assert first.executable == "cpy2py-singleton-probe"
        assert not first.is_alive
    finally:
        first.destroy()
    second = TwinMaster("cpy2py-singleton-probe")
    try:
        assert second is not first
        with pytest.raises(RuntimeError):
            first.start()  # destroyed
    finally:
        second.destroy()


def test_twin_id_defaults_to_the_executables_basename():
    master = TwinMaster(executable="/opt/nowhere/bin/pypy-probe3")
    try:
        assert master.twinterpreter_id == "pypy-probe3"
        assert master.executable == "/opt/nowhere/bin/pypy-probe3"
        assert TwinMaster("pypy-probe3") is master
    finally:
        master.destroy()


def test_original_constructor_arguments_are_accepted():
    master = TwinMaster(
        executable="python-probe",
        twinterpreter_id="compat-probe",
        kernel="multi",
        main_module=True,
        run_main=False,
        restore_argv=False,
        ipyc=object(),
    )
    try:
        assert master.twinterpreter_id == "compat-probe"
    finally:
        master.destroy()


def test_constructor_errors():
    with pytest.raises(TypeError):
        TwinMaster()
    with pytest.raises(ValueError):
        TwinMaster(executable="python3", twinterpreter_id=kernel_state.MASTER_ID)
    master = TwinMaster(executable="/usr/bin/probe-one", twinterpreter_id="conflict-probe")
    try:
        with pytest.raises(ValueError):
            TwinMaster(executable="/usr/bin/probe-two", twinterpreter_id="conflict-probe")
    finally:
        master.destroy()


def test_a_twin_and_the_programs_it_starts_do_not_see_the_kernels_variables(twin):
    seen = twin.execute(twinhelpers.kernel_env_seen)
    assert seen["own"] and set(seen["own"].values()) == {None}, seen
    assert json.loads(seen["child"]) == seen["own"]
