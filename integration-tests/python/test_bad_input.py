"""Bad input gets a clear error, and nothing hangs (the issue's table, row by row)."""

import importlib
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import procutil
import twinhelpers
from cpy2py import RemoteObject, TwinMaster, _native, errors


def start_fails(master, timeout=30):
    """``master.start()`` raises TwinterpeterUnavailable quickly; the error."""
    started = time.monotonic()
    try:
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            master.start()
        assert time.monotonic() - started < timeout
        assert not master.is_alive
        with pytest.raises(errors.TwinterpeterUnavailable):
            master.execute(twinhelpers.echo, 1)
        return info.value
    finally:
        master.destroy()


def write_executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


# -- executable not found / not a Python ---------------------------------------------


def test_executable_not_found_names_the_path(tmp_path):
    missing = str(tmp_path / "no-such-python")
    error = start_fails(TwinMaster(executable=missing, twinterpreter_id="bad-missing"))
    assert missing in str(error)


def test_executable_not_on_path_names_it():
    name = "cpy2py-no-such-interpreter-on-path"
    error = start_fails(TwinMaster(name))
    assert name in str(error)


def test_executable_that_exits_at_once_is_not_a_python():
    error = start_fails(TwinMaster(executable="/bin/true", twinterpreter_id="bad-true"))
    assert "/bin/true" in str(error)


def test_script_that_fails_reports_status_and_stderr(tmp_path):
    fake = write_executable(
        tmp_path / "fake-python",
        "#!/bin/sh\necho 'I am not a Python interpreter' >&2\nexit 1\n",
    )
    error = start_fails(TwinMaster(executable=fake, twinterpreter_id="bad-script"))
    message = str(error)
    assert fake in message
    assert "I am not a Python interpreter" in message
    assert "1" in message


def test_executable_that_never_answers_times_out_and_is_killed(tmp_path):
    fake = write_executable(tmp_path / "silent-python", "#!/bin/sh\nexec sleep 300\n")
    children = procutil.child_pids()
    master = TwinMaster(executable=fake, twinterpreter_id="bad-silent")
    master.startup_timeout = 1.5
    error = start_fails(master, timeout=20)
    assert fake in str(error) or "bad-silent" in str(error)
    assert procutil.wait_until(lambda: procutil.child_pids() <= children, timeout=5), "the silent child was left"


