"""Type stubs of ``cpy2py._native``, the Rust core's Python module.

Private: users import from ``cpy2py``. This file is the contract between the Rust
glue (``cpy2py-python/src``) and the Python package.

The process has one kernel. In a master it starts on first use (``init_master``);
in a twin ``serve`` starts it from the environment its master gave it.

Rust calls back into ``cpy2py._runtime`` for everything that is Python policy
rather than protocol: resolving names, pickling, describing and rebuilding
exceptions (see that module).
"""

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, final

__all__ = [
    "log_level",
    "PROTOCOL_VERSION",
    "MASTER_PEER",
    "TWIN_ENV",
    "SPECIAL_METHODS",
    "init_master",
    "is_initialized",
    "spawn",
    "stdio_twin_env",
    "arena_places_out",
    "ReceivedBuffer",
    "call_async",
    "call_method_async",
    "cancel",
    "time_left",
    "stop",
    "is_alive",
    "is_connected",
    "exit_status",
    "twin_pid",
    "peer_info",
    "call",
    "serve",
    "twin_id",
    "master_id",
    "my_peer",
    "peer_of",
    "instantiate",
    "call_method",
    "get_attr",
    "set_attr",
    "del_attr",
    "proxy_dropped",
    "flush_releases",
    "exported_count",
    "call_host",
]

PROTOCOL_VERSION: int
"""Wire protocol version spoken by this build."""

MASTER_PEER: int
"""Peer number of the master (0)."""

TWIN_ENV: Tuple[str, ...]
"""The environment variables a master sets for the twin it starts (fd, ids)."""

SPECIAL_METHODS: Tuple[str, ...]
"""The special methods a generic proxy can forward, by bit of a reference's mask."""

def log_level() -> Optional[str]:
    """The Python logging level name ``CPY2PY_DEBUG`` asks for (``"DEBUG"`` for a
    value that names no level), or None when it is unset or empty."""

def init_master(master_id: str) -> None:
    """Start this process's kernel as the master, named ``master_id``.

    Idempotent. Raises RuntimeError if this process is already a twin.
    """

def is_initialized() -> bool:
    """Whether this process's kernel runs (as master or twin)."""

def spawn(
    twin_id: str,
    executable: str,
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Optional[str],
    startup_timeout: float,
    stdio: bool = False,
    location: Optional[str] = None,
) -> int:
    """Start ``executable *args`` as a twin and complete the handshake.

    ``env`` is added to the inherited environment. Returns the twin's peer number.
    The twin must call ``serve()`` (``python -m cpy2py.twin`` does).

    With ``stdio``, the child's stdin and stdout carry the stream: the child runs
    the twin elsewhere (``ssh host ... python -m cpy2py.twin``), passing on the
    variables of :func:`stdio_twin_env`; its stderr is relayed to ours with the
    prefix ``[twin_id]``; ``location`` (e.g. ``user@host``) goes into messages.

    Raises ``cpy2py.errors.TwinterpeterUnavailable`` when the executable cannot be
    started (naming the path tried), exits before the handshake (with its exit
    status and the stderr it wrote, e.g. ``No module named cpy2py``; the exception
    then has ``exit_code`` and ``stderr`` attributes), speaks another protocol
    version, or does not answer within ``startup_timeout`` seconds.
    """

@final
class ReceivedBuffer:
    """An out-of-band buffer as it arrived (a view of the frame, or a place in the
    sender's arena), lent to ``pickle.loads`` writable and without a copy."""

    def __len__(self) -> int: ...

def arena_places_out(peer: int) -> int:
    """Buffers this process handed ``peer`` in shared memory that it still holds."""

def stdio_twin_env(twin_id: str) -> Dict[str, str]:
    """The environment variables twin ``twin_id``, started with ``spawn(...,
    stdio=True)``, needs where it runs."""

def stop(peer: int, grace: float) -> str:
    """Ask twin ``peer`` to shut down; kill it after ``grace`` seconds.

    Every call pending on it fails with ``TwinterpeterTerminated``. Waits for the
    process (no zombie) and returns how it ended (``"exited with status 0"``,
    ``"killed by signal 9"``). Stopping a twin that is already gone returns how it
    ended; an unknown peer raises KeyError.
    """

def is_alive(peer: int) -> bool:
    """Whether twin ``peer`` is connected and its process has not ended."""

def is_connected(peer: int) -> bool:
    """Whether twin ``peer`` is connected (no process status check: no system call)."""

def exit_status(peer: int) -> Optional[str]:
    """How twin ``peer`` ended, or None while it runs."""

def twin_pid(peer: int) -> int:
    """Process id of twin ``peer``."""

def peer_info(peer: int) -> Tuple[str, str, str]:
    """``(twin_id, interpreter, version)`` from the peer's handshake."""

