"""The throw-away OpenSSH server of ``sshd`` works, checked with plain ``ssh`` (no
cpy2py): it lets its user key in, and only that key, clients check its host key
without prompting, and ``stop()`` leaves no process of it behind.

Without sshd, ssh or ssh-keygen these tests skip, unless ``CI=true``: then they fail.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

import procutil
import sshd

#: bound for one ssh client run (seconds); a refusal must come well within it
SSH_TIMEOUT = 30


def require_sshd():
    """Skip (fail in CI) without sshd, ssh and ssh-keygen."""
    ok, reason = sshd.available()
    if not ok:
        if procutil.in_ci():
            pytest.fail(reason + " (CI=true: this is an error, not a skip)")
        pytest.skip(reason)


@pytest.fixture
def server(tmp_path):
    """A started ``sshd.Sshd`` in ``tmp_path``."""
    require_sshd()
    with sshd.Sshd(tmp_path / "sshd") as running:
        yield running


def run_ssh(argv, timeout=SSH_TIMEOUT):
    """Run an ssh client (stdin closed: nothing to answer a prompt with)."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def other_key(tmp_path):
    """A new key pair in ``tmp_path`` that the server does not know; its private key."""
    path = str(tmp_path / "other_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path],
                   check=True, capture_output=True, timeout=SSH_TIMEOUT)
    return path


def commands(pids):
    """The command names (``comm``) of the processes ``pids`` still there."""
    names = []
    for pid in pids:
        try:
            with open("/proc/%d/comm" % pid) as comm:
                names.append(comm.read().strip())
        except OSError:  # ended meanwhile
            pass
    return names


def test_runs_a_command_with_the_user_key(server):
    result = run_ssh(server.ssh_command("echo", "hello"))
    assert (result.returncode, result.stdout) == (0, "hello\n"), (result, server.log())


def test_refuses_a_key_it_does_not_know_without_prompting(server, tmp_path):
    started = time.monotonic()
    result = run_ssh(server.ssh_command("echo", "hello", key=other_key(tmp_path)))
    elapsed = time.monotonic() - started
    assert result.returncode == 255, (result, server.log())
    assert "Permission denied" in result.stderr
    assert result.stdout == ""
    assert elapsed < 10, "refused only after %.1f s" % elapsed


def test_client_refuses_a_host_key_it_does_not_expect(server, tmp_path):
    wrong_known_hosts = tmp_path / "wrong_known_hosts"
    with open(other_key(tmp_path) + ".pub") as public:
        key_type, key = public.read().split()[:2]
    wrong_known_hosts.write_text("[127.0.0.1]:%d %s %s\n" % (server.port, key_type, key))
    result = run_ssh(server.ssh_command("echo", "hello",
                                        known_hosts=str(wrong_known_hosts)))
    assert result.returncode == 255, (result, server.log())
    assert "Host key verification failed" in result.stderr
    assert result.stdout == ""


def test_stop_leaves_no_process_of_the_server(server):
    # a connection that would outlive the listener, and one of its sshd processes
    # stopped (as a test of a dropped network does)
    client = subprocess.Popen(server.ssh_command("sleep", "300"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # the remote command is up, under the listener and the session's sshd
        assert procutil.wait_until(lambda: "sleep" in commands(server.processes()),
                                   SSH_TIMEOUT), server.log()
        sessions = server.session_pids()
        assert sessions
        os.kill(sessions[0], signal.SIGSTOP)
        processes = server.processes()

        server.stop()
        assert sshd.alive(processes) == {}
        assert server.pid is None
        assert server.processes() == {}
        server.stop()  # idempotent
        # the client sees its connection end
        assert client.wait(timeout=SSH_TIMEOUT) == 255
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=SSH_TIMEOUT)


def test_start_takes_another_port_when_the_first_is_taken(tmp_path, monkeypatch):
    require_sshd()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        picks = iter([taken_port])
        free_port = sshd._free_port
        monkeypatch.setattr(sshd, "_free_port", lambda: next(picks, None) or free_port())
        with sshd.Sshd(tmp_path / "sshd") as server:
            assert server.port != taken_port
            result = run_ssh(server.ssh_command("echo", "hello"))
            assert (result.returncode, result.stdout) == (0, "hello\n"), (
                result, server.log())
