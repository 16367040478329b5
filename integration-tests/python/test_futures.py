"""Calls that do not block: ``TwinMaster.submit``/``map``/``shutdown`` (an Executor),
``aexecute`` from asyncio, ``run_in_executor``, and ``TwinPool``. Calls are held in
flight at gates (``futurehelpers.wait_at``) that the test opens, never by sleeping."""

import asyncio
import concurrent.futures
import os
import signal
import threading
import time

import pytest

import futurehelpers
import objhelpers
import procutil
import refhelpers
import twinhelpers
import cpy2py
from cpy2py import TwinMaster, TwinPool, errors


def test_submit_returns_a_running_future_whose_request_has_left(twin):
    future = twin.submit(futurehelpers.wait_at, "left", "value")
    assert isinstance(future, concurrent.futures.Future)
    assert future.running() and not future.done()
    # nobody waits on the future, yet the twin is running the call
    assert procutil.wait_until(lambda: twin.execute(futurehelpers.arrived, "left"), 10)
    twin.execute(futurehelpers.open_gate, "left")
    value, pid = future.result(timeout=10)
    assert (value, pid) == ("value", twin.pid)


def test_a_future_carries_the_remote_exception_with_its_type(twin):
    future = twin.submit(futurehelpers.fail, "remote")
    with pytest.raises(KeyError, match="remote") as info:
        future.result(timeout=10)
    assert isinstance(info.value.__cause__, errors.RemoteTraceback)
    assert isinstance(future.exception(), KeyError)


def test_ten_thousand_futures_in_flight_from_one_thread(twin):
    futures = [twin.submit(futurehelpers.square, n) for n in range(10000)]
    assert [f.result(timeout=60) for f in futures] == [n * n for n in range(10000)]


def test_done_callbacks_run_and_may_call_the_twin_again(twin):
    seen = []
    finished = threading.Event()

    def callback(future):
        # on the completion thread: a blocking call from here must work
        seen.append((future.result(), twin.execute(futurehelpers.square, 3)))
        finished.set()

    twin.submit(futurehelpers.square, 2).add_done_callback(callback)
    assert finished.wait(10)
    assert seen == [(4, 9)]


def test_map_keeps_order_in_chunks_and_honours_its_timeout(twin):
    items = list(range(250))
    assert list(twin.map(futurehelpers.square, items)) == [n * n for n in items]
    assert list(twin.map(futurehelpers.square, items, chunksize=32)) == [n * n for n in items]
    assert list(twin.map(twinhelpers.add, items, items, chunksize=7)) == [2 * n for n in items]
    with pytest.raises(ValueError, match="chunksize"):
        twin.map(futurehelpers.square, items, chunksize=0)
    results = twin.map(futurehelpers.wait_at, ["map-timeout"], timeout=0.2)
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)
    twin.execute(futurehelpers.open_gate, "map-timeout")


def test_a_twin_ending_mid_call_fails_its_future(fresh_twin):
    future = fresh_twin.submit(futurehelpers.wait_at, "never-opened")
    assert procutil.wait_until(lambda: fresh_twin.execute(futurehelpers.arrived, "never-opened"), 10)
    fresh_twin.stop(grace=0.0)
    with pytest.raises(errors.TwinterpeterTerminated):
        future.result(timeout=10)
    with pytest.raises(errors.TwinterpeterUnavailable):
        fresh_twin.submit(futurehelpers.square, 1)


def test_a_twin_killed_with_a_hundred_futures_pending_fails_them_all_at_once(fresh_twin):
    gate = "killed-with-100"
    # half running (under the pool's cap of 64, so that `arrived` finds a thread),
    # half sent after them
    futures = [fresh_twin.submit(futurehelpers.wait_at, gate, n) for n in range(50)]
    assert procutil.wait_until(lambda: fresh_twin.execute(futurehelpers.arrived, gate), 10)
    futures += [fresh_twin.submit(futurehelpers.wait_at, gate, n) for n in range(50, 100)]
    os.kill(fresh_twin.pid, signal.SIGKILL)
    done, not_done = concurrent.futures.wait(futures, timeout=1.0)
    assert not not_done, "%d of 100 futures still pending 1 s after the kill" % len(not_done)
    for future in futures:
        error = future.exception()
        assert isinstance(error, errors.TwinterpeterTerminated), repr(error)
        assert fresh_twin.twinterpreter_id in str(error)


