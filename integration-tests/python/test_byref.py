"""Objects that cannot travel by value travel by reference: iterators and
generators, locks, files, sockets, C-extension handles, numpy arrays to an
interpreter without numpy, and whatever ``by_ref`` or ``always_by_ref`` marks.
Each with a CPython and a PyPy twin; the suite runs under both masters."""

import gc
import io
import pickle
import platform
import threading

import pytest

import procutil
import refhelpers
from cpy2py import RemoteObject, TwinMaster, UnpicklableError, by_ref, by_value

MASTER_IS_PYPY = platform.python_implementation() == "PyPy"


def collected():
    """Runs a collection here: a PyPy master drops a proxy only at one (the first
    may only unlink it from cpyext); true, to chain in conditions."""
    gc.collect()
    return True


def test_a_dict_key_iterator_comes_by_reference(twin):
    it = twin.execute(refhelpers.dict_key_iterator)
    assert isinstance(it, RemoteObject)
    assert next(it) == "a"
    assert list(it) == ["b", "c"]
    with pytest.raises(StopIteration):
        next(it)


def test_a_generator_comes_by_reference_and_iterates(twin):
    gen = twin.execute(refhelpers.make_generator, 5, "iterates")
    assert isinstance(gen, RemoteObject)
    assert iter(gen) is not None
    assert [next(gen), next(gen)] == [0, 1]
    assert list(gen) == [2, 3, 4]
    assert twin.execute(refhelpers.event, "iterates") == "finally"


@pytest.mark.parametrize("at", [5, 500])
def test_an_exception_inside_a_generator_arrives_at_its_item(twin, at):
    gen = twin.execute(refhelpers.make_failing, 1000, at)
    seen = []
    with pytest.raises(ValueError, match="failed at item %d" % at):
        for item in gen:
            seen.append(item)
    assert seen == list(range(at))
    with pytest.raises(StopIteration):
        next(gen)


def test_a_long_iteration_is_fetched_ahead_in_batches(twin):
    gen = twin.execute(refhelpers.make_producing, 100000, "batches")
    first = [next(gen) for _ in range(5)]
    assert first == [0, 1, 2, 3, 4]
    assert twin.execute(refhelpers.produced, "batches") == 5  # one at a time at first
    for _ in range(95):
        next(gen)
    ahead = twin.execute(refhelpers.produced, "batches")
    assert 100 < ahead < 100 + 2 * 1024  # fetched ahead, in bounded batches
    for item in gen:  # a loop that breaks early leaves the rest to next()
        if item == 2000:
            break
    assert next(gen) == 2001
    assert list(gen) == list(range(2002, 100000))


def test_sending_to_a_generator_fetched_ahead_is_refused_clearly(twin):
    gen = twin.execute(refhelpers.call, refhelpers.echo_gen)
    assert next(gen) == "ready"
    assert gen.send(1) == "got 1"  # after a send, one at a time: exact
    assert [next(gen) for _ in range(20)] == ["got None"] * 20
    other = twin.execute(refhelpers.make_producing, 1000, "refused")
    for _ in range(50):
        next(other)
    with pytest.raises(RuntimeError, match="fetched ahead"):
        other.send(None)
    other.close()


def test_send_throw_and_close_forward_to_the_generator(twin):
    gen = twin.execute(refhelpers.call, refhelpers.echo_gen)
    assert next(gen) == "ready"
    assert gen.send(7) == "got 7"
    assert gen.throw(KeyError("k")) == "caught 'k'"
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_a_generator_dropped_half_way_is_closed_where_it_lives(twin):
    gen = twin.execute(refhelpers.make_generator, 100, "dropped")
    assert next(gen) == 0
    assert twin.execute(refhelpers.event, "dropped") is None
    del gen
    assert procutil.wait_until(lambda: collected() and twin.execute(refhelpers.event, "dropped") == "finally", 10)


