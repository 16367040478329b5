"""TwinObjects: objects living in a twin, proxies everywhere else (issue 4).

The classes live in ``objhelpers``, one per twin id (``objhelpers.COUNTERS[flavour]``
lives in the ``twin`` fixture's twin). The module is imported as a module, never
``from objhelpers import ...``, so that pytest does not collect (and probe) TwinObject
classes.
"""

import copy
import os
import threading
import weakref

import pytest

import objhelpers
import procutil
import twinhelpers
from cpy2py import TwinMaster, TwinObject, _native, errors, kernel_state

#: how long releases may take to reach the native interpreter (seconds)
RELEASE_TIMEOUT = 30


def other_flavour(flavour):
    return "pypy" if flavour == "cpython" else "cpython"


@pytest.fixture
def other_twin(flavour):
    """The module twin of the other flavour, started if needed (and stopped after,
    if it was not running)."""
    other = other_flavour(flavour)
    master = TwinMaster(
        executable=procutil.twin_executable(other), twinterpreter_id=twinhelpers.TWIN_IDS[other]
    )
    was_alive = master.is_alive
    master.start()
    yield other, master
    if not was_alive:
        master.stop()


def collect_and_flush():
    """Collect dead proxies here (PyPy frees late) and send their releases now."""
    objhelpers.collect()
    _native.flush_releases()


def defines(cls, name):
    """Whether instances of ``cls`` have the special method ``name`` (looked up on
    the type, as Python does)."""
    return any(name in vars(klass) for klass in cls.__mro__)


def wait_for(condition, holders=(), timeout=RELEASE_TIMEOUT):
    """Poll ``condition`` until true, collecting dead proxies and sending their
    releases here and in the twins ``holders`` first; its last value."""

    def check():
        collect_and_flush()
        for holder in holders:
            holder.execute(objhelpers.flush_releases)
        return condition()

    return procutil.wait_until(check, timeout, interval=0.02)


# -- creating and using an object ----------------------------------------------------


def test_instance_lives_in_its_twin_and_is_proxied_here(twin, flavour):
    Counter = objhelpers.COUNTERS[flavour]
    counter = Counter(3)
    assert isinstance(counter, Counter)
    assert isinstance(counter, objhelpers.CounterBehaviour)
    assert isinstance(counter, TwinObject)
    assert counter.__class__ is Counter
    assert type(counter) is not Counter and issubclass(type(counter), Counter)
    assert type(counter).__name__ == Counter.__name__
    assert type(counter).__qualname__ == Counter.__qualname__
    assert counter.ran_in() == (twin.twinterpreter_id, twin.pid)
    # natively it is a plain object of the user's class
    native = twin.execute(objhelpers.describe, counter)
    assert native == {
        "proxy": False,
        "native": True,
        "type": Counter.__name__,
        "class": Counter.__name__,
        "type_is_class": True,
        "here": twin.twinterpreter_id,
    }
    here = objhelpers.describe(counter)
    assert here["proxy"] and not here["native"] and not here["type_is_class"]


def test_native_class_here_is_plain_python(twin):
    counter = objhelpers.MasterCounter(2)
    assert type(counter) is objhelpers.MasterCounter
    assert not objhelpers.is_proxy(counter)
    assert counter.add(1) == 3 and counter.ran_in() == (kernel_state.MASTER_ID, os.getpid())
    assert vars(counter) == {"count": 3}
    assert objhelpers.MasterCounter.unit == "items"
    # no stand-ins natively: the class is the user's, untouched
    assert "unit" not in vars(objhelpers.MasterCounter)
    assert vars(objhelpers.CounterBehaviour)["unit"] == "items"


def test_methods_run_natively(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](3)
    assert counter.add(2) == 5
    assert counter.add() == 6
    assert counter.add(n=4) == 10
    assert counter.count == 10
    method = counter.add
    assert method(1) == 11
    assert method.__name__ == "add"


