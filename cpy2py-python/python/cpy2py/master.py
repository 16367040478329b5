"""The master's handle on a twinterpreter: :class:`TwinMaster`.

There is one :class:`TwinMaster` per twin id in a process (``TwinMaster('pypy3') is
TwinMaster('pypy3')``), as in the original cpy2py. It starts the twin (``executable -m
cpy2py.twin``, connected to this process's kernel), runs calls in it and stops it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import logging
import os
import shutil
import sys
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar

from . import _futures, _native, _routing, _runtime, _ssh, errors, kernel_state

__all__ = ["TwinMaster"]

_log = logging.getLogger("__cpy2py__.master")

#: Environment variable carrying a twin's configuration (JSON) to ``cpy2py.twin``.
CONFIG_ENV = "CPY2PY_TWIN_CONFIG"
#: Version of the configuration's layout.
CONFIG_VERSION = 2
#: Environment variable that, when set, forbids starting twins implicitly.
NOAUTO_ENV = "CPY2PY_NOAUTO"
#: Grace period for twins still running when the master exits.
ATEXIT_GRACE = 2.0

_native_call = _native.call
_native_call_async = _native.call_async
_T = TypeVar("_T")

_master_lock = threading.Lock()
_master_ready = False


def _ensure_master() -> None:
    """Start this process's kernel as the master (once)."""
    global _master_ready
    if _master_ready:
        return
    with _master_lock:
        if _master_ready:
            return
        if kernel_state.is_twinterpreter():
            raise RuntimeError(
                "twinterpreter %r cannot start twins itself; only the master %r can"
                % (kernel_state.TWIN_ID, kernel_state.MASTER_ID)
            )
        _runtime.become_master()
        _native.init_master(kernel_state.MASTER_ID)
        atexit.register(_stop_all)
        _master_ready = True
        _log.debug("master %r initialized (pid %d)", kernel_state.MASTER_ID, os.getpid())


def _stop_all(grace: float = ATEXIT_GRACE) -> None:
    """Stop every running twin (at exit of the master)."""
    with TwinMaster._store_lock:
        masters = list(TwinMaster._store.values())
    for master in masters:
        if master._peer is not None:
            try:
                master.stop(grace)
            except Exception:  # at exit, keep stopping the others
                _log.debug("stopping %r at exit failed", master.twinterpreter_id, exc_info=True)


def _resolve_ids(executable: Optional[str], twinterpreter_id: Optional[str]) -> "tuple[str, str]":
    if executable is None and twinterpreter_id is None:
        raise TypeError("TwinMaster needs an executable or a twinterpreter_id (or both)")
    if executable is not None:
        executable = os.fspath(executable)
        if not isinstance(executable, str):
            raise TypeError("executable must be a str path, not %r" % (executable,))
    if twinterpreter_id is None:
        assert executable is not None
        twinterpreter_id = os.path.basename(executable)
    elif not isinstance(twinterpreter_id, str):
        raise TypeError("twinterpreter_id must be a str, not %r" % (twinterpreter_id,))
    if executable is None:
        executable = twinterpreter_id
    if not twinterpreter_id:
        raise ValueError("twinterpreter_id must not be empty (executable %r)" % (executable,))
    return twinterpreter_id, executable


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    """``timeout`` as float seconds (None: no timeout); rejects non-positive values."""
    if timeout is None:
        return None
    seconds = float(timeout)
    if not seconds > 0:
        raise ValueError("a call timeout must be a positive number of seconds or None, not %r" % (timeout,))
    return seconds


def _find_executable(executable: str) -> str:
    """``executable`` as an absolute path when it can be found, else unchanged (the
    spawn error then names it)."""
    if os.sep in executable:
        return os.path.abspath(executable)
    found = shutil.which(executable)
    return found if found is not None else executable


