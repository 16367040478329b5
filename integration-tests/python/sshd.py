"""A throw-away OpenSSH server on 127.0.0.1 for end-to-end tests over ssh.

``Sshd(directory)`` makes its own host and user keys in ``directory``, runs
``/usr/sbin/sshd`` in the foreground on a free loopback port with a configuration
that accepts only that user key for the current user, and writes a ``known_hosts``
so that clients check the host key instead of prompting. ``ssh_command()`` gives a
client command line that reads no user configuration and never asks anything.

Nothing here needs root. Run as root, sshd needs its privilege separation directory
(``/run/sshd``), which is made if missing; run as another user, sshd can only log in
that user, which is the user the helper connects as anyway.

The module does not import pytest; the tests decide what a missing sshd means
(``available()``).
"""

import collections
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time

#: sshd must be started by absolute path: it re-executes itself for each connection
SSHD = "/usr/sbin/sshd"
#: where a root sshd wants its (empty) privilege separation chroot
PRIVSEP_DIR = "/run/sshd"

#: seconds for sshd to say it listens
START_TIMEOUT = 10.0
#: seconds for the server's processes to end on SIGTERM before they get SIGKILL
STOP_TIMEOUT = 5.0
#: ports tried when the one picked is taken meanwhile by someone else
PORT_ATTEMPTS = 5
#: lines of sshd's log kept for ``log()``
LOG_LINES = 2000


def available():
    """``(True, "")`` if sshd, ssh and ssh-keygen are installed, else ``(False,
    reason)``."""
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if missing:
        return False, "not installed: %s (package openssh-server / openssh-client)" % (
            ", ".join(missing))
    return True, ""


def _free_port():
    """A loopback port nobody listens on right now (it may be taken before sshd binds
    it: ``start()`` retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path):
    """A new passphrase-less ed25519 key pair at ``path`` and ``path.pub``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cpy2py-test",
                    "-f", path], check=True, capture_output=True, timeout=30)


def _public_key(path):
    """``type base64`` of the public key file ``path`` (without its comment)."""
    with open(path) as file:
        return " ".join(file.read().split()[:2])


# -- processes, through /proc ---------------------------------------------------------
#
# A process is named by (pid, start time) so that a pid reused after the process ended
# is not mistaken for it. Zombies count as ended: in a container nobody may reap them.

def _process_table():
    """``pid -> (ppid, start time, state, comm)`` of the processes alive now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                text = stat.read()
        except OSError:  # ended meanwhile
            continue
        # comm is in parentheses and may itself contain ") "
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        state, ppid, start = fields[0], int(fields[1]), int(fields[19])
        if state in "ZXx":
            continue
        table[int(entry)] = (ppid, start, state, comm)
    return table


def _descendants(table, roots):
    """``pid -> start time`` of the processes in ``table`` descended from the pids
    ``roots`` (not including them)."""
    children = collections.defaultdict(list)
    for pid, (ppid, _, _, _) in table.items():
        children[ppid].append(pid)
    found = {}
    pending = list(roots)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found[child] = table[child][1]
                pending.append(child)
    return found


def _alive(table, pid, start):
    """Whether the process ``(pid, start)`` is in ``table``."""
    return pid in table and table[pid][1] == start


def _signal(processes, signum):
    """Send ``signum`` to those of ``processes`` (``pid -> start``) still alive."""
    table = _process_table()
    for pid, start in processes.items():
        if _alive(table, pid, start):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def alive(processes):
    """Those of ``processes`` (``pid -> start time``) that are still alive."""
    table = _process_table()
    return {pid: start for pid, start in processes.items() if _alive(table, pid, start)}


def _wait_gone(processes, timeout):
    """Wait until none of ``processes`` is alive or ``timeout`` seconds pass; those
    left."""
    deadline = time.monotonic() + timeout
    while True:
        left = alive(processes)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def _wait_stopped(processes, timeout):
    """Wait until each of ``processes`` is stopped or gone, or ``timeout`` seconds
    pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = _process_table()
        if all(table[pid][2] in "Tt" for pid, start in processes.items()
               if _alive(table, pid, start)):
            return
        time.sleep(0.005)


