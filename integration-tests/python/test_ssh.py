"""Twins on another host over OpenSSH (issue #19), against a real sshd on 127.0.0.1
with keys made here (``sshd.Sshd``): calls, objects, callbacks, threads, by-reference
values and twin-to-twin calls through a PyPy and a CPython twin behind ssh; lost
connections (remote twin killed, ssh client killed, the server frozen as if the
network dropped) failing pending calls within the keepalive bound; stop leaving no
process; and every way a start can fail, each with its own message.

Without sshd these tests skip, unless ``CI=true``: then they fail.
"""

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import procutil
import refhelpers
import sshd
import sshhelpers
import twinhelpers
from cpy2py import TwinMaster, _ssh, errors

#: keepalive of the test twins: a dead connection is noticed within
#: INTERVAL * (COUNT + 1) seconds
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 2
BOUND = KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 1)
#: scheduling slack on a loaded 2-CPU machine, on top of BOUND
SLACK = 7.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ok, reason = sshd.available()
    if not ok:
        if procutil.in_ci():
            pytest.fail(reason + " (CI=true: this is an error, not a skip)")
        pytest.skip(reason)
    with sshd.Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


def keepalive_options(server, **replace):
    options = server.ssh_options(**replace)
    # ssh's default LogLevel (INFO): it says why it gave up on a connection
    at = options.index("LogLevel=ERROR")
    del options[at - 1 : at + 1]
    return options + [
        "-o",
        "ServerAliveInterval=%d" % KEEPALIVE_INTERVAL,
        "-o",
        "ServerAliveCountMax=%d" % KEEPALIVE_COUNT,
    ]


@pytest.fixture(scope="module")
def ssh_twin(flavour, twin_exe, server):
    """A twin of this flavour behind the loopback sshd, shared by a module's tests."""
    master = TwinMaster(
        executable=twin_exe,
        twinterpreter_id=sshhelpers.SSH_IDS[flavour],
        host=server.host,
        ssh_options=keepalive_options(server),
    )
    master.start()
    yield master
    master.destroy()


@pytest.fixture
def fresh_ssh_twin(flavour, twin_exe, server):
    """An ssh twin of its own for one test (failures), destroyed after."""
    master = TwinMaster(
        executable=twin_exe,
        twinterpreter_id="fresh-ssh-" + flavour,
        host=server.host,
        ssh_options=keepalive_options(server),
    )
    master.start()
    yield master
    master.destroy()


def unstarted(twin_exe, server, twin_id="bad-ssh", **kwargs):
    """A TwinMaster over ssh, not started, with ``kwargs`` overriding its arguments."""
    arguments = dict(
        executable=twin_exe,
        twinterpreter_id=twin_id,
        host=server.host,
        ssh_options=server.ssh_options(),
    )
    arguments.update(kwargs)
    return TwinMaster(**arguments)