def test_instance_attributes_get_set_del(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](3)
    counter.count = 10
    assert counter.count == 10
    assert twin.execute(objhelpers.get, counter, "count") == 10
    counter.extra = [1, "two"]
    assert counter.extra == [1, "two"]
    assert vars(counter) == {"count": 10, "extra": [1, "two"]}
    del counter.count
    with pytest.raises(AttributeError, match="count"):
        counter.count
    assert not hasattr(counter, "count")
    assert hasattr(counter, "extra")
    # attributes set natively are seen here
    twin.execute(setattr, counter, "late", {"k": 1})
    assert counter.late == {"k": 1}


def test_class_attributes_through_the_class(twin, flavour):
    Counter = objhelpers.COUNTERS[flavour]
    assert Counter.unit == "items"
    try:
        Counter.unit = "boxes"
        assert Counter.unit == "boxes"
        assert twin.execute(objhelpers.class_attribute, Counter, "unit") == "boxes"
        counter = Counter(1)
        assert counter.unit == "boxes"  # instances read it natively too
        # a change made natively is what the class reads here
        twin.execute(setattr, Counter, "unit", "crates")
        assert Counter.unit == "crates"
        # new and deleted class attributes
        Counter.extra = 42
        assert Counter.extra == 42
        assert twin.execute(objhelpers.class_attribute, Counter, "extra") == 42
        del Counter.extra
        assert not twin.execute(objhelpers.has_class_attribute, Counter, "extra")
        with pytest.raises(AttributeError, match="extra"):
            Counter.extra
        twin.execute(setattr, Counter, "added_natively", (1, 2))
        assert Counter.added_natively == (1, 2)
        twin.execute(delattr, Counter, "added_natively")
        assert not hasattr(Counter, "added_natively")
        # an instance attribute shadows the class attribute, natively
        counter.unit = "mine"
        assert counter.unit == "mine" and Counter.unit == "crates"
    finally:
        Counter.unit = "items"
    assert twin.execute(objhelpers.class_attribute, Counter, "unit") == "items"


def test_classmethod_and_staticmethod_run_natively(twin, flavour):
    Counter = objhelpers.COUNTERS[flavour]
    twin_id = twin.twinterpreter_id
    assert Counter.made_where() == (Counter.__name__, twin_id)
    assert Counter.describe() == ("counts things", twin_id)
    counter = Counter(5)
    assert counter.made_where() == (Counter.__name__, twin_id)
    assert counter.describe() == ("counts things", twin_id)
    zero = Counter.zero()
    assert isinstance(zero, Counter) and objhelpers.is_proxy(zero)
    assert zero.count == 0 and zero.ran_in()[0] == twin_id
    assert counter.zero().count == 0


def test_properties_and_descriptors_run_natively(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](4)
    assert counter.doubled == 8
    counter.doubled = 20
    assert counter.count == 10
    del counter.doubled
    assert counter.count == 0
    counter.count = 2
    assert counter.tripled == 6
    counter.tripled = 30
    assert counter.count == 10
    assert counter.descriptor_runs == [twin.twinterpreter_id]
    # through the class, a property is the local property object
    assert isinstance(objhelpers.COUNTERS[flavour].doubled, property)


