"""Drop-in for cpy2py 0.17: its ids, group state, twinfunctions, stop semantics and
module paths, each checked with a CPython and a PyPy twin."""

import json
import os
import signal
import sys
import textwrap

import pytest

import compathelpers
import objhelpers
import procutil
import twinhelpers
from cpy2py import TwinMaster, errors, kernel_state
from cpy2py.proxy.proxy import InstanceProxy

HERE = os.path.dirname(os.path.abspath(__file__))


# -- ids ---------------------------------------------------------------------------

IDS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from cpy2py import TwinMaster, kernel_state
    import compathelpers
    facts = {"master": compathelpers.ids(), "basename": os.path.basename(sys.executable)}
    if len(sys.argv) > 1:
        try:
            TwinMaster(executable=sys.argv[1], twinterpreter_id=kernel_state.MASTER_ID)
        except ValueError as error:
            facts["refused"] = str(error)
        with TwinMaster(executable=sys.argv[1], twinterpreter_id="compat-twin") as twin:
            facts["twin"] = twin.execute(compathelpers.ids)
            facts["proxy"] = twin.execute(compathelpers.twin_id_of, compathelpers.MasterThing())
    print(json.dumps(facts))
    """
)


def run_ids_script(args, master_id=None):
    env = dict(os.environ)
    for name in compathelpers.ID_ENV:
        env.pop(name, None)
    if master_id is not None:
        env["__CPY2PY_TWIN_ID__"] = master_id
    process = procutil.run_python(["-c", IDS_SCRIPT] + list(args), cwd=HERE, env=env)
    assert process.returncode == 0, process.stdout + process.stderr
    return json.loads(process.stdout)


def test_master_id_is_the_executables_basename():
    facts = run_ids_script([])
    master = facts["master"]
    assert master["TWIN_ID"] == master["MASTER_ID"] == facts["basename"]
    assert master["kernel_id=TWIN_ID"] and master["twin_id=TWIN_ID"] and master["positional TWIN_ID"]
    assert master["MasterThing"] == master["NoneThing"] == facts["basename"]


def test_master_id_from_the_environment_reaches_the_twins(twin_exe):
    facts = run_ids_script([twin_exe], master_id="compat-master")
    master, twin = facts["master"], facts["twin"]
    assert master["TWIN_ID"] == master["MASTER_ID"] == "compat-master"
    assert master["env"] == {name: None for name in compathelpers.ID_ENV}  # read, then removed
    assert twin["TWIN_ID"] == "compat-twin" and twin["MASTER_ID"] == "compat-master"
    assert twin["env"] == {name: None for name in compathelpers.ID_ENV}
    assert twin["MasterThing"] == twin["NoneThing"] == "compat-master"
    assert facts["proxy"] == "compat-master"  # a proxy of a master object, in the twin
    assert "'compat-master'" in facts["refused"] and "twinterpreter_id=" in facts["refused"]


def test_twin_object_without_twin_id_is_the_masters(twin):
    thing = compathelpers.MasterThing()
    assert compathelpers.MasterThing.__twin_id__ == kernel_state.MASTER_ID
    assert thing.__twin_id__ == kernel_state.MASTER_ID
    assert compathelpers.NoneThing.__twin_id__ == compathelpers.NoneThing().__twin_id__ == kernel_state.MASTER_ID
    # in the twin, through a proxy
    assert twin.execute(compathelpers.twin_id_of, thing) == kernel_state.MASTER_ID
    assert thing.twin_ids() == (kernel_state.MASTER_ID,) * 3
    # the plain function, run in the twin with the proxy as self
    ran_in, on_instance, on_class = twin.execute(compathelpers.MasterThing.twin_ids, thing)
    assert ran_in == twin.twinterpreter_id and on_instance == on_class == kernel_state.MASTER_ID


def test_is_twinterpreter_takes_kernel_id_and_twin_id(twin):
    for facts in (compathelpers.ids(), twin.execute(compathelpers.ids)):
        assert facts["kernel_id=TWIN_ID"] and facts["twin_id=TWIN_ID"] and facts["positional TWIN_ID"]
        assert not facts["kernel_id=other"] and not facts["twin_id=other"]
    assert twin.execute(kernel_state.is_twinterpreter, kernel_id=twin.twinterpreter_id)
    assert not kernel_state.is_twinterpreter(kernel_id=twin.twinterpreter_id)
    with pytest.raises(TypeError, match="pass one"):
        kernel_state.is_twinterpreter(kernel_id="a", twin_id="b")


def test_twin_id_equal_to_the_master_id_is_refused(twin_exe):
    with pytest.raises(ValueError) as info:
        TwinMaster(executable=twin_exe, twinterpreter_id=kernel_state.MASTER_ID)
    message = str(info.value)
    assert repr(kernel_state.MASTER_ID) in message and "master's own id" in message
    assert "twinterpreter_id=" in message  # how to pick another
    with pytest.raises(ValueError, match="master's own id"):
        TwinMaster(kernel_state.MASTER_ID)


# -- twinfunction ------------------------------------------------------------------


def test_twinfunction_is_the_plain_function_in_its_own_interpreter(twin, flavour):
    in_twin = "in_twin_" + flavour
    here = {name: compathelpers.function_facts(name) for name in ("in_master", "native_everywhere", in_twin)}
    there = {name: twin.execute(compathelpers.function_facts, name) for name in here}
    assert not here["in_master"]["wrapped"] and there["in_master"]["wrapped"]
    assert not here["native_everywhere"]["wrapped"] and not there["native_everywhere"]["wrapped"]
    assert here[in_twin]["wrapped"] and not there[in_twin]["wrapped"]
    for name in here:
        strip = lambda facts: {k: v for k, v in facts.items() if k not in ("wrapped", "__twin_id__")}
        assert strip(here[name]) == strip(there[name]), name
    assert here["in_master"]["__annotations__"] == {"value": int, "return": tuple}
    assert here["in_master"]["__twin_id__"] == there["in_master"]["__twin_id__"] == kernel_state.MASTER_ID
    assert compathelpers.IN_TWIN[flavour].__wrapped__.__name__ == in_twin
    # and they run where they belong, from either side
    assert compathelpers.IN_TWIN[flavour](1) == (twin.twinterpreter_id, 1)
    assert twin.execute(compathelpers.in_master, 2) == (kernel_state.MASTER_ID, 2)
    assert compathelpers.in_master(3) == (kernel_state.MASTER_ID, 3)


# -- stop semantics ----------------------------------------------------------------


def test_a_stopped_twin_is_not_started_again_by_its_classes_and_functions(flavour, twin_exe, twin):
    twin_id = twinhelpers.FRESH_IDS[flavour]
    Plain = objhelpers.FRESH_PLAINS[flavour]
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twin_id, kernel="multi", ipyc=object())
    try:
        assert master.twinterpreter_id == master.twin_id == twin_id
        master.start()
        old = Plain()
        assert compathelpers.IN_FRESH[flavour](1) == (twin_id, 1)
        master.stop()
        children = procutil.child_pids()
        for use in (Plain, lambda: compathelpers.IN_FRESH[flavour](2), old.ping):
            with pytest.raises(errors.TwinterpeterUnavailable) as info:
                use()
            assert twin_id in str(info.value)
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            Plain()
        assert "stopped" in str(info.value) and "start()" in str(info.value)
        # a twin asking for it gets the same answer from the master
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            twin.execute(compathelpers.call_in_fresh, flavour, 3)
        assert twin_id in str(info.value) and "stopped" in str(info.value)
        assert not master.is_alive and procutil.child_pids() == children
        # start() brings it back
        master.start()
        assert Plain().ping() == ("pong", twin_id)
    finally:
        master.destroy()
    # a destroyed id is a new twin: started on first use again
    again = TwinMaster(executable=twin_exe, twinterpreter_id=twin_id)
    try:
        assert again is not master
        assert compathelpers.IN_FRESH[flavour](4) == (twin_id, 4)
        assert again.is_alive
    finally:
        again.destroy()


def test_a_crashed_twin_is_not_started_again(flavour, twin_exe, monkeypatch):
    monkeypatch.delenv("CPY2PY_NOAUTO", raising=False)
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.FRESH_IDS[flavour])
    try:
        master.start()
        os.kill(master.pid, signal.SIGKILL)
        assert procutil.wait_until(lambda: not master.is_alive, timeout=10)
        children = procutil.child_pids()
        with pytest.raises(errors.TwinterpeterTerminated) as info:
            compathelpers.IN_FRESH[flavour](1)
        assert master.twinterpreter_id in str(info.value) and "signal 9" in str(info.value)
        assert not master.is_alive and procutil.child_pids() <= children
    finally:
        master.destroy()


def test_an_auto_started_twin_once_stopped_stays_stopped(flavour, twin_exe, monkeypatch):
    monkeypatch.delenv("CPY2PY_NOAUTO", raising=False)
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.AUTO_IDS[flavour])
    try:
        assert twinhelpers.WHERE_AUTO[flavour]()["pid"] == master.pid  # started on first use
        master.stop()
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            twinhelpers.WHERE_AUTO[flavour]()
        assert master.twinterpreter_id in str(info.value) and "stopped" in str(info.value)
        assert not master.is_alive
    finally:
        master.destroy()


# -- group state -------------------------------------------------------------------


@pytest.fixture
def group_state():
    """``kernel_state.TWIN_GROUP_STATE``, its registrations undone after the test."""
    state = kernel_state.TWIN_GROUP_STATE
    saved = list(state.initializers), list(state.finalizers)
    compathelpers.clear_recorded()
    yield state
    state.initializers[:], state.finalizers[:] = saved


def test_initializers_then_finalizers_run_in_a_twin_started_later(flavour, twin_exe, group_state):
    group_state.add_finalizer(compathelpers.record, "finalizer")
    group_state.add_initializer(compathelpers.record, "initializer", level=3)
    assert group_state.initializers[-1].parent_twin_id == kernel_state.MASTER_ID
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.FRESH_IDS[flavour])
    try:
        master.start()
        twin_id = master.twinterpreter_id
        assert master.execute(compathelpers.recorded) == [
            (twin_id, ("initializer",), {"level": 3}),
            (twin_id, ("finalizer",), {}),
        ]
        assert compathelpers.recorded() == []  # never in the interpreter that registered it
        master.stop()
        master.start()  # again in the next twin of that id
        assert len(master.execute(compathelpers.recorded)) == 2
    finally:
        master.destroy()


def test_init_existing_runs_at_once_in_running_twins(twin, group_state):
    twin.execute(compathelpers.clear_recorded)
    group_state.add_initializer(compathelpers.record, "now")
    assert twin.execute(compathelpers.recorded) == [(twin.twinterpreter_id, ("now",), {})]
    group_state.add_finalizer(compathelpers.record, "later", init_existing=False)
    assert len(twin.execute(compathelpers.recorded)) == 1
    assert compathelpers.recorded() == []


def test_a_twin_registers_for_the_others_but_not_itself(twin, flavour, twin_exe, group_state):
    twin.execute(compathelpers.clear_recorded)
    twin.execute(compathelpers.register_from_twin, "initializer", "from a twin", True)
    assert twin.execute(compathelpers.recorded) == []
    assert compathelpers.recorded() == []
    assert group_state.initializers[-1].parent_twin_id == twin.twinterpreter_id
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.FRESH_IDS[flavour])
    try:
        master.start()
        assert master.execute(compathelpers.recorded) == [(master.twinterpreter_id, ("from a twin",), {})]
    finally:
        master.destroy()


def test_a_failing_initializer_fails_the_start_and_leaves_no_process(flavour, twin_exe, group_state):
    group_state.add_initializer(compathelpers.fail_to_initialize, "no config here", init_existing=False)
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twinhelpers.FRESH_IDS[flavour])
    children = procutil.child_pids()
    try:
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            master.start()
        message = str(info.value)
        assert master.twinterpreter_id in message and "fail_to_initialize" in message
        assert "no config here" in message
        assert isinstance(info.value.__cause__, RuntimeError)
        assert not master.is_alive and procutil.child_pids() == children
    finally:
        master.destroy()


def test_group_state_refuses_what_cannot_travel(group_state):
    before = list(group_state.initializers), list(group_state.finalizers)
    with pytest.raises(TypeError, match="callable"):
        group_state.add_initializer(42)
    with pytest.raises(TypeError, match="reachable by name") as info:
        group_state.add_finalizer(lambda: None)
    assert "<lambda>" in str(info.value)
    assert (group_state.initializers, group_state.finalizers) == before


# -- module paths ------------------------------------------------------------------


def test_module_paths_of_0_17_are_our_objects(twin):
    for facts in (compathelpers.alias_facts(), twin.execute(compathelpers.alias_facts)):
        wrong = [(path, name) for path, name, ok in facts if not ok]
        assert not wrong, wrong


def test_every_proxy_is_an_instance_proxy(twin, flavour):
    proxy = objhelpers.COUNTERS[flavour](1)
    assert isinstance(proxy, InstanceProxy) and issubclass(type(proxy), InstanceProxy)
    assert not isinstance(objhelpers.MasterCounter(1), InstanceProxy)
    assert not isinstance(1, InstanceProxy) and not issubclass(objhelpers.MasterCounter, InstanceProxy)
    # in the twin the roles swap
    assert twin.execute(isinstance, objhelpers.MasterCounter(1), InstanceProxy)
    assert not twin.execute(isinstance, proxy, InstanceProxy)


def test_the_master_script_needs_no_main_alias_under_unittest(flavour, twin_exe, tmp_path):
    # cpy2py 0.17's own suite runs as ``python -m unittest``: __main__ is unittest's
    (tmp_path / "test_old_style.py").write_text(
        textwrap.dedent(
            """
            import unittest
            from cpy2py import TwinMaster, TwinObject, kernel_state

            class Thing(TwinObject):
                __twin_id__ = "old-style"
                def where(self):
                    return kernel_state.TWIN_ID

            class Test(unittest.TestCase):
                def setUp(self):
                    self.twin = TwinMaster(executable=%r, twinterpreter_id="old-style")
                    self.twin.start()
                def tearDown(self):
                    self.twin.destroy()
                def test_where(self):
                    self.assertEqual(Thing().where(), "old-style")
            """
            % (twin_exe,)
        )
    )
    process = procutil.run_python(["-m", "unittest", "-v", "test_old_style"], cwd=str(tmp_path))
    assert process.returncode == 0, process.stdout + process.stderr
    assert "Ran 1 test" in process.stderr and "OK" in process.stderr