def gone(pid):
    """Whether process ``pid`` has ended (a zombie counts: it runs nothing)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def comm_of(pid):
    with open("/proc/%d/comm" % pid) as comm:
        return comm.read().strip()


def session_of(server, remote_pid):
    """The sshd processes serving the connection of the remote process ``remote_pid``
    (its sshd ancestors below the listener)."""
    found = []
    pid = ppid_of(remote_pid)
    while pid > 1 and pid != server.pid:
        if comm_of(pid) == "sshd":
            found.append(pid)
        pid = ppid_of(pid)
    assert found, "no sshd process above the remote twin %d" % remote_pid
    return found


def ssh_client_of(twin_id):
    """Process id of the local ssh client carrying twin ``twin_id``."""
    marker = b"CPY2PY_TWIN_ID=" + twin_id.encode()
    for pid in procutil.child_pids():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
                if marker in cmdline.read():
                    return pid
        except OSError:
            continue
    raise AssertionError("no ssh client of %r among %r" % (twin_id, procutil.child_pids()))


def fails_within(future, bound):
    """The exception ``future`` fails with, and the seconds it took from now."""
    started = time.monotonic()
    with pytest.raises(errors.TwinterpeterTerminated) as failure:
        future.result(timeout=bound)
    return failure.value, time.monotonic() - started


# -- it works like a local twin ------------------------------------------------------


def test_calls_run_in_the_remote_twin_not_in_the_ssh_client(ssh_twin, flavour):
    twin_id, pid, ppid, implementation = ssh_twin.execute(sshhelpers.where)
    assert twin_id == sshhelpers.SSH_IDS[flavour]
    assert implementation == {"cpython": "cpython", "pypy": "pypy"}[flavour]
    assert pid == ssh_twin.pid != os.getpid()
    assert comm_of(ppid) == "sshd", "the twin runs under sshd, not under this process"
    assert ssh_twin.execute(twinhelpers.add, 2, 3) == 5
    data = os.urandom(3 << 20)
    assert ssh_twin.execute(twinhelpers.digest, data) == twinhelpers.digest(data)
    assert ssh_twin.execute(twinhelpers.echo, data) == data


def test_objects_of_a_class_naming_the_remote_twin_live_there(ssh_twin, flavour):
    counter = sshhelpers.COUNTERS[flavour](3)
    assert counter.add(2) == 5
    assert len(counter) == 5
    counter.count = 10
    assert counter.add() == 11
    assert counter.where()[1] == ssh_twin.pid


def test_callbacks_to_the_master_nest_20_deep(ssh_twin, flavour):
    twin_id = sshhelpers.SSH_IDS[flavour]
    trail = sshhelpers.bounce_master(twin_id, 20, [])
    assert len(trail) == 20
    assert set(trail[1::2]) == {twin_id}
    assert trail[0::2] == [trail[0]] * 10


def test_four_threads_share_the_connection(ssh_twin):
    def work(thread_no):
        return [ssh_twin.execute(twinhelpers.tagged, thread_no, call_no, "x" * call_no) for call_no in range(150)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for thread_no, result in enumerate(results):
        assert result == [(thread_no, call_no, "x" * call_no, ssh_twin.twinterpreter_id) for call_no in range(150)]


def test_values_that_cannot_be_copied_cross_by_reference(ssh_twin):
    lock = ssh_twin.execute(refhelpers.make_lock)
    with lock:
        assert lock.locked()
    assert not lock.locked()
    assert list(ssh_twin.execute(refhelpers.counting, 1000)) == list(range(1000))


def test_twins_call_each_other_through_the_master(ssh_twin, twin, flavour):
    # remote twin -> master -> local twin
    assert ssh_twin.execute(twinhelpers.echo_via, flavour, [1, "two"]) == [1, "two"]
    # local twin -> master -> remote twin
    twin_id = sshhelpers.SSH_IDS[flavour]
    bouncer = sshhelpers.BOUNCERS[twin_id]
    assert twin.execute(bouncer, twin_id, 1, []) == [twin_id]


def test_a_stray_print_reaches_our_stderr_prefixed_and_leaves_the_stream_alone(ssh_twin, capfd):
    marker = "stray print %d" % os.getpid()
    assert ssh_twin.execute(sshhelpers.print_to_stdout, marker) == len(marker)
    assert ssh_twin.execute(sshhelpers.read_stdin) == ""
    assert ssh_twin.execute(twinhelpers.add, 1, 1) == 2
    seen = []

    def printed():
        seen.append(capfd.readouterr().err)
        return "[%s] %s" % (ssh_twin.twinterpreter_id, marker) in "".join(seen)

    assert procutil.wait_until(printed, timeout=10, interval=0.05), "".join(seen)


# -- lost connections ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_killing_the_remote_twin_fails_pending_calls_at_once(fresh_ssh_twin, server):
    remote = fresh_ssh_twin.pid
    pending = fresh_ssh_twin.submit(twinhelpers.sleep_in_twin, 60)
    assert procutil.wait_until(lambda: fresh_ssh_twin.execute(twinhelpers.sleepers) == 1, timeout=10)
    os.kill(remote, signal.SIGKILL)
    failure, took = fails_within(pending, BOUND + SLACK)
    assert fresh_ssh_twin.twinterpreter_id in str(failure)
    assert server.host in str(failure), str(failure)
    assert not fresh_ssh_twin.is_alive


@pytest.mark.timeout(60)
def test_killing_the_ssh_client_fails_pending_calls_and_ends_the_remote_twin(fresh_ssh_twin, server):
    remote = fresh_ssh_twin.pid
    client = ssh_client_of(fresh_ssh_twin.twinterpreter_id)
    pending = fresh_ssh_twin.submit(twinhelpers.sleep_in_twin, 60)
    assert procutil.wait_until(lambda: fresh_ssh_twin.execute(twinhelpers.sleepers) == 1, timeout=10)
    os.kill(client, signal.SIGKILL)
    failure, took = fails_within(pending, BOUND + SLACK)
    assert "killed by signal 9" in str(failure), str(failure)
    # its stdin closed with the connection: no orphan on the remote host
    assert procutil.wait_until(lambda: gone(remote), timeout=10), "remote twin %d still runs" % remote


@pytest.mark.timeout(90)
def test_a_connection_that_stops_answering_fails_pending_calls_within_the_keepalive_bound(fresh_ssh_twin, server):
    remote = fresh_ssh_twin.pid
    session = session_of(server, remote)
    pending = fresh_ssh_twin.submit(twinhelpers.sleep_in_twin, 60)
    assert procutil.wait_until(lambda: fresh_ssh_twin.execute(twinhelpers.sleepers) == 1, timeout=10)
    # The server side of this one connection freezes: no byte and no keepalive
    # answer comes back, as when a network drops or the remote host hangs.
    for pid in session:
        os.kill(pid, signal.SIGSTOP)
    try:
        failure, took = fails_within(pending, BOUND + SLACK)
    finally:
        for pid in session:
            os.kill(pid, signal.SIGCONT)
    message = str(failure)
    assert "not responding" in message and server.host in message, message
    assert took <= BOUND + SLACK
    # once the server runs again it finds the client gone and closes the twin's stdin
    assert procutil.wait_until(lambda: gone(remote), timeout=20), "remote twin %d still runs" % remote


@pytest.mark.timeout(60)
def test_stop_leaves_no_process_on_either_side(flavour, twin_exe, server):
    master = unstarted(twin_exe, server, twin_id="stop-ssh-" + flavour)
    try:
        master.start()
        remote = master.pid
        client = ssh_client_of(master.twinterpreter_id)
        session = session_of(server, remote)
        assert master.execute(twinhelpers.add, 1, 2) == 3
        master.stop()
        assert client not in procutil.child_pids(), "the ssh client was not reaped"
        assert procutil.wait_until(lambda: gone(remote), timeout=10), "remote twin %d still runs" % remote
        assert procutil.wait_until(lambda: all(gone(pid) for pid in session), timeout=10)
    finally:
        master.destroy()


#: A master of its own: starts an ssh twin, prints its pid, survives a Ctrl-C (SIGINT
#: to its process group) with the twin still usable, then waits to be killed.
INTERRUPTED_MASTER = """
import json, sys, time
sys.path[:0] = [sys.argv[1]]
from cpy2py import TwinMaster
import twinhelpers
if __name__ == "__main__":
    twin = TwinMaster(executable=sys.argv[2], twinterpreter_id="orphan-ssh", host=sys.argv[3],
                      ssh_options=json.loads(sys.argv[4]))
    twin.start()
    try:
        print(twin.pid, flush=True)  # the signal may come before the print returns
        time.sleep(60)
    except KeyboardInterrupt:
        print("interrupted", twin.execute(twinhelpers.add, 1, 2), flush=True)
    time.sleep(60)