class Sshd:
    """An OpenSSH server on 127.0.0.1 that lets the current user in with a key of its
    own. A context manager; or ``start()`` and ``stop()``.

    Files in ``directory``: ``host_key``, ``user_key`` (and ``.pub``),
    ``authorized_keys``, ``known_hosts``, ``sshd_config``.
    """

    def __init__(self, directory):
        self.directory = os.path.abspath(str(directory))
        self.host_key = os.path.join(self.directory, "host_key")
        self.user_key = os.path.join(self.directory, "user_key")
        self.authorized_keys = os.path.join(self.directory, "authorized_keys")
        self.known_hosts = os.path.join(self.directory, "known_hosts")
        self.config = os.path.join(self.directory, "sshd_config")
        # the account of the effective uid, which is who a non-root sshd can log in
        # (getpass.getuser() would believe $USER / $LOGNAME)
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = None
        self._process = None
        self._start_time = None  # of the listener, in /proc terms
        self._log = collections.deque(maxlen=LOG_LINES)
        self._log_changed = threading.Condition()
        self._log_ended = False
        self._drain = None

    @property
    def host(self):
        """``user@127.0.0.1``, the destination for ssh."""
        return "%s@127.0.0.1" % self.user

    @property
    def pid(self):
        """Process id of the listening sshd, or None when not running."""
        return self._process.pid if self._process is not None else None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # -- starting -------------------------------------------------------------------

    def start(self):
        """Make the keys and files and start sshd; return once it listens.

        Raises RuntimeError (with sshd's output) if it does not listen within
        START_TIMEOUT seconds.
        """
        if self._process is not None:
            raise RuntimeError("sshd is already started")
        os.makedirs(self.directory, exist_ok=True)
        for key in (self.host_key, self.user_key):
            if not os.path.exists(key):
                _keygen(key)
        with open(self.authorized_keys, "w") as file:
            file.write(_public_key(self.user_key + ".pub") + "\n")
        if os.geteuid() == 0 and not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        for _ in range(PORT_ATTEMPTS):
            port = _free_port()
            self._write_config(port)
            if self._launch(port):
                self.port = port
                host_key = _public_key(self.host_key + ".pub")
                with open(self.known_hosts, "w") as file:
                    file.write("[127.0.0.1]:%d %s\n" % (port, host_key))
                return self
        raise RuntimeError("sshd found no free port in %d attempts:\n%s"
                           % (PORT_ATTEMPTS, "\n".join(self._log)))

    def _write_config(self, port):
        # Only what the tests need, nothing from /etc/ssh. StrictModes no: pytest's
        # tmp_path may be group-writable. UsePAM no: PAM would want a real login
        # (and a password for root). No AcceptEnv: the client's environment stays out.
        lines = [
            "ListenAddress 127.0.0.1",
            "Port %d" % port,
            "HostKey %s" % self.host_key,
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PidFile none",
            "LogLevel INFO",
        ]
        with open(self.config, "w") as file:
            file.write("\n".join(lines) + "\n")

    def _launch(self, port):
        """Start sshd on ``port``; True once it listens, False if the port was taken.
        Raises RuntimeError for any other failure."""
        self._log.clear()
        self._log_ended = False
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", self.config],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)  # terminal signals (Ctrl-C) are pytest's alone
        self._drain = threading.Thread(target=self._read_log, args=(process.stderr,),
                                       name="sshd-log-%d" % process.pid, daemon=True)
        self._drain.start()

        announcement = "Server listening on 127.0.0.1 port %d." % port

        def listening():
            return announcement in self._log

        with self._log_changed:
            ready = self._log_changed.wait_for(
                lambda: self._log_ended or listening(), timeout=START_TIMEOUT)
            ready = ready and listening()
        if ready:
            self._process = process
            self._start_time = _process_table().get(process.pid, (None, None))[1]
            return True
        # sshd ended (its stderr closed) or did not say it listens in time
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        self._drain.join(timeout=STOP_TIMEOUT)
        log = "\n".join(self._log)
        if "Address already in use" in log:
            return False
        raise RuntimeError("sshd did not start listening on 127.0.0.1 port %d "
                           "(exit status %s):\n%s" % (port, process.returncode, log))

    def _read_log(self, stream):
        """Drain sshd's stderr (that of all its processes) into the bounded log, so
        sshd never blocks on a full pipe."""
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._log_changed:
                    self._log.append(line)
                    self._log_changed.notify_all()
        finally:
            stream.close()
            with self._log_changed:
                self._log_ended = True
                self._log_changed.notify_all()

    def log(self):
        """sshd's log lines so far (the last LOG_LINES), for diagnostics."""
        with self._log_changed:
            return list(self._log)

    # -- clients --------------------------------------------------------------------

    def ssh_options(self, key=None, known_hosts=None):
        """ssh client options to reach this server: its port, the user key only, the
        host key checked against ``known_hosts`` (no prompt), and no ssh_config.
        ``key`` and ``known_hosts`` replace the right ones (for tests of failures)."""
        return [
            "-F", "/dev/null",
            "-p", str(self.port),
            "-i", key or self.user_key,
            "-o", "IdentitiesOnly=yes",
            "-o", "UserKnownHostsFile=%s" % (known_hosts or self.known_hosts),
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR",
        ]

    def ssh_command(self, *remote, key=None, known_hosts=None):
        """argv of an ssh client running ``remote`` (words of a shell command line)
        on this server, without a tty and never asking anything (BatchMode)."""
        return (["ssh", "-T", "-o", "BatchMode=yes"]
                + self.ssh_options(key=key, known_hosts=known_hosts)
                + ["--", self.host] + list(remote))

    # -- processes ------------------------------------------------------------------

    def processes(self):
        """``pid -> start time`` of the listener and every process descended from it
        (the sshd processes of each connection and what they run); empty when not
        running. The start time tells a process from a later one given its pid: see
        ``alive()``."""
        if self._process is None:
            return {}
        table = _process_table()
        found = _descendants(table, [self._process.pid])
        found[self._process.pid] = self._start_time
        return found

    def session_pids(self):
        """Sorted pids of the sshd processes serving connections (descendants of the
        listener; per connection, the privileged monitor and its network child).
        SIGSTOP them all to make the connections look dropped."""
        if self._process is None:
            return []
        table = _process_table()
        return sorted(pid for pid in _descendants(table, [self._process.pid])
                      if table[pid][3] == "sshd")

    # -- stopping -------------------------------------------------------------------

    def stop(self):
        """End the listener and every process descended from it; idempotent.

        sshd's listener leaves running connections alone when it ends, and once it
        has ended they can no longer be found by parentage: so the whole tree is
        first frozen (SIGSTOP, repeated until no new process appears), then sent
        SIGTERM (and SIGCONT, to act on it), then SIGKILL if still there after
        STOP_TIMEOUT seconds.
        """
        process, self._process = self._process, None
        if process is None:
            return
        try:
            tree = self._freeze(process.pid)
            _signal(tree, signal.SIGTERM)
            _signal(tree, signal.SIGCONT)
            left = _wait_gone(tree, STOP_TIMEOUT)
            if left:
                _signal(left, signal.SIGKILL)
                _wait_gone(left, STOP_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            self._drain.join(timeout=STOP_TIMEOUT)

    def _freeze(self, pid):
        """SIGSTOP the listener ``pid`` and all its descendants; ``pid -> start
        time`` of them all."""
        tree = {pid: self._start_time}
        for _ in range(100):  # bounded: a stopped process forks no more
            _signal(tree, signal.SIGSTOP)
            _wait_stopped(tree, STOP_TIMEOUT)  # the signal is acted on asynchronously
            found = _descendants(_process_table(), list(tree))
            new = {child: start for child, start in found.items() if child not in tree}
            if not new:
                return tree
            tree.update(new)
        return tree