class TwinMaster(concurrent.futures.Executor):
    """Manager of one twinterpreter: starts, supervises and stops its process.

    It is a :class:`concurrent.futures.Executor` too (:meth:`submit`, :meth:`map`,
    :meth:`shutdown`), so ``loop.run_in_executor(twin, func, ...)`` runs ``func`` in
    the twin; :meth:`aexecute` awaits a call from asyncio.

    :param executable: the Python interpreter to run: a path, or a name looked up in
        ``PATH`` (e.g. ``'pypy3'``, ``'/opt/venv/bin/python'``). Defaults to
        ``twinterpreter_id``. It must have cpy2py installed.
    :param twinterpreter_id: the twin's id; defaults to the basename of
        ``executable``. At least one of the two is required.
    :param kernel: accepted for compatibility ('single', 'async', 'multi', ...); cpy2py's
        one kernel is thread-safe and reentrant, so it has no effect.
    :param main_module: how the twin knows the master's ``__main__`` (so functions and
        classes of the user's script work there): True (default) for this process's
        main script or ``-m`` module, a file path or module name for that one, False
        or None for none.
    :param run_main: load the main module in the twin with ``__name__ == "__main__"``,
        so that its ``if __name__ == "__main__":`` block runs there too, at start;
        default: the main module is loaded only when first needed, without that block.
    :param restore_argv: give the twin the master's ``sys.argv``.
    :param ipyc: accepted for compatibility; no effect.
    :param call_timeout: keyword-only: default timeout in seconds of :meth:`execute`
        (None: wait as long as the call takes); also the settable attribute
        :attr:`call_timeout`. See :meth:`execute_timeout`.
    :param host: keyword-only: run the twin on this ssh destination (``'user@gpu-box'``)
        rather than here, as ``ssh -T -o BatchMode=yes host -- exec env ... executable
        -m cpy2py.twin``. Frames travel over the ssh session's stdin and stdout; nothing
        listens on the remote host. ``executable`` is looked up there, and cpy2py of the
        same version must be installed for it. The twin's stderr (and stray prints)
        appear on this process's stderr prefixed with ``[twin id]``. A lost connection
        fails pending calls within ``ServerAliveInterval`` x ``ServerAliveCountMax``
        seconds (5 x 3 unless ``ssh_options`` say otherwise) plus one interval.
    :param ssh_options: keyword-only: extra ``ssh`` arguments, e.g. ``['-p', '2222',
        '-i', key, '-J', 'bastion', '-o', 'ServerAliveInterval=2']``; they take
        precedence over cpy2py's keepalive and connect-timeout defaults.
    :param ssh: keyword-only: the ``ssh`` client to run.

    ``TwinMaster`` is a singleton per twin id: constructing it again with the same id
    returns the same (possibly running) instance.
    """

    #: singleton store ``twinterpreter_id -> TwinMaster``
    _store: Dict[str, "TwinMaster"] = {}
    _store_lock = threading.RLock()

    #: Seconds a twin may take from spawn to handshake in :meth:`start`.
    startup_timeout = 30.0

    #: Default timeout of :meth:`execute` in seconds (None: none).
    call_timeout: Optional[float]
    _initialized: bool

    def __new__(
        cls,
        executable: Optional[str] = None,
        twinterpreter_id: Optional[str] = None,
        kernel: Any = None,
        main_module: Any = True,
        run_main: Optional[bool] = None,
        restore_argv: bool = False,
        ipyc: Any = None,
        *,
        call_timeout: Optional[float] = None,
        host: Optional[str] = None,
        ssh_options: Sequence[str] = (),
        ssh: str = "ssh",
    ) -> "TwinMaster":
        twin_id, _ = _resolve_ids(executable, twinterpreter_id)
        # before the store holds a half-made master
        _check_timeout(call_timeout)
        if host is not None:
            _ssh.check_host(host)
        with cls._store_lock:
            self = cls._store.get(twin_id)
            if self is None:
                self = super().__new__(cls)
                self._initialized = False
                cls._store[twin_id] = self
            return self

    def __init__(
        self,
        executable: Optional[str] = None,
        twinterpreter_id: Optional[str] = None,
        kernel: Any = None,
        main_module: Any = True,
        run_main: Optional[bool] = None,
        restore_argv: bool = False,
        ipyc: Any = None,
        *,
        call_timeout: Optional[float] = None,
        host: Optional[str] = None,
        ssh_options: Sequence[str] = (),
        ssh: str = "ssh",
    ) -> None:
        explicit_executable = executable
        twin_id, executable = _resolve_ids(executable, twinterpreter_id)
        with self._store_lock:
            if self._initialized:
                # TwinMaster('pypy3') names the twin; only another interpreter conflicts
                if host is not None and host != self.host:
                    raise ValueError(
                        "twinterpreter %r already exists on %s, not on %r"
                        % (twin_id, self.host or "this host", host)
                    )
                if (
                    explicit_executable is not None
                    and explicit_executable != twin_id
                    and self.host is None
                    and _find_executable(executable) != _find_executable(self.executable)
                ):
                    raise ValueError(
                        "twinterpreter %r already exists with executable %r, not %r"
                        % (twin_id, self.executable, executable)
                    )
                if call_timeout is not None:
                    self.call_timeout = _check_timeout(call_timeout)
                return
            if twin_id == kernel_state.MASTER_ID:
                del self._store[twin_id]
                raise ValueError(
                    "twinterpreter_id %r is the master's own id (kernel_state.MASTER_ID: the "
                    "basename of sys.executable, or %s): give the twin another id, e.g. "
                    "TwinMaster(%r, twinterpreter_id=%r)"
                    % (twin_id, kernel_state.TWIN_ID_ENV, executable, twin_id + "-twin")
                )
            if kernel is not None or ipyc is not None:
                _log.debug(
                    "TwinMaster(%r): kernel=%r and ipyc=%r have no effect (one kernel for all)",
                    twin_id,
                    kernel,
                    ipyc,
                )
            if isinstance(ssh_options, str):
                raise TypeError("ssh_options must be a list of arguments, not the string %r" % (ssh_options,))
            self.executable: str = executable
            self.twinterpreter_id: str = twin_id
            #: The ssh destination the twin runs on (``'user@host'``), or None: here.
            self.host: Optional[str] = None if host is None else _ssh.check_host(host)
            #: Extra ``ssh`` arguments (``['-p', '2222', '-i', key]``).
            self.ssh_options: List[str] = [str(option) for option in ssh_options]
            #: The ``ssh`` client to run.
            self.ssh: str = ssh
            self.kernel = kernel
            self.ipyc = ipyc
            self.main_module = main_module
            self.run_main = bool(run_main)
            self.restore_argv = bool(restore_argv)
            self.call_timeout = _check_timeout(call_timeout)
            self._lock = threading.RLock()
            self._peer: Optional[int] = None
            self._ended: Optional[str] = None
            self._destroyed = False
            # started or stopped by start()/stop(): never started on demand again
            self._managed = False
            self._booting = False
            self._outstanding = _futures.Outstanding()
            self._initialized = True

    # -- state --------------------------------------------------------------------

    @property
    def twin_id(self) -> str:
        """The twin's id (same as :attr:`twinterpreter_id`)."""
        return self.twinterpreter_id

    @property
    def is_alive(self) -> bool:
        """Whether the twin runs: started, connected, and its process not ended."""
        peer = self._peer
        if peer is None:
            return kernel_state.TWIN_ID == self.twinterpreter_id
        return bool(_native.is_alive(peer))

    @property
    def pid(self) -> Optional[int]:
        """Process id of the running twin, or None."""
        peer = self._peer
        if peer is None:
            return os.getpid() if kernel_state.TWIN_ID == self.twinterpreter_id else None
        return _native.twin_pid(peer)

    @property
    def peer(self) -> Optional[int]:
        """The twin's peer number in this process's kernel while started, else None."""
        return self._peer

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> bool:
        """Start the twin unless it is alive; returns True (it is alive).

        After :meth:`stop` or a crash, starts a fresh twin. Runs the group's
        initializers and finalizers in it (``kernel_state.TWIN_GROUP_STATE``) before
        returning. Raises :class:`~cpy2py.errors.TwinterpeterUnavailable` when the
        executable cannot be started or does not complete the handshake (e.g. cpy2py
        is not installed in it), with the reason and the twin's stderr, or when an
        initializer or finalizer raises there.

        A twin started (or stopped) this way is never started implicitly: once it
        ends, using its classes and twinfunctions raises until ``start()`` is called
        again.
        """
        if not kernel_state.is_master():
            return self._start_from_twin()
        with self._lock:
            self._managed = True
            return self._start()

    def _start(self) -> bool:
        with self._lock:
            if self._booting:
                raise self._booting_error()
            if self._destroyed:
                raise RuntimeError("TwinMaster %r was destroyed; create a new one" % (self.twinterpreter_id,))
            peer = self._peer
            if peer is not None:
                if _native.is_alive(peer):
                    return True
                self._reap(peer, grace=0.0)
            _ensure_master()
            if self.host is None:
                executable = _find_executable(self.executable)
                env = {CONFIG_ENV: json.dumps(self._twin_config())}
                _log.debug("starting twinterpreter %r: %s -m cpy2py.twin", self.twinterpreter_id, executable)
                peer = _native.spawn(
                    self.twinterpreter_id,
                    executable,
                    ["-m", "cpy2py.twin"],
                    env,
                    None,
                    float(self.startup_timeout),
                )
            else:
                peer = self._spawn_over_ssh()
            self._ended = None
            self._booting = True
            try:
                kernel_state.TWIN_GROUP_STATE.boot_twin(self.twinterpreter_id, peer)
            except BaseException:
                self._reap(peer, grace=0.0)  # (which also takes it out of the group)
                raise
            finally:
                self._booting = False
            self._peer = peer
            _log.info(
                "started twinterpreter %r (peer %d, pid %d)",
                self.twinterpreter_id,
                peer,
                _native.twin_pid(peer),
            )
            return True

    def _spawn_over_ssh(self) -> int:
        assert self.host is not None
        remote_env = dict(_native.stdio_twin_env(self.twinterpreter_id))
        remote_env[CONFIG_ENV] = json.dumps(self._twin_config())
        argv = _ssh.command(self.ssh, self.host, self.ssh_options, self.executable, remote_env)
        _log.debug("starting twinterpreter %r on %s: %r", self.twinterpreter_id, self.host, argv)
        try:
            return _native.spawn(
                self.twinterpreter_id,
                argv[0],
                argv[1:],
                {},
                None,
                float(self.startup_timeout),
                True,
                self.host,
            )
        except errors.TwinterpeterUnavailable as failure:
            from . import __version__

            raise errors.TwinterpeterUnavailable(
                _ssh.explain(failure, self.host, self.executable, __version__),
                twin_id=self.twinterpreter_id,
            ) from failure

    def _booting_error(self) -> errors.TwinterpeterUnavailable:
        return errors.TwinterpeterUnavailable(
            "twinterpreter %r is starting: its initializers and finalizers cannot call into it"
            % (self.twinterpreter_id,),
            twin_id=self.twinterpreter_id,
        )

    def _start_from_twin(self) -> bool:
        if kernel_state.TWIN_ID == self.twinterpreter_id:
            return True  # e.g. the user's script, loaded in this very twin
        _native_call(_native.MASTER_PEER, _routing.lookup_in_master, (self.twinterpreter_id,), None)
        return True

    def _twin_config(self) -> Dict[str, Any]:
        spec = _runtime.main_module_spec()
        main: Dict[str, Any]
        if self.main_module is True:
            main = {"path": spec["path"], "module": spec["module"]}
        elif not self.main_module:
            main = {"reason": "TwinMaster(main_module=%r)" % (self.main_module,)}
        else:
            main_module = os.fspath(self.main_module)
            if os.path.exists(main_module):
                main = {"path": os.path.abspath(main_module)}
            else:
                main = {"module": main_module}
        main["run_main"] = self.run_main
        if not main.get("reason"):
            main["reason"] = self._main_exclusion(main)
            if main["reason"]:
                main["path"] = main["module"] = None
        if not main.get("path") and not main.get("module") and not main.get("reason"):
            main["reason"] = "the master runs without a main file (python -c, stdin or REPL)"
        return {
            "version": CONFIG_VERSION,
            "main": main,
            "sys_path": spec["sys_path"],
            "argv": list(sys.argv) if self.restore_argv else None,
        }

    @staticmethod
    def _main_exclusion(main: Dict[str, Any]) -> Optional[str]:
        """Why a main module must not be loaded as the alias (its top level is the
        program itself), or None."""
        if main.get("run_main"):
            return None
        module = main.get("module")
        if module and (module == "__main__" or module.endswith(".__main__")):
            return "the master runs the package main module %r" % (module,)
        path = main.get("path")
        if path and os.path.basename(path) in ("__main__.py", "__main__.pyc"):
            return "the master runs the package main file %r" % (path,)
        return None

    def stop(self, grace: float = 5.0) -> bool:
        """Stop the twin: ask it to shut down, kill it after ``grace`` seconds.

        Pending calls fail with :class:`~cpy2py.errors.TwinterpeterTerminated`.
        Stopping a twin that is not running does nothing. Returns :attr:`is_alive`
        (False).
        """
        if not kernel_state.is_master():
            return self.is_alive
        with self._lock:
            self._managed = True
            peer = self._peer
            if peer is None:
                return False
            self._peer = None
            self._reap(peer, grace)
            self._ended = "stopped, %s" % (self._ended,)
            return False

    def _reap(self, peer: int, grace: float) -> None:
        kernel_state.TWIN_GROUP_STATE.twin_ended(self.twinterpreter_id, peer)
        try:
            ended: Optional[str] = _native.stop(peer, float(grace))
        except KeyError:  # the kernel no longer knows it
            ended = None
        self._peer = None
        self._ended = ended or "stopped"
        _log.info("twinterpreter %r ended: %s", self.twinterpreter_id, self._ended)

    def destroy(self) -> None:
        """Stop the twin and forget this master; the id can then be used anew."""
        self.stop()
        with self._store_lock:
            self._destroyed = True
            if self._store.get(self.twinterpreter_id) is self:
                del self._store[self.twinterpreter_id]

    # -- calls --------------------------------------------------------------------

    def execute(self, call: Any, /, *call_args: Any, **call_kwargs: Any) -> Any:
        """Run ``call(*call_args, **call_kwargs)`` in the twin and return the result.

        Arguments and result travel by value (pickled copies); keyword arguments may
        have any name, ``call`` and ``self`` included. Module-level functions
        and classes travel by reference, including those of the master's main script.
        A remote exception re-raises here with its own type and the remote traceback
        as its ``__cause__``. Raises :class:`~cpy2py.errors.TwinterpeterUnavailable`
        when the twin is not running, :class:`~cpy2py.errors.TwinterpeterTerminated`
        when it ends during the call, :class:`~cpy2py.errors.TwinterpreterTimeout`
        after :attr:`call_timeout` seconds when that is set.
        """
        peer = self._peer
        if peer is None:
            return self._execute_unstarted(call, call_args, call_kwargs, self.call_timeout)
        # no empty dict: on PyPy every dict passed to C is converted through cpyext
        return _native_call(peer, call, call_args, call_kwargs or None, self.call_timeout)

    def execute_timeout(self, timeout: Optional[float], call: Any, /, *call_args: Any, **call_kwargs: Any) -> Any:
        """:meth:`execute` with a timeout of its own (seconds; None: no timeout).

        Raises :class:`~cpy2py.errors.TwinterpreterTimeout` (a :class:`TimeoutError`)
        naming the call when no reply came in time; the twin keeps running the call,
        and its late reply is discarded.
        """
        timeout = _check_timeout(timeout)
        peer = self._peer
        if peer is None:
            return self._execute_unstarted(call, call_args, call_kwargs, timeout)
        return _native_call(peer, call, call_args, call_kwargs, timeout)

    def _execute_unstarted(self, call: Any, call_args: Any, call_kwargs: Any, timeout: Optional[float] = None) -> Any:
        if kernel_state.TWIN_ID == self.twinterpreter_id:
            return call(*call_args, **call_kwargs)
        if not kernel_state.is_master():
            return _routing.call_in(self.twinterpreter_id, _native_call, call, call_args, call_kwargs, timeout)
        raise self._unavailable()

    # -- calls that do not block ----------------------------------------------------

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[_T]":
        """Run ``fn(*args, **kwargs)`` in the twin; returns its future at once.

        The request has left when this returns, so the future is running; unlike
        other executors' running futures it can be cancelled, which interrupts the
        call in the twin (see :class:`cpy2py.errors.CallCancelled`). Its result or
        exception is what :meth:`execute` would return
        or raise; :attr:`call_timeout` does not apply (``future.result(timeout)``
        does). Errors found before the request leaves raise here, as from
        :meth:`execute`: a twin that is not running, an argument that cannot be sent.
        Done-callbacks run on cpy2py's completion thread: keep them short.
        """
        if self._peer is None and kernel_state.TWIN_ID == self.twinterpreter_id:
            return _futures.completed(fn, args, kwargs)
        return _futures.submit_call(self._send, fn, args, kwargs, self._outstanding)

    async def aexecute(self, call: Any, /, *call_args: Any, **call_kwargs: Any) -> Any:
        """:meth:`execute` for asyncio: ``await twin.aexecute(func, ...)``.

        The event loop keeps running while the twin works; thousands of calls may be
        in flight from one loop, without a thread each. Cancelling the awaiting task
        cancels the call: the twin raises :class:`cpy2py.errors.CallCancelled` in it.
        """
        if self._peer is None and kernel_state.TWIN_ID == self.twinterpreter_id:
            return call(*call_args, **call_kwargs)
        return await _futures.start_async(lambda on_done: self._send(on_done, call, call_args, call_kwargs))

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """:meth:`concurrent.futures.Executor.map` in the twin: every call leaves now,
        results come back in order (``timeout`` seconds from this call for all of
        them). With ``chunksize`` > 1, that many items go per request, run in a loop
        in the twin: fewer round trips for many small calls."""
        return _futures.map_with(self.submit, fn, iterables, timeout, chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the twin, after the futures of :meth:`submit` complete if ``wait``.

        ``cancel_futures`` cancels the calls still in flight first (they are all
        running in the twin). Unlike other executors, a master can be started again.
        """
        if cancel_futures:
            self._outstanding.cancel_all()
        if wait:
            self._outstanding.wait()
        self.stop()

    def _send(self, on_done: Callable[[bool, Any], None], call: Any, args: Any, kwargs: Any) -> Any:
        peer = self._peer
        if peer is not None:
            return _native_call_async(peer, on_done, call, args, kwargs or None)
        elif not kernel_state.is_master():
            return _routing.call_in(self.twinterpreter_id, _native_call_async, on_done, call, args, kwargs or None)
        else:
            raise self._unavailable()

    def _unavailable(self) -> errors.TwinterpeterUnavailable:
        if self._ended is not None:
            return errors.TwinterpeterTerminated(
                "twinterpreter %r is not running (%s); call start() to start it again"
                % (self.twinterpreter_id, self._ended),
                twin_id=self.twinterpreter_id,
            )
        return errors.TwinterpeterUnavailable(
            "twinterpreter %r is not running; call start() first" % (self.twinterpreter_id,),
            twin_id=self.twinterpreter_id,
        )

    def _peer_on_demand(self) -> int:
        """The twin's peer, starting it if it never ran under this master (in the
        master, for a call that needs it)."""
        with self._lock:  # a start() in another thread completes first
            peer = self._peer
            if peer is not None and _native.is_connected(peer):
                return peer
            if self._booting:  # the twin's own boot cannot wait for itself
                raise self._booting_error()
            if peer is not None:
                self._reap(peer, grace=0.0)  # it ended: say how
            if self._managed or self._ended is not None:
                raise self._unavailable()
            _refuse_implicit_start(self.twinterpreter_id)
            _log.debug("starting twinterpreter %r on demand", self.twinterpreter_id)
            self._start()
            peer = self._peer
            assert peer is not None, "_start() sets the peer or raises"
            return peer

    # -- protocols ----------------------------------------------------------------

    def __enter__(self) -> "TwinMaster":
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        self.stop()

    def __reduce__(self) -> Any:
        return (TwinMaster, (self.executable, self.twinterpreter_id))

    def __repr__(self) -> str:
        peer = self._peer
        if peer is None:
            state = "stopped (%s)" % self._ended if self._ended else "not started"
        else:
            try:
                state = "alive, pid %d" % _native.twin_pid(peer) if _native.is_alive(peer) else "dead"
            except Exception:
                state = "unknown"
        return "<%s executable=%r twinterpreter_id=%r: %s>" % (
            type(self).__name__,
            self.executable,
            self.twinterpreter_id,
            state,
        )


def _route_in_master(twin_id: str) -> int:
    """The running twin ``twin_id``'s peer number, starting it (as
    ``TwinMaster(twin_id).start()`` would, with the registered executable if any)
    if it never ran under its current master, unless ``CPY2PY_NOAUTO`` is set.
    The master's resolver for :mod:`cpy2py._routing`."""
    if twin_id == kernel_state.MASTER_ID:
        raise ValueError("%r is the master itself" % (twin_id,))
    master = TwinMaster._store.get(twin_id)
    if master is not None:
        peer = master._peer
        # connected, not is_alive: that checks the child's status (a system
        # call per call); a twin that died is closed once its EOF is read
        if peer is not None and _native.is_connected(peer):
            return peer
    else:
        _refuse_implicit_start(twin_id)
        master = TwinMaster(twinterpreter_id=twin_id)
    return master._peer_on_demand()


def _refuse_implicit_start(twin_id: str) -> None:
    if os.environ.get(NOAUTO_ENV):
        raise errors.TwinterpeterUnavailable(
            "twinterpreter %r is not running and %s forbids starting it implicitly" % (twin_id, NOAUTO_ENV),
            twin_id=twin_id,
        )


_routing.set_master_resolver(_route_in_master)