"""


def processes_with(marker):
    """Pids of the processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as cmdline:
                    if marker in cmdline.read() and not gone(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.timeout(90)
def test_ctrl_c_in_the_master_spares_the_ssh_twin_and_a_killed_master_leaves_no_orphan(twin_exe, server):
    import json

    master = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_MASTER, os.path.dirname(os.path.abspath(__file__)), twin_exe,
         server.host, json.dumps(server.ssh_options())],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        remote = int(master.stdout.readline())
        # Ctrl-C at a terminal: SIGINT to the master's whole process group
        os.killpg(master.pid, signal.SIGINT)
        assert master.stdout.readline().split() == ["interrupted", "3"]
        assert processes_with(b"CPY2PY_TWIN_ID=orphan-ssh"), "the ssh client is gone"
    finally:
        master.kill()
        master.wait(timeout=30)
        master.stdout.close()
    # the ssh client dies with the master; the remote twin's stdin then closes
    assert procutil.wait_until(lambda: not processes_with(b"CPY2PY_TWIN_ID=orphan-ssh"), timeout=10)
    assert procutil.wait_until(lambda: gone(remote), timeout=10), "remote twin %d still runs" % remote


# -- bad input -------------------------------------------------------------------------


def start_fails(master):
    """The message of the TwinterpeterUnavailable ``master.start()`` raises; forgets
    the master."""
    try:
        with pytest.raises(errors.TwinterpeterUnavailable) as failure:
            master.start()
    finally:
        master.destroy()
    return str(failure.value)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(60)