def test_a_twin_killed_with_a_hundred_awaits_pending_fails_them_all_at_once(fresh_twin):
    gate = "killed-with-100-awaits"

    async def main():
        calls = [asyncio.ensure_future(fresh_twin.aexecute(futurehelpers.wait_at, gate, n)) for n in range(50)]
        while not await fresh_twin.aexecute(futurehelpers.arrived, gate):
            await asyncio.sleep(0.005)
        calls += [asyncio.ensure_future(fresh_twin.aexecute(futurehelpers.wait_at, gate, n)) for n in range(50, 100)]
        await asyncio.sleep(0)  # let the new tasks send their requests
        os.kill(fresh_twin.pid, signal.SIGKILL)
        done, pending = await asyncio.wait(calls, timeout=1.0)
        return [c.exception() for c in done], len(pending)

    failures, pending = run(main())
    assert pending == 0, "%d of 100 awaits still pending 1 s after the kill" % pending
    assert all(isinstance(e, errors.TwinterpeterTerminated) for e in failures), failures[:3]


def test_shutdown_waits_for_the_futures_then_stops_the_twin(fresh_twin):
    future = fresh_twin.submit(futurehelpers.wait_at, "shutdown", 1)
    assert procutil.wait_until(lambda: fresh_twin.execute(futurehelpers.arrived, "shutdown"), 10)
    stopper = threading.Thread(target=fresh_twin.shutdown, daemon=True)
    stopper.start()
    # shutdown is waiting for the future: the twin is alive and answers
    assert fresh_twin.is_alive
    fresh_twin.execute(futurehelpers.open_gate, "shutdown")
    stopper.join(30)
    assert not stopper.is_alive()
    assert future.result(timeout=0)[0] == 1
    assert not fresh_twin.is_alive


# -- asyncio --------------------------------------------------------------------------


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_aexecute_leaves_the_loop_free_while_the_twin_works(twin):
    async def main():
        held = asyncio.ensure_future(twin.aexecute(futurehelpers.wait_at, "loop-free", "held"))
        # the loop runs on: this task sees the call arrive and opens its gate
        while not await twin.aexecute(futurehelpers.arrived, "loop-free"):
            await asyncio.sleep(0.005)
        await twin.aexecute(futurehelpers.open_gate, "loop-free")
        return await held

    assert run(main())[0] == "held"


def test_thousands_of_calls_in_flight_from_one_loop_without_a_thread_each(twin):
    async def main():
        before = threading.active_count()
        calls = [twin.aexecute(futurehelpers.square, n) for n in range(2000)]
        results = await asyncio.gather(*calls)
        return results, threading.active_count() - before

    results, new_threads = run(main())
    assert results == [n * n for n in range(2000)]
    assert new_threads <= 1  # at most the completion thread, started once


def test_aexecute_raises_the_remote_exception(twin):
    with pytest.raises(KeyError, match="async"):
        run(twin.aexecute(futurehelpers.fail, "async"))


def test_a_cancelled_task_stops_waiting_and_the_twin_stays_usable(twin):
    async def main():
        task = asyncio.ensure_future(twin.aexecute(futurehelpers.wait_at, "cancelled"))
        while not await twin.aexecute(futurehelpers.arrived, "cancelled"):
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await twin.aexecute(futurehelpers.open_gate, "cancelled")  # its late reply is dropped
        return await twin.aexecute(futurehelpers.square, 5)

    assert run(main()) == 25


def test_five_hundred_slow_calls_queue_at_the_pools_cap_and_a_deep_chain_goes_on(twin, flavour):
    futures = [twin.submit(futurehelpers.slow, 0.05) for _ in range(500)]
    # a chain 50 deep (twin -> master -> twin ...) under that load: its first hop
    # waits for a pool thread, the rest run on the threads that wait for them
    trail = twin.execute(twinhelpers._bounce, flavour, 50, [])
    assert len(trail) == 50
    assert all(f.result(timeout=60) is None for f in futures)
    # each ran on a thread of its own: at most the pool's cap (64) and the serving
    # thread at once, and well more than one (they did not run one by one)
    assert 8 <= twin.execute(futurehelpers.most_slow_at_once) <= 64 + 1


def test_callbacks_from_the_twin_run_while_the_loop_awaits(twin, flavour):
    """A chain of depth 20 (twin -> master -> twin ...) started from the loop: the
    master's side runs on pool threads, never on the waiting loop."""

    async def main():
        return await twin.aexecute(twinhelpers._bounce, flavour, 20, [])

    trail = run(main())
    assert len(trail) == 20
    loop_thread = threading.get_ident()
    master_threads = {t for (twin_id, pid, t) in trail if twin_id == twinhelpers.kernel_state.MASTER_ID}
    assert master_threads and loop_thread not in master_threads