def test_localmethod_runs_in_the_callers_interpreter(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    assert counter.where() == kernel_state.MASTER_ID
    assert counter.local_add(2) == (kernel_state.MASTER_ID, 3)
    assert counter.count == 3
    assert objhelpers.COUNTERS[flavour].local_made_where() == (
        objhelpers.COUNTERS[flavour].__name__,
        kernel_state.MASTER_ID,
    )
    # natively, it is a plain method
    assert twin.execute(objhelpers.call, counter, "where") == twin.twinterpreter_id
    # and a twin calling it on a master object runs it in the twin
    master_counter = objhelpers.MasterCounter(0)
    assert twin.execute(objhelpers.call, master_counter, "local_add", 5) == (twin.twinterpreter_id, 5)
    assert master_counter.count == 5


def test_isinstance_and_issubclass(twin, flavour):
    child = objhelpers.CHILDREN[flavour]("c")
    assert isinstance(child, objhelpers.CHILDREN[flavour])
    assert isinstance(child, objhelpers.Base)
    assert isinstance(child, objhelpers.ChildBehaviour)
    assert isinstance(child, TwinObject)
    assert not isinstance(child, objhelpers.COUNTERS[flavour])
    assert issubclass(type(child), objhelpers.Base)
    assert issubclass(objhelpers.CHILDREN[flavour], objhelpers.Base)
    assert not issubclass(objhelpers.Base, objhelpers.CHILDREN[flavour])


def test_copy_copies_natively(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](7)
    counter.tags = ["a"]
    shallow = copy.copy(counter)
    deep = copy.deepcopy(counter)
    for duplicate in (shallow, deep):
        assert duplicate is not counter and objhelpers.is_proxy(duplicate)
        assert duplicate.count == 7 and duplicate.ran_in()[0] == twin.twinterpreter_id
    shallow.add(1)
    assert counter.count == 7
    assert twin.execute(objhelpers.same_attribute, shallow, counter, "tags")
    assert not twin.execute(objhelpers.same_attribute, deep, counter, "tags")


def test_weakref_to_a_proxy_is_local(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    ref = weakref.ref(counter)
    assert ref() is counter
    del counter
    objhelpers.collect()
    assert ref() is None


# -- special methods -----------------------------------------------------------------


def test_comparisons_hash_bool_and_representation(twin, flavour):
    Magic = objhelpers.MAGICS[flavour]
    three, five = Magic(3), Magic(5)
    assert three < five and three <= five and five > three and five >= three
    assert not (three > five) and three != five
    assert three == Magic(3) and three == 3 and 3 == three
    assert hash(three) == hash(3)
    assert {three: "x"}[3] == "x"
    assert bool(three) and not bool(Magic(0))
    assert repr(three) == "Magic(3)"
    assert str(three) == "magic 3"
    assert "%s" % (three,) == "magic 3"
    assert format(three, "03d") == "<003>" and "{:>2}".format(three) == "< 3>"
    counter = objhelpers.COUNTERS[flavour](2)
    assert counter < objhelpers.COUNTERS[flavour](5)
    assert len(counter) == 2


def test_arithmetic_reflected_and_in_place(twin, flavour):
    Magic = objhelpers.MAGICS[flavour]
    m = Magic(6)
    assert (m + 1) == 7 and (1 + m) == 7 and (m + Magic(2)) == 8
    assert (m - 1) == 5 and (10 - m) == 4
    assert (m * 2) == 12 and (2 * m) == 12
    assert (m / 4) == 1.5 and (m // 4) == 1 and (m % 4) == 2
    assert (m ** 2) == 36 and (2 ** Magic(3)) == 8
    assert (m & 3) == 2 and (m | 1) == 7 and (m ^ 2) == 4
    assert (m << 1) == 12 and (m >> 1) == 3
    assert -m == -6 and +m == 6 and abs(Magic(-4)) == 4 and ~m == -7
    result = m + 1
    assert isinstance(result, Magic) and objhelpers.is_proxy(result) and result is not m
    assert int(m) == 6 and float(m) == 6.0
    assert [0, 1, 2, 3, 4, 5, 6, 7][m] == 6  # __index__
    before = m
    m += 4
    assert m is before and m.value == 10  # in place: the same object
    m -= 1
    m *= 2
    assert m is before and m.value == 18


def test_containers_iteration_and_membership(twin, flavour):
    Magic = objhelpers.MAGICS[flavour]
    m = Magic(0, ["a", "b", "c"])
    assert len(m) == 3
    assert list(m) == ["a", "b", "c"]
    assert list(reversed(m)) == ["c", "b", "a"]
    assert "b" in m and "z" not in m
    assert m[0] == "a" and m[-1] == "c" and m[0:2] == ["a", "b"]
    m[1] = "B"
    del m[0]
    assert m.items == ["B", "c"]
    with pytest.raises(IndexError):
        m[10]
    iterator = iter(m)
    assert next(iterator) == "B"
    assert list(iterator) == ["c"]
    with pytest.raises(StopIteration):
        next(iterator)


def test_native_iterator_protocol(twin, flavour):
    countdown = objhelpers.COUNTDOWNS[flavour](3)
    assert iter(countdown) is countdown
    assert next(countdown) == 3
    assert list(countdown) == [2, 1]
    assert list(countdown) == []


def test_call_and_context_manager(twin, flavour):
    Magic = objhelpers.MAGICS[flavour]
    twin_id = twin.twinterpreter_id
    m = Magic(1)
    assert callable(m)
    assert m(1, "x", key=2) == ("called", (1, "x"), {"key": 2}, twin_id)
    with m as entered:
        assert entered is m
    assert m.log == [("enter", twin_id), ("exit", None, None, twin_id)]
    with pytest.raises(KeyError):
        with m:
            raise KeyError("boom")
    assert m.log[-1] == ("exit", "KeyError", "'boom'", twin_id)
    m.suppress = True
    with m:
        raise ValueError("swallowed")
    assert m.log[-1] == ("exit", "ValueError", "swallowed", twin_id)

    class LocalError(Exception):  # cannot cross: described instead
        pass

    with m:
        raise LocalError("local")
    _, type_name, message, where = m.log[-1]
    assert type_name == "RemoteException" and where == twin_id
    assert "LocalError" in message and "local" in message


def test_special_methods_the_native_class_lacks_are_absent(twin, flavour):
    plain = objhelpers.PLAINS[flavour]()
    for name in objhelpers.ABSENT_SPECIAL_METHODS:
        assert not defines(type(plain), name), name
    assert not callable(plain)
    with pytest.raises(TypeError):
        len(plain)
    with pytest.raises(TypeError):
        iter(plain)
    with pytest.raises(TypeError):
        plain[0]
    with pytest.raises(TypeError):
        plain + 1
    with pytest.raises(TypeError):
        plain < plain
    with pytest.raises(TypeError):
        "x" in plain
    with pytest.raises((TypeError, AttributeError)):
        with plain:
            pass
    # object's defaults: identity, true, repr of the native object
    assert bool(plain)
    assert plain == plain and plain != objhelpers.PLAINS[flavour]()
    assert hash(plain) == hash(plain)
    assert objhelpers.PLAINS[flavour].__name__ in repr(plain)
    assert plain.ping() == ("pong", twin.twinterpreter_id)
    # only what the class defines: Counter has __len__ and __lt__, not __add__
    counter = objhelpers.COUNTERS[flavour](1)
    assert not defines(type(counter), "__add__")
    assert defines(type(counter), "__len__") and defines(type(counter), "__lt__")


def test_unhashable_native_class_gives_unhashable_proxies(twin, flavour):
    Equal = objhelpers.EQUALS[flavour]
    one = Equal(1)
    assert type(one).__hash__ is None
    with pytest.raises(TypeError):
        hash(one)
    assert one == Equal(1) and one != Equal(2)


# -- unusual classes ------------------------------------------------------------------


def test_native_getattr_makes_up_attributes(twin, flavour):
    dynamic = objhelpers.DYNAMICS[flavour]()
    assert dynamic.dyn_abc == ("ABC", twin.twinterpreter_id)
    with pytest.raises(AttributeError, match="has no other"):
        dynamic.other


def test_slotted_class(twin, flavour):
    slotted = objhelpers.SLOTTEDS[flavour](5)
    assert slotted.get() == 5 and slotted.x == 5
    slotted.x = 6
    assert slotted.get() == 6
    with pytest.raises(AttributeError):
        slotted.not_a_slot = 1
    assert weakref.ref(slotted)() is slotted  # proxies take weak references regardless


def test_native_del_runs_natively_only(twin, flavour):
    token = "finalized-%s" % flavour
    finalized = objhelpers.FINALIZEDS[flavour](token)
    assert finalized.token == token
    del finalized
    assert wait_for(lambda: token in twin.execute(objhelpers.finalized))
    assert token not in objhelpers.finalized()


def test_methods_added_at_run_time(twin, flavour):
    Counter = objhelpers.COUNTERS[flavour]
    counter = Counter(2)
    # added natively: the proxy class does not know it; still called natively
    twin.execute(setattr, Counter, "triple", objhelpers.triple)
    try:
        assert counter.triple() == (6, twin.twinterpreter_id)
        method = counter.triple
        assert method() == (6, twin.twinterpreter_id)
        assert twin.execute(twinhelpers.echo, method)() == (6, twin.twinterpreter_id)
    finally:
        twin.execute(delattr, Counter, "triple")
    with pytest.raises(AttributeError):
        counter.triple
    # added here: the native class gets it, and the proxy class forwards it
    Counter.triple = objhelpers.triple
    try:
        assert twin.execute(objhelpers.has_class_attribute, Counter, "triple")
        assert counter.triple() == (6, twin.twinterpreter_id)
        assert Counter(4).triple() == (12, twin.twinterpreter_id)
    finally:
        del Counter.triple
    assert not twin.execute(objhelpers.has_class_attribute, Counter, "triple")
    with pytest.raises(AttributeError):
        counter.triple()


def test_dir_lists_the_native_attributes(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    counter.extra = 2
    names = dir(counter)
    assert {"count", "extra", "add", "unit", "doubled"} <= set(names)


def test_proxies_used_from_several_threads(twin, flavour):
    Counter = objhelpers.COUNTERS[flavour]
    shared = Counter(7)
    results, failures = {}, []

    def worker(n):
        try:
            own = Counter(0)
            for _ in range(100):
                own.add(1)
                assert shared.count == 7
            results[n] = own.count
        except BaseException as error:  # reported below
            failures.append(repr(error))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert results == {0: 100, 1: 100, 2: 100, 3: 100}


# -- inheritance ---------------------------------------------------------------------


def test_single_inheritance_and_super_init(twin, flavour):
    child = objhelpers.CHILDREN[flavour]("kid")
    assert child.inits == ["Base", "Child"]
    assert child.who() == "child of base"
    assert child.hello() == "hello from child kid"
    assert child.ran_in() == (twin.twinterpreter_id, twin.pid)
    assert objhelpers.CHILDREN[flavour].kind == "child"
    assert objhelpers.Base.kind == "base"


def test_multiple_inheritance(twin, flavour):
    duck = objhelpers.DUCKS[flavour]()
    assert duck.walk() == ("walk", twin.twinterpreter_id)
    assert duck.swim() == ("swim", twin.twinterpreter_id)
    assert isinstance(duck, objhelpers.Walker) and isinstance(duck, objhelpers.Swimmer)


def test_diamond_inheritance(twin, flavour):
    bottom = objhelpers.BOTTOMS[flavour]()
    assert bottom.trail == ["Top", "Right", "Left", "Bottom"]
    assert bottom.chain() == ["Bottom", "Left", "Right", "Top"]
    assert bottom.name() == "left"
    assert bottom.side() == "right side"
    for cls in (objhelpers.Top, objhelpers.Left, objhelpers.Right, objhelpers.BottomBehaviour):
        assert isinstance(bottom, cls)
    assert twin.execute(objhelpers.describe, bottom)["native"]


def test_subclass_changes_the_twin_id(twin, flavour):
    base = objhelpers.Base("b")  # native to the master
    assert not objhelpers.is_proxy(base)
    assert base.ran_in() == (kernel_state.MASTER_ID, os.getpid())
    child = objhelpers.CHILDREN[flavour]("c")  # moved to the twin
    assert objhelpers.is_proxy(child) and child.ran_in()[0] == twin.twinterpreter_id
    back = objhelpers.BACK_HOMES[flavour]("h")  # and back to the master
    assert not objhelpers.is_proxy(back)
    assert type(back) is objhelpers.BACK_HOMES[flavour]
    assert back.inits == ["Base", "Child"] and back.who() == "child of base"
    # created from the twin, it is created in the master
    made = twin.execute(objhelpers.make, objhelpers.BACK_HOMES[flavour], "t")
    assert type(made) is objhelpers.BACK_HOMES[flavour] and made.name == "t"
    assert twin.execute(objhelpers.call, made, "ran_in") == (kernel_state.MASTER_ID, os.getpid())


# -- master objects, identity, containers, pickles -----------------------------------


def test_master_object_used_from_a_twin(twin):
    counter = objhelpers.MasterCounter(1)
    total, ran_in, caller, proxied = twin.execute(objhelpers.use_counter, counter, 4)
    assert total == 5 and counter.count == 5
    assert ran_in == (kernel_state.MASTER_ID, os.getpid())
    assert caller == (twin.twinterpreter_id, twin.pid) and proxied
    made, proxied, ran_in = twin.execute(objhelpers.make_master_counter, 7)
    assert type(made) is objhelpers.MasterCounter and made.count == 7
    assert proxied and ran_in == (kernel_state.MASTER_ID, os.getpid())


def test_identity_of_a_twin_object(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    assert twin.execute(objhelpers.same, counter, counter)
    key = twin.execute(objhelpers.keep, "identity-%s" % flavour, counter)
    try:
        first = twin.execute(objhelpers.kept, key)
        second = twin.execute(objhelpers.kept, key)
        assert first is counter and second is counter
        assert twin.execute(twinhelpers.echo, counter) is counter
        other = objhelpers.COUNTERS[flavour](1)
        assert twin.execute(objhelpers.same, counter, other) is False
    finally:
        twin.execute(objhelpers.forget, key)


def test_identity_of_a_master_object(twin):
    counter = objhelpers.MasterCounter(1)
    assert twin.execute(twinhelpers.echo, counter) is counter
    assert twin.execute(objhelpers.same, counter, counter)
    assert twin.execute(objhelpers.is_proxy, counter)
    key = twin.execute(objhelpers.keep, "master-identity", counter)
    try:
        assert twin.execute(objhelpers.kept, key) is counter
        assert twin.execute(objhelpers.same, counter, objhelpers.MasterCounter(1)) is False
    finally:
        twin.execute(objhelpers.forget, key)


def test_objects_inside_containers_travel_by_reference(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    master_counter = objhelpers.MasterCounter(2)
    value = [counter, {"k": counter, "m": master_counter}, (master_counter, counter), {counter}]
    back = twin.execute(twinhelpers.echo, value)
    assert back[0] is counter
    assert back[1]["k"] is counter and back[1]["m"] is master_counter
    assert back[2][0] is master_counter and back[2][1] is counter
    assert back[3] == {counter}
    seen = twin.execute(objhelpers.describe_all, value)
    natives = [entry["native"] for entry in seen]
    assert natives == [True, True, False, False, True, True]
    # deeply nested containers are pickled whole: references inside pickles
    nested = [counter]
    for _ in range(200):
        nested = [nested]
    back = twin.execute(twinhelpers.echo, nested)
    for _ in range(200):
        back = back[0]
    assert back[0] is counter


def test_objects_inside_big_containers_travel_by_reference(twin, flavour):
    # containers of 1024 items or more travel as one pickle (bulk speed)
    counter = objhelpers.COUNTERS[flavour](1)
    master_counter = objhelpers.MasterCounter(2)
    value = list(range(3000)) + [counter, master_counter, counter]
    back = twin.execute(twinhelpers.echo, value)
    assert back[:3000] == list(range(3000))
    assert back[3000] is counter and back[3002] is counter
    assert back[3001] is master_counter
    table = {i: (counter if i % 2 else master_counter) for i in range(2000)}
    back = twin.execute(twinhelpers.echo, table)
    assert back[1] is counter and back[1999] is counter and back[0] is master_counter


def test_objects_inside_a_pickled_object_travel_by_reference(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](3)
    seen, count = twin.execute(objhelpers.unbox, twinhelpers.Box(counter))
    assert count == 3 and seen["native"] and not seen["proxy"]
    box = twin.execute(objhelpers.box_up, counter)
    assert isinstance(box, twinhelpers.Box) and box.value is counter
    master_counter = objhelpers.MasterCounter(4)
    seen, count = twin.execute(objhelpers.unbox, twinhelpers.Box(master_counter))
    assert count == 4 and seen["proxy"]
    assert twin.execute(objhelpers.box_up, master_counter).value is master_counter
    # a bound method travels bound to its object
    assert twin.execute(twinhelpers.echo, counter.add) == counter.add
    assert twin.execute(twinhelpers.echo, counter.add)(1) == 4


@pytest.mark.timeout(120)
def test_recursion_ping_pong_between_master_and_twin_objects(twin, flavour):
    master_ping = objhelpers.MasterPing()
    twin_ping = objhelpers.PINGS[flavour]()
    trail = master_ping.bounce(twin_ping, 100, [])
    assert len(trail) == 100
    master = (kernel_state.MASTER_ID, os.getpid())
    here = (twin.twinterpreter_id, twin.pid)
    assert trail == [master, here] * 50
    trail = twin_ping.bounce(master_ping, 100, [])
    assert trail == [here, master] * 50


def test_twin_uses_an_object_of_another_twin(twin, flavour, other_twin):
    other, other_master = other_twin
    counter = objhelpers.COUNTERS[other](5)
    total, ran_in, caller, proxied = twin.execute(objhelpers.use_counter, counter, 3)
    assert total == 8 and counter.count == 8
    assert ran_in == (other_master.twinterpreter_id, other_master.pid)
    assert caller == (twin.twinterpreter_id, twin.pid) and proxied
    assert twin.execute(twinhelpers.echo, counter) is counter
    # created by a twin in the other twin, handed to the master
    made = twin.execute(objhelpers.make, objhelpers.COUNTERS[other], 2)
    assert objhelpers.is_proxy(made) and made.ran_in()[0] == other_master.twinterpreter_id
    assert made.add(1) == 3
    # and an object of the first twin used by the other twin
    mine = objhelpers.COUNTERS[flavour](10)
    assert other_master.execute(objhelpers.use_counter, mine, 1)[:2] == (11, (twin.twinterpreter_id, twin.pid))


# -- garbage collection --------------------------------------------------------------


def test_native_object_is_freed_after_its_last_proxy(twin, fresh_twin, flavour):
    Tracked = objhelpers.FRESH_TRACKED[flavour]
    token = "tracked-%s" % flavour
    tracked = Tracked(token)
    assert fresh_twin.execute(twinhelpers.echo, tracked) is tracked
    # another twin holds a proxy too (a reference handed on by the master)
    key = twin.execute(objhelpers.keep, "gc-%s" % flavour, tracked)
    assert fresh_twin.execute(objhelpers.tracked_alive, [token]) == [token]
    assert fresh_twin.execute(objhelpers.exported_count) == 1
    del tracked
    collect_and_flush()
    assert twin.execute(objhelpers.call_kept, key, "ping") == ("pong", token, fresh_twin.twinterpreter_id)
    assert fresh_twin.execute(objhelpers.tracked_alive, [token]) == [token]
    twin.execute(objhelpers.forget, key)  # the last proxy
    assert wait_for(lambda: fresh_twin.execute(objhelpers.tracked_alive, [token]) == [], [twin])
    assert fresh_twin.execute(objhelpers.exported_count) == 0


def test_master_object_is_freed_after_the_twin_drops_it(fresh_twin):
    tokens = ["master-tracked-%d" % n for n in range(5)]
    baseline = objhelpers.exported_count()
    assert fresh_twin.execute(objhelpers.hold_master_objects, tokens) == 5
    assert objhelpers.tracked_alive(tokens) == tokens
    assert objhelpers.exported_count() == baseline + 5
    assert fresh_twin.execute(objhelpers.drop_held) == 0
    assert wait_for(lambda: objhelpers.tracked_alive(tokens) == [], [fresh_twin])
    assert objhelpers.exported_count() == baseline


def test_a_stopped_twin_releases_what_it_held(fresh_twin):
    tokens = ["held-by-stopped-%d" % n for n in range(3)]
    baseline = objhelpers.exported_count()
    fresh_twin.execute(objhelpers.hold_master_objects, tokens)
    assert objhelpers.tracked_alive(tokens) == tokens
    fresh_twin.stop()
    assert wait_for(lambda: objhelpers.tracked_alive(tokens) == [])
    assert objhelpers.exported_count() == baseline


@pytest.mark.timeout(600)
def test_many_create_drop_cycles_leave_the_exported_table_empty(fresh_twin, flavour):
    Plain = objhelpers.FRESH_PLAINS[flavour]
    assert fresh_twin.execute(objhelpers.exported_count) == 0
    for n in range(10000):
        plain = Plain()
        if n % 1000 == 0:
            assert plain.ping()[0] == "pong"
        del plain
    assert wait_for(lambda: fresh_twin.execute(objhelpers.exported_count) == 0)
    # and the link still works
    assert Plain().ping() == ("pong", fresh_twin.twinterpreter_id)


# -- bad input -----------------------------------------------------------------------


def test_missing_attribute_raises_the_native_attribute_error(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    with pytest.raises(AttributeError, match="no_such_thing") as info:
        counter.no_such_thing
    assert objhelpers.COUNTERS[flavour].__name__ in str(info.value)
    with pytest.raises(AttributeError, match="no_such_thing"):
        del counter.no_such_thing
    with pytest.raises(AttributeError, match="no_such_method"):
        counter.no_such_method()
    with pytest.raises(AttributeError, match="no_such_class_attribute"):
        objhelpers.COUNTERS[flavour].no_such_class_attribute
    assert counter.add(1) == 2  # the link survives


def test_wrong_arguments_raise_the_native_type_error(twin, flavour):
    Counter = objhelpers.COUNTERS[flavour]
    counter = Counter(1)
    with pytest.raises(TypeError, match="add"):
        counter.add(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword|got an unexpected"):
        counter.add(m=1)
    with pytest.raises(TypeError):
        counter.add("text")  # int + str, natively
    with pytest.raises(TypeError, match="__init__|argument"):
        Counter(1, 2, 3)
    with pytest.raises(TypeError):
        Counter.describe("unexpected")
    assert counter.add(1) == 2


def test_an_argument_that_does_not_pickle_reaches_a_twin_object_by_reference(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](1)
    lock = threading.Lock()
    with pytest.raises(TypeError):
        counter.add(lock)  # in the twin: 1 + a proxy of our lock
    counter.attribute = lock
    assert counter.attribute is lock  # home as itself
    assert counter.add(1) == 2


def test_proxy_of_a_stopped_twin_raises_a_clear_error(fresh_twin, flavour, monkeypatch):
    Plain = objhelpers.FRESH_PLAINS[flavour]
    plain = Plain()
    assert plain.ping()[0] == "pong"
    twin_id = fresh_twin.twinterpreter_id
    fresh_twin.stop()
    for use in (lambda: plain.ping(), lambda: plain.anything, lambda: setattr(plain, "x", 1)):
        with pytest.raises(errors.TwinterpeterTerminated) as info:
            use()
        assert twin_id in str(info.value)
    assert "proxy" in repr(plain) or Plain.__name__ in repr(plain)
    monkeypatch.setenv("CPY2PY_NOAUTO", "1")
    with pytest.raises(errors.TwinterpeterUnavailable) as info:
        Plain()
    assert twin_id in str(info.value)
    # a new twin serves new objects
    fresh_twin.start()
    assert Plain().ping() == ("pong", twin_id)


def test_class_starts_its_twin_on_demand(flavour, twin_exe, monkeypatch):
    monkeypatch.delenv("CPY2PY_NOAUTO", raising=False)
    Counter = objhelpers.AUTO_COUNTERS[flavour]
    twin_id = twinhelpers.AUTO_IDS[flavour]
    master = TwinMaster(executable=twin_exe, twinterpreter_id=twin_id)
    try:
        assert not master.is_alive
        counter = Counter(2)
        assert master.is_alive
        assert counter.ran_in() == (twin_id, master.pid)
        master.stop()
        monkeypatch.setenv("CPY2PY_NOAUTO", "1")
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            Counter(1)
        assert twin_id in str(info.value)
        assert not master.is_alive
    finally:
        master.destroy()


def test_objects_inside_exceptions_travel_by_reference(twin, flavour):
    # A twin-native object raised back from the twin comes back as its proxy.
    counter = objhelpers.COUNTERS[flavour](5)
    with pytest.raises(objhelpers.CarryingError) as caught:
        twin.execute(objhelpers.raise_carrying, counter)
    assert caught.value.args[0] is counter
    assert caught.value.args[0].add(1) == 6
    # A master-native object raised in the twin comes back as the very object.
    master_counter = objhelpers.MasterCounter(7)
    with pytest.raises(objhelpers.CarryingError) as caught:
        twin.execute(objhelpers.raise_carrying, master_counter)
    assert caught.value.args[0] is master_counter