def test_an_unreachable_host_fails_the_start_with_ssh_s_own_words(twin_exe, server):
    options = server.ssh_options()
    options[options.index("-p") + 1] = str(free_port())  # nobody listens there
    master = unstarted(twin_exe, server, ssh_options=options)
    started = time.monotonic()
    message = start_fails(master)
    assert "exit status 255" in message and "Connection refused" in message, message
    assert server.host in message
    assert time.monotonic() - started < _ssh.CONNECT_TIMEOUT


@pytest.mark.timeout(60)
def test_a_refused_key_fails_the_start_without_a_prompt(twin_exe, server, tmp_path):
    key = str(tmp_path / "unknown_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True, timeout=30)
    master = unstarted(twin_exe, server, ssh_options=server.ssh_options(key=key))
    message = start_fails(master)
    assert "exit status 255" in message and "Permission denied" in message, message


@pytest.mark.timeout(60)
def test_a_missing_interpreter_is_named_with_the_host(server):
    master = unstarted("/nonexistent/bin/python3", server)
    message = start_fails(master)
    assert "no interpreter '/nonexistent/bin/python3'" in message and server.host in message, message
    assert "127" in message


@pytest.mark.timeout(120)
def test_an_interpreter_without_cpy2py_is_named(server, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60)
    python = str(bare / "bin" / "python")
    master = unstarted(python, server)
    message = start_fails(master)
    assert "cpy2py is not installed for %s on %s" % (python, server.host) in message, message


def fake_interpreter(tmp_path, body):
    """An executable shell script standing in for the remote interpreter."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.timeout(60)
def test_another_cpy2py_version_on_the_remote_is_named_with_both_versions(server, tmp_path):
    from cpy2py import __version__, _native

    # what an older cpy2py greets with; then it waits for the master
    script = fake_interpreter(tmp_path, "echo 'cpy2py-stdio protocol=999 version=0.0.1'\nexec cat >/dev/null\n")
    master = unstarted(script, server)
    message = start_fails(master)
    assert "cpy2py 0.0.1 (protocol 999)" in message, message
    assert "cpy2py %s (protocol %d)" % (__version__, _native.PROTOCOL_VERSION) in message, message
    assert server.host in message


@pytest.mark.timeout(60)
def test_a_shell_that_prints_before_the_twin_starts_is_tolerated(twin_exe, server, tmp_path, capfd):
    script = fake_interpreter(tmp_path, 'echo "Welcome to the test host"\nexec %s "$@"\n' % twin_exe)
    master = unstarted(script, server, twin_id="chatty-ssh")
    try:
        master.start()
        assert master.execute(twinhelpers.add, 2, 2) == 4
    finally:
        master.destroy()
    assert "Welcome to the test host" in capfd.readouterr().err


def test_a_host_that_looks_like_an_option_is_refused():
    with pytest.raises(ValueError, match="ssh destination"):
        TwinMaster(executable=sys.executable, twinterpreter_id="evil-ssh", host="-oProxyCommand=x")