def test_aio_awaits_methods_of_twin_objects_and_of_objects_held_by_reference(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](10)
    account = twin.execute(refhelpers.make_account, 100)

    async def main():
        added = await asyncio.gather(*[cpy2py.aio(counter.add, 1) for _ in range(50)])
        deposited = await cpy2py.aio(account.deposit, amount=5)
        where = await cpy2py.aio(counter.ran_in)
        return sorted(added), deposited, where

    added, deposited, where = run(main())
    assert added == list(range(11, 61))  # each call ran once, in the twin
    assert counter.count == 60
    assert deposited == 105 and twin.execute(refhelpers.balance_of, account) == 105
    assert where[1] == twin.pid


def test_aio_raises_the_remote_exception_and_refuses_local_callables(twin, flavour):
    counter = objhelpers.COUNTERS[flavour](0)
    with pytest.raises(TypeError):
        run(cpy2py.aio(counter.add, "not a number"))
    with pytest.raises(TypeError, match="method of a proxy"):
        run(cpy2py.aio(futurehelpers.square, 2))
    with pytest.raises(TypeError, match="method of a proxy"):
        run(cpy2py.aio(objhelpers.MasterCounter(0).add, 1))


def _spinning(twin, key):
    assert procutil.wait_until(lambda: twin.execute(futurehelpers.arrived, key), 10)


def _interrupted(twin, key):
    assert procutil.wait_until(lambda: twin.execute(futurehelpers.outcome, key) is not None, 10)
    return twin.execute(futurehelpers.outcome, key)


def test_cancelling_a_running_future_interrupts_the_call_in_the_twin(twin, flavour):
    key = "spin-future-" + flavour
    future = twin.submit(futurehelpers.spin, key)
    _spinning(twin, key)
    cancelled_at = time.monotonic()
    assert future.cancel()
    assert future.cancelled() and future.done()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=0)
    kind, stopped_at = _interrupted(twin, key)
    # the twin's clock is this machine's monotonic clock too
    assert kind == "CallCancelled"
    assert stopped_at - cancelled_at < 0.1
    assert twin.execute(futurehelpers.square, 4) == 16
    assert not future.cancel() or future.cancelled()  # cancelling again changes nothing


def test_cancelling_is_seen_by_waiters_and_callbacks_and_is_a_no_op_once_done(twin):
    key = "spin-waiters"
    future = twin.submit(futurehelpers.spin, key)
    _spinning(twin, key)
    called, waited = [], []
    future.add_done_callback(lambda f: called.append(f.cancelled()))
    waiter = threading.Thread(target=lambda: waited.append(concurrent.futures.wait([future], timeout=10)))
    waiter.start()
    future.cancel()
    waiter.join(10)
    assert called == [True] and future in waited[0].done
    assert _interrupted(twin, key)[0] == "CallCancelled"
    finished = twin.submit(futurehelpers.square, 3)
    assert finished.result(timeout=10) == 9
    assert not finished.cancel()  # completed: nothing to cancel
    assert finished.result() == 9


def test_cancelling_the_task_awaiting_a_call_interrupts_it(twin, flavour):
    key = "spin-task-" + flavour

    async def main():
        task = asyncio.ensure_future(twin.aexecute(futurehelpers.spin, key))
        while not await twin.aexecute(futurehelpers.arrived, key):
            await asyncio.sleep(0.005)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled_at

    cancelled_at = run(main())
    kind, stopped_at = _interrupted(twin, key)
    assert kind == "CallCancelled" and stopped_at - cancelled_at < 0.1
    assert twin.execute(futurehelpers.square, 5) == 25


def test_cancelling_a_call_waiting_in_a_nested_call_interrupts_it(twin, flavour):
    key, gate = "nested-cancel-" + flavour, "nested-cancel-gate-" + flavour
    future = twin.submit(futurehelpers.call_master_and_record, key, gate)
    # the twin's call waits for the master, which waits at the gate
    assert procutil.wait_until(lambda: futurehelpers.arrived(gate), 10)
    assert future.cancel()
    # the twin's wait for its nested call ends (it looks for pending exceptions
    # every 100 ms), well before the gate opens
    assert procutil.wait_until(lambda: twin.execute(futurehelpers.outcome, key) is not None, 10)
    assert twin.execute(futurehelpers.outcome, key) == "CallCancelled"
    futurehelpers.open_gate(gate)  # the master's late reply to the twin is dropped there
    assert twin.execute(futurehelpers.square, 7) == 49