def test_interpreter_without_cpy2py(flavour, twin_exe, tmp_path, monkeypatch):
    venv = tmp_path / "plain-venv"
    subprocess.run(
        [twin_exe, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=procutil.SUBPROCESS_TIMEOUT,
        capture_output=True,
    )
    python = str(venv / "bin" / "python")
    monkeypatch.delenv("PYTHONPATH", raising=False)  # would let the plain venv find cpy2py
    probe = subprocess.run([python, "-c", "import cpy2py"], capture_output=True, timeout=60)
    assert probe.returncode != 0, "the plain venv imports cpy2py; the test is void"
    error = start_fails(TwinMaster(executable=python, twinterpreter_id="no-cpy2py-" + flavour))
    message = str(error)
    assert "cpy2py" in message
    assert "No module named" in message  # the twin's stderr


# -- twin cannot import the function's module ----------------------------------------


def test_twin_cannot_import_the_functions_module(twin, tmp_path, monkeypatch):
    name = "cpy2py_master_only_module"
    (tmp_path / (name + ".py")).write_text("def hello():\n    return 'hello from the master only'\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # after the twin started: not in its sys.path
    module = importlib.import_module(name)
    try:
        assert module.hello() == "hello from the master only"
        with pytest.raises(ImportError) as info:
            twin.execute(module.hello)
        assert name in str(info.value)
        cause = info.value.__cause__
        assert isinstance(cause, errors.RemoteTraceback)
        assert name in str(cause)
        assert twin.execute(twinhelpers.add, 1, 2) == 3  # still usable
    finally:
        sys.modules.pop(name, None)


def test_import_error_inside_the_twin_has_its_traceback(twin):
    with pytest.raises(ImportError) as info:
        twin.execute(importlib.import_module, "cpy2py_no_such_module_anywhere")
    assert "cpy2py_no_such_module_anywhere" in str(info.value)
    assert "import_module" in str(info.value.__cause__)
    assert twin.execute(twinhelpers.add, 2, 3) == 5


# -- objects that do not pickle ---------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: (lambda value: value), threading.Lock, socket.socket],
    ids=["lambda", "lock", "socket"],
)
def test_an_argument_that_does_not_pickle_goes_by_reference_and_comes_back_as_itself(twin, make):
    obj = make()
    try:
        assert twin.execute(twinhelpers.echo, obj) is obj
        assert twin.execute(twinhelpers.echo, [1, {"key": obj}])[1]["key"] is obj
        assert twin.execute(twinhelpers.echo, list(range(5000)) + [obj])[-1] is obj  # one pickle
        assert twin.execute(twinhelpers.signature_probe, 1, c=obj)["c"] is obj
        assert twin.execute(twinhelpers.echo, "usable") == "usable"
    finally:
        if isinstance(obj, socket.socket):
            obj.close()


def test_a_function_to_execute_must_travel_by_value(twin):
    # by reference it would run here, in the master: refused, naming it
    with pytest.raises(errors.UnpicklableError) as info:
        twin.execute(lambda: 1)
    assert "lambda" in str(info.value)
    assert twin.execute(twinhelpers.echo, 1) == 1


def test_a_result_that_does_not_pickle_comes_by_reference(twin):
    lock = twin.execute(twinhelpers.make_lock)
    assert isinstance(lock, RemoteObject)
    assert lock.acquire(False) is True and lock.locked()
    lock.release()
    assert twin.execute(twinhelpers.echo, 2) == 2


# -- twin killed mid-call --------------------------------------------------------------


def test_sigkill_mid_call_fails_every_pending_call_promptly(fresh_twin):
    twin = fresh_twin
    pid = twin.pid
    assert twin.execute(os.getpid) == pid
    outcomes = {}

    def sleeper(n):
        try:
            outcomes[n] = ("returned", twin.execute(twinhelpers.sleep_in_twin, 60), time.monotonic())
        except BaseException as error:
            outcomes[n] = ("raised", error, time.monotonic())

    threads = [threading.Thread(target=sleeper, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    assert procutil.wait_until(lambda: twin.execute(twinhelpers.sleepers) == 4, timeout=20)

    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a pending call hangs"
    for n in range(4):
        kind, error, ended_at = outcomes[n]
        assert kind == "raised", outcomes[n]
        assert isinstance(error, errors.TwinterpeterTerminated), repr(error)
        assert ended_at - killed_at < 1.0, "call %d failed only after %.2f s" % (n, ended_at - killed_at)
        message = str(error)
        assert twin.twinterpreter_id in message
        assert "9" in message or "SIGKILL" in message, message
    assert procutil.wait_until(lambda: not twin.is_alive, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(errors.TwinterpeterUnavailable) as later:
        twin.execute(twinhelpers.echo, 1)
    assert time.monotonic() - started < 1.0
    assert twin.twinterpreter_id in str(later.value)


def test_is_alive_turns_false_promptly_after_a_kill(fresh_twin):
    os.kill(fresh_twin.pid, signal.SIGKILL)
    assert procutil.wait_until(lambda: not fresh_twin.is_alive, timeout=1.0)


# -- stopped twin ----------------------------------------------------------------------


def test_execute_on_a_stopped_twin_fails_at_once(fresh_twin):
    fresh_twin.stop()
    started = time.monotonic()
    with pytest.raises(errors.TwinterpeterUnavailable) as info:
        fresh_twin.execute(twinhelpers.echo, 1)
    assert time.monotonic() - started < 1.0
    assert fresh_twin.twinterpreter_id in str(info.value)


def test_execute_on_a_never_started_twin_fails_at_once(twin_exe):
    master = TwinMaster(executable=twin_exe, twinterpreter_id="never-started")
    try:
        started = time.monotonic()
        with pytest.raises(errors.TwinterpeterUnavailable) as info:
            master.execute(twinhelpers.echo, 1)
        assert time.monotonic() - started < 1.0
        assert "never-started" in str(info.value)
    finally:
        master.destroy()


def test_stop_during_a_call_fails_the_call(fresh_twin):
    outcome = {}

    def sleeper():
        try:
            outcome["result"] = fresh_twin.execute(twinhelpers.sleep_in_twin, 60)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    assert procutil.wait_until(lambda: fresh_twin.execute(twinhelpers.sleepers) == 1, timeout=20)
    fresh_twin.stop(grace=0.5)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), errors.TwinterpeterTerminated), outcome


# -- waiting callers: timeouts and Ctrl-C ------------------------------------------------


def test_call_timeout_raises_and_the_twin_stays_usable(twin):
    started = time.monotonic()
    with pytest.raises(errors.TwinterpreterTimeout) as info:
        _native.call(twin.peer, twinhelpers.sleep_in_twin, (3,), {}, 0.2)
    assert time.monotonic() - started < 2.0
    assert isinstance(info.value, TimeoutError)
    threaded = {}
    thread = threading.Thread(target=lambda: threaded.update(result=twin.execute(twinhelpers.add, 1, 1)))
    thread.start()
    thread.join(timeout=10)
    assert threaded == {"result": 2}


INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import sys
    import threading
    import time

    from cpy2py import TwinMaster


    def nap():
        print("SLEEPING", flush=True)
        time.sleep(60)


    if __name__ == "__main__":
        with TwinMaster(executable=sys.argv[1], twinterpreter_id="interrupted") as twin:
            started = time.monotonic()
            try:
                twin.execute(nap)
            except KeyboardInterrupt:
                print("INTERRUPTED after %.2f s" % (time.monotonic() - started), flush=True)
            # another thread (another chain) still gets answers
            result = []
            thread = threading.Thread(target=lambda: result.append(twin.execute(len, "abc")))
            thread.start()
            thread.join(30)
            print("STILL USABLE", result, flush=True)
            twin.stop(grace=1.0)
        print("DONE", flush=True)
    """
)


def test_ctrl_c_interrupts_a_waiting_call(twin_exe, tmp_path):
    script = tmp_path / "interrupt_script.py"
    script.write_text(INTERRUPT_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), twin_exe],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(tmp_path),
    )
    try:
        assert process.stdout.readline().strip() == "SLEEPING"
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        line = process.stdout.readline().strip()
        assert line.startswith("INTERRUPTED"), line + process.stderr.read()
        assert time.monotonic() - interrupted_at < 2.0
        # Not communicate(): it reads the raw pipe, and readline() above may
        # already hold the next lines in its buffer.
        process.wait(timeout=60)
        out, err = process.stdout.read(), process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0, out + err
    assert out.splitlines() == ["STILL USABLE [3]", "DONE"], out + err