def call(
    peer: int, func: Any, args: Tuple[Any, ...], kwargs: Optional[Mapping[str, Any]] = None,
    timeout: Optional[float] = None,
) -> Any:
    """Run ``func(*args, **kwargs)`` in peer ``peer`` and return its result.

    ``func`` travels by reference when it is a module-level function, class or
    builtin (``_runtime.global_name``), otherwise pickled. Arguments and results
    travel by value. Blocks with the GIL released; Ctrl-C raises KeyboardInterrupt
    in the caller (the late reply is discarded). A remote exception is re-raised
    with its own type and the remote traceback as its ``__cause__``
    (``_runtime.rebuild_exception``). A dead or stopped peer raises
    ``TwinterpeterTerminated`` naming the twin and how it ended; ``timeout``
    (seconds) raises ``cpy2py.errors.TwinterpreterTimeout``.

    In a twin, ``peer`` 0 is the master and other numbers are routed through it.
    """

def call_async(
    peer: int, on_done: Callable[[bool, Any], None], func: Any, args: Tuple[Any, ...],
    kwargs: Optional[Mapping[str, Any]] = None,
) -> Tuple[int, int, int]:
    """Send ``func(*args, **kwargs)`` to peer ``peer`` and return at once, with the
    request's handle for :func:`cancel`.

    ``on_done(True, result)`` or ``on_done(False, exception)`` is called later on the
    process's completion thread (``cpy2py-completions``), with what :func:`call`
    would return or raise. The call gets a chain of its own: requests the peer makes
    back while running it run on this process's pool. Errors before the request
    leaves (an argument that cannot be sent, a peer not connected) raise here, and
    ``on_done`` is then never called.
    """

def call_method_async(
    on_done: Callable[[bool, Any], None], proxy: Any, name: str, args: Tuple[Any, ...],
    kwargs: Optional[Mapping[str, Any]] = None,
) -> Tuple[int, int, int]:
    """:func:`call_method` as :func:`call_async` makes calls."""

def cancel(handle: Tuple[int, int, int]) -> None:
    """Cancel the request ``handle`` names (from :func:`call_async`): its peer raises
    ``cpy2py.errors.CallCancelled`` in it if it still runs. Its ``on_done`` is still
    called once, with whatever the peer then replies. Does nothing if it finished or
    the peer is gone."""

def time_left() -> Optional[float]:
    """Seconds left until the deadline of the request this thread serves (what calls
    made from here inherit), or None if it has none or this thread serves none."""

def serve(inherited: Mapping[str, str]) -> None:
    """Run this process as a twin: connect to the master named in ``inherited`` (the
    variables of ``TWIN_ENV`` the master set, taken out of the environment), handshake,
    and serve requests until the master shuts us down or goes away.

    Returns when the twin should exit. Raises RuntimeError if ``inherited`` does not
    describe a master.
    """

def twin_id() -> str:
    """This process's twin id (the master's own id in the master)."""

def master_id() -> str:
    """The master's twin id, as the master announced it."""

def my_peer() -> int:
    """This process's peer number (0 in the master)."""

def peer_of(twin_id: str) -> Optional[int]:
    """Peer number of the connected twin ``twin_id`` (as known here), or None."""

# -- objects that travel by reference (TwinObjects) ---------------------------------

def instantiate(peer: int, cls: type, args: Tuple[Any, ...], kwargs: Optional[Mapping[str, Any]] = None) -> Any:
    """Create ``cls(*args, **kwargs)`` in peer ``peer`` and return its proxy."""

def call_method(proxy: Any, name: str, args: Tuple[Any, ...], kwargs: Optional[Mapping[str, Any]] = None) -> Any:
    """Call method ``name`` of the object behind ``proxy``, in its native interpreter."""

def get_attr(proxy: Any, name: str) -> Any:
    """Read attribute ``name`` of the object behind ``proxy``."""

def set_attr(proxy: Any, name: str, value: Any) -> None:
    """Write attribute ``name`` of the object behind ``proxy``."""

def del_attr(proxy: Any, name: str) -> None:
    """Delete attribute ``name`` of the object behind ``proxy``."""

def proxy_dropped(owner: int, object_id: int, _weakref: Any = None) -> None:
    """Weak-reference callback of a proxy: release the references it stood for
    (batched; sent before the next call, or at once when many are queued)."""

def flush_releases() -> None:
    """Send the batched releases now."""

def exported_count() -> int:
    """Native objects of this process still referenced by other interpreters."""

def call_host(name: str, args: Tuple[Any, ...], kwargs: Optional[Mapping[str, Any]] = None) -> Any:
    """Call function ``name`` served by a Rust host master (``cpy2py.host.call``)."""