def test_shutdown_with_cancel_futures_interrupts_the_calls_in_flight(fresh_twin):
    futures = [fresh_twin.submit(futurehelpers.spin, "spin-shutdown-%d" % n) for n in range(2)]
    for n in range(2):
        _spinning(fresh_twin, "spin-shutdown-%d" % n)
    done = threading.Event()
    observer = threading.Thread(target=lambda: (concurrent.futures.wait(futures, timeout=20), done.set()))
    observer.start()
    # interrupted, they end; the twin stops once they have
    fresh_twin.shutdown(wait=True, cancel_futures=True)
    observer.join(20)
    assert done.is_set() and all(f.cancelled() for f in futures)


def test_a_nested_call_inherits_the_deadline_of_the_call_it_serves(twin, flavour):
    key, gate = "deadline-" + flavour, "deadline-gate-" + flavour
    def call():
        try:
            twin.execute_timeout(0.5, futurehelpers.call_master_past_deadline, key, gate)
        except cpy2py.errors.TwinterpreterTimeout:
            pass  # its answer came once the gate opened, after its deadline

    outer = threading.Thread(target=call)
    outer.start()
    # the twin's call back into the master times out at the outer call's deadline,
    # while the master still waits at the gate
    assert procutil.wait_until(lambda: twin.execute(futurehelpers.outcome, key) is not None, 20)
    left_at_start, nested, left_after = twin.execute(futurehelpers.outcome, key)
    futurehelpers.open_gate(gate)
    outer.join(20)
    assert 0 < left_at_start <= 0.5
    assert nested == "TwinterpreterTimeout"
    assert left_after == 0.0
    assert not outer.is_alive()
    assert twin.execute(futurehelpers.square, 6) == 36


def test_time_left_is_none_without_a_deadline(twin):
    assert twin.execute(cpy2py.time_left) is None
    assert 0 < twin.execute_timeout(5.0, cpy2py.time_left) <= 5.0
    assert cpy2py.time_left() is None  # this thread serves no call


def test_async_for_over_a_remote_generator_streams_it_in_order(twin):
    gen = twin.execute(refhelpers.make_producing, 3000, "async-for")

    async def main():
        return [item async for item in gen]

    assert run(main()) == list(range(3000))
    # fetched in batches: the twin produced it all, and no more round trips remain
    assert twin.execute(refhelpers.produced, "async-for") == 3000


def test_async_for_raises_the_generators_exception_at_its_item(twin):
    gen = twin.execute(refhelpers.make_failing, 100, 40)

    async def main():
        seen = []
        with pytest.raises(ValueError, match="failed at item 40"):
            async for item in gen:
                seen.append(item)
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return seen

    assert run(main()) == list(range(40))


def test_run_in_executor_runs_in_the_twin(twin):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(twin, futurehelpers.wait_at, "executor-open", "x", 0.0)

    twin.execute(futurehelpers.open_gate, "executor-open")
    assert run(main()) == ("x", twin.pid)


# -- TwinPool -------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_pool_spreads_calls_over_its_twins(twin_exe, flavour):
    with TwinPool(twin_exe, size=2, twinterpreter_id="pool-" + flavour) as pool:
        assert len(pool.twins) == 2 and all(t.is_alive for t in pool.twins)
        # two calls in flight at once go to the two twins
        held = [pool.submit(futurehelpers.wait_at, "pool-%s-%d" % (flavour, n), n) for n in range(2)]
        for n, twin in enumerate(pool.twins):
            twin.execute(futurehelpers.open_gate, "pool-%s-%d" % (flavour, n))
        pids = {f.result(timeout=30)[1] for f in held}
        assert pids == {t.pid for t in pool.twins}
        assert list(pool.map(futurehelpers.square, range(100), chunksize=10)) == [n * n for n in range(100)]
    assert not any(t.is_alive for t in pool.twins)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(futurehelpers.square, 1)


def test_a_pool_of_a_missing_interpreter_fails_clearly(tmp_path):
    with pytest.raises(errors.TwinterpeterUnavailable) as info:
        TwinPool(str(tmp_path / "no-such-python"), size=2, twinterpreter_id="pool-missing")
    assert "no-such-python" in str(info.value)
    for n in range(2):
        assert not TwinMaster(twinterpreter_id="pool-missing-%d" % n).is_alive