def test_a_twin_object_method_that_is_a_generator_streams_by_reference(twin, flavour):
    shelf = refhelpers.SHELVES[flavour](range(3000))
    walk = shelf.walk("shelf")
    assert isinstance(walk, RemoteObject)
    assert [next(walk), next(walk)] == [0, 1]
    assert list(walk) == list(range(2, 3000))
    assert twin.execute(refhelpers.event, "shelf") == "finally"
    # dropped half-way, its finally runs in the twin
    walk = shelf.walk("shelf-dropped")
    assert next(walk) == 0
    del walk
    assert procutil.wait_until(
        lambda: collected() and twin.execute(refhelpers.event, "shelf-dropped") == "finally", 10
    )


def test_a_lock_works_as_a_context_manager(twin):
    lock = twin.execute(refhelpers.make_lock)
    assert isinstance(lock, RemoteObject)
    with lock:
        assert lock.locked()
    assert not lock.locked()
    assert lock.acquire(False) is True
    lock.release()


def test_an_open_file_is_read_where_it_is(twin):
    handle = twin.execute(refhelpers.make_file, "one\ntwo\n")
    assert handle.name.startswith("/")
    assert handle.readline() == "one\n"
    assert list(handle) == ["two\n"]
    handle.close()
    assert handle.closed


def test_a_socket_and_a_c_extension_handle_come_by_reference(twin):
    sock = twin.execute(refhelpers.make_socket)
    assert sock.fileno() >= 0
    sock.close()
    conn = twin.execute(refhelpers.make_connection)
    assert isinstance(conn, RemoteObject)
    conn.execute("create table t (x)")
    conn.execute("insert into t values (42)")
    assert conn.execute("select x from t").fetchall() == [(42,)]
    conn.close()


def test_one_proxy_per_remote_object_and_it_goes_home_as_itself(twin):
    lock = twin.execute(refhelpers.make_lock)
    pair = twin.execute(refhelpers.call, tuple, [lock, lock])
    assert pair[0] is pair[1] is lock
    assert twin.execute(refhelpers.same, lock, lock) is True


def test_by_ref_sends_a_plain_value_by_reference_both_ways(twin):
    items = [1, 2, 3]
    remote = twin.execute(refhelpers.call, len, by_ref(items))
    assert remote == 3
    proxy = twin.execute(refhelpers.make_tracked, "tracked")
    assert isinstance(proxy, RemoteObject)
    proxy.append(4)
    assert len(proxy) == 4 and proxy[3] == 4 and 2 in proxy
    assert by_value(proxy) == [1, 2, 3, 4]
    assert isinstance(by_value(proxy), list)


def test_always_by_ref_classes_keep_their_special_methods(twin):
    account = twin.execute(refhelpers.make_account, 10)
    assert isinstance(account, RemoteObject)
    assert account.deposit(5) == 15
    assert account.balance == 15
    account.balance = 20
    assert twin.execute(refhelpers.balance_of, account) == 20
    assert len(account) == 20
    with pytest.raises(TypeError):
        hash(account)  # the native type is not hashable
    assert repr(account).startswith("<refhelpers.Account object")


def test_isinstance_holds_for_the_native_class_where_it_is_imported(twin):
    account = twin.execute(refhelpers.make_account, 1)
    assert isinstance(account, refhelpers.Account)
    assert isinstance(account, RemoteObject)
    handle = twin.execute(refhelpers.make_file, "")
    assert isinstance(handle, io.TextIOWrapper) and isinstance(handle, io.IOBase)
    assert not isinstance(handle, threading.Thread)
    handle.close()


def test_a_proxy_dropped_frees_the_native_object(twin):
    proxy = twin.execute(refhelpers.make_tracked, "freed")
    assert twin.execute(refhelpers.alive, "freed")  # the export holds it, nothing else
    assert twin.execute(refhelpers.exported) >= 1
    del proxy
    assert procutil.wait_until(lambda: collected() and not twin.execute(refhelpers.alive, "freed"), 10)


