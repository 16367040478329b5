"""Twins on other hosts, over OpenSSH: the ``ssh`` command line and what its
failures mean.

The master runs ``ssh -T -o BatchMode=yes ... -- host exec env VARS... python -m
cpy2py.twin``; the kernel sees only a child whose stdin and stdout carry the frames
(``_native.spawn(..., stdio=True)``). Nothing listens on the remote host and no code
is shipped: cpy2py must be installed for the remote interpreter.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Optional, Sequence

__all__ = ["KEEPALIVE_INTERVAL", "KEEPALIVE_COUNT", "CONNECT_TIMEOUT", "command", "explain", "check_host"]

#: Seconds between ssh's keepalive probes (``ServerAliveInterval``) unless
#: ``ssh_options`` set it.
KEEPALIVE_INTERVAL = 5
#: Unanswered probes after which ssh gives up (``ServerAliveCountMax``).
KEEPALIVE_COUNT = 3
#: Seconds ssh waits for the TCP connection (``ConnectTimeout``).
CONNECT_TIMEOUT = 10


def check_host(host: str) -> str:
    """``host`` if ssh can take it as a destination; never an option."""
    if not isinstance(host, str) or not host or host.startswith("-") or any(c.isspace() for c in host):
        raise ValueError("host must be an ssh destination such as 'user@gpu-box', not %r" % (host,))
    return host


def _remote_path(path: str) -> str:
    """``path`` quoted for the remote shell, with a leading ``~/`` still meaning
    the remote user's home."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def command(
    ssh: str,
    host: str,
    options: Sequence[str],
    executable: str,
    env: Dict[str, str],
) -> List[str]:
    """The argv that runs ``executable -m cpy2py.twin`` on ``host`` with ``env``.

    ssh takes the first value it sees of each option, so ``BatchMode=yes`` (never a
    prompt: a password or passphrase request fails instead of hanging) comes before
    the user's ``options``, and the keepalive and connect defaults after them (the
    user's win).
    """
    remote = "exec env %s %s -m cpy2py.twin" % (
        " ".join(shlex.quote("%s=%s" % item) for item in sorted(env.items())),
        _remote_path(executable),
    )
    return [
        ssh,
        "-T",
        "-o",
        "BatchMode=yes",
        *options,
        "-o",
        "ServerAliveInterval=%d" % KEEPALIVE_INTERVAL,
        "-o",
        "ServerAliveCountMax=%d" % KEEPALIVE_COUNT,
        "-o",
        "ConnectTimeout=%d" % CONNECT_TIMEOUT,
        "--",
        check_host(host),
        remote,
    ]


def explain(error: BaseException, host: str, executable: str, version: str) -> str:
    """What a failed start over ssh means, with what ssh or the remote said."""
    code: Optional[int] = getattr(error, "exit_code", None)
    stderr: str = getattr(error, "stderr", None) or ""
    if code == 255:
        headline = "ssh to %s failed (exit status 255): %s" % (host, _last_lines(stderr) or "no message")
    elif code in (126, 127):
        headline = "no interpreter %r can run on %s (the remote shell: exit status %d, %s)" % (
            executable,
            host,
            code,
            _last_lines(stderr) or "no message",
        )
    elif "No module named cpy2py" in stderr or "No module named 'cpy2py" in stderr:
        headline = "cpy2py is not installed for %s on %s: install cpy2py %s there" % (executable, host, version)
    else:
        headline = "twin on %s (%s) failed to start" % (host, executable)
    return "%s\n%s" % (headline, error)


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:])