def test_by_value_of_a_generator_says_why_there_is_no_copy(twin):
    gen = twin.execute(refhelpers.make_generator, 3, None)
    with pytest.raises(UnpicklableError, match="generator"):
        by_value(gen)
    assert next(gen) == 0  # the proxy still works


def test_an_object_whose_pickling_raises_goes_by_reference_and_by_value_says_why(twin):
    sealed = twin.execute(refhelpers.make_sealed, "kept")
    assert isinstance(sealed, RemoteObject)
    assert sealed.reveal() == "kept" and sealed.secret == "kept"
    with pytest.raises(UnpicklableError) as info:
        by_value(sealed)
    message = str(info.value)
    assert "Sealed" in message and "Sealed objects are not copied" in message, message
    assert twin.execute(refhelpers.echo_value, 7) == 7  # the link survives


def test_a_master_object_goes_to_the_twin_by_reference(twin):
    lock = threading.Lock()
    assert twin.execute(refhelpers.call_method, lock, "acquire", False) is True
    assert lock.locked()
    lock.release()
    gen = refhelpers.counting(3)
    assert twin.execute(refhelpers.call, list, gen) == [0, 1, 2]


def test_a_proxy_of_a_dead_twin_raises_terminated(fresh_twin):
    from cpy2py import TwinterpeterTerminated

    lock = fresh_twin.execute(refhelpers.make_lock)
    fresh_twin.stop()
    with pytest.raises(TwinterpeterTerminated):
        lock.acquire()


# -- numpy: only the CPython virtualenv has it --------------------------------------


@pytest.fixture(scope="module")
def numpy_twin():
    """A CPython twin, which has numpy, whichever flavour the other tests use."""
    master = TwinMaster(executable=procutil.twin_executable("cpython"), twinterpreter_id="numpy-twin")
    master.start()
    yield master
    master.stop()


def test_a_numpy_array_goes_by_reference_to_an_interpreter_without_numpy(numpy_twin):
    array = numpy_twin.execute(refhelpers.make_array, 10)
    if not MASTER_IS_PYPY:
        # both sides import numpy: it travels by value
        assert type(array).__module__ == "numpy" and array.sum() == 45
        assert numpy_twin.execute(refhelpers.is_array, array)
        return
    assert not refhelpers.holds_numpy()
    assert isinstance(array, RemoteObject)
    assert type(array).__qualname__ == "ndarray"
    assert repr(array) == "array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"
    assert array.shape == (10,)
    assert len(array) == 10
    assert array[3] == 3
    assert array.sum() == 45
    bigger = array + 1
    assert isinstance(bigger, RemoteObject)
    assert numpy_twin.execute(refhelpers.type_name, bigger) == "numpy.ndarray"
    assert bigger[9] == 10
    assert numpy_twin.execute(refhelpers.is_array, bigger)  # home as itself
    with pytest.raises(ModuleNotFoundError, match="numpy"):
        by_value(array)
    assert array[0] == 0  # the link survives


def test_large_arrays_and_bytearrays_cross_by_value_out_of_band(numpy_twin):
    payload = bytearray(b"x" * (1 << 20))
    echoed = numpy_twin.execute(refhelpers.call, bytearray, pickle.PickleBuffer(payload))
    assert echoed == payload and type(echoed) is bytearray
    if MASTER_IS_PYPY:
        return  # the rest needs numpy here too
    import numpy

    array = numpy.arange(1 << 18, dtype=numpy.float64)  # 2 MiB
    assert numpy_twin.execute(refhelpers.array_facts, array) == (
        int(array.sum()), (1 << 18,), "float64", True)
    back = numpy_twin.execute(refhelpers.call, numpy.negative, array)
    assert type(back) is numpy.ndarray and back.flags.writeable
    assert (back == -array).all()
    back[0] = 7.0  # writable here too
