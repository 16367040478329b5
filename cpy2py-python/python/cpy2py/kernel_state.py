"""Which interpreter this is: the master or one of its twinterpreters.

:data:`TWIN_ID` is this interpreter's id and :data:`MASTER_ID` the master's. In the
master both are the same: the basename of ``sys.executable`` (``'python3.11'``,
``'pypy3'``, ``'python'`` in a virtualenv), as in cpy2py 0.17, or the value of the
environment variable ``__CPY2PY_TWIN_ID__`` when cpy2py is first imported (and
``__CPY2PY_MASTER_ID__`` for the master's, if it should differ); both are removed
from the environment once read, so that processes started later do not inherit
them. A twin has the ids its master's kernel gives it with its socket (any master:
a Python one or a Rust host), so they hold from the first import of cpy2py there.

:data:`TWIN_GROUP_STATE` is the group's shared state (:class:`TwinGroupState`, as
in cpy2py 0.17): what every twin runs when it starts. Use it to configure every
twin the same way: logging, ``sys.path``, random seeds, environment::

    from cpy2py import kernel_state

    def configure(level):
        import logging
        logging.basicConfig(level=level)

    kernel_state.TWIN_GROUP_STATE.add_initializer(configure, "INFO")

An *initializer* runs in a twin when it starts, before the twin serves anything
else; a *finalizer* runs after all initializers, as the last step of the start
(both before :meth:`TwinMaster.start` returns, and before a twin started on demand
serves its first call). With ``init_existing=True`` (the default) the call also
runs at once in every twin already running. Neither ever runs in the interpreter
that registered it (run it there yourself if you need it), nor in the master.

The call travels like any call: the function by reference (it must be defined at
module level, or in the master's main script), the arguments by value. The master
keeps the list: registering from a twin adds to it. An initializer that raises makes
the start fail (the twin is stopped; the error names the initializer and the twin);
one that raises in a running twin raises from ``add_initializer``, and stays
registered.

Read the ids as attributes of this module (``kernel_state.TWIN_ID``); they are
constants for the life of the process once user code runs. ``cpy2py.kernel.state``
is this very module, under the path cpy2py 0.17 gave it.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _native, errors

__all__ = [
    "TWIN_ID",
    "MASTER_ID",
    "TWIN_GROUP_STATE",
    "TwinGroupState",
    "TwinInitDirective",
    "is_twinterpreter",
    "is_master",
]

#: Environment variable: this interpreter's id (the master's, when set for a master).
TWIN_ID_ENV = "__CPY2PY_TWIN_ID__"
#: Environment variable: the master's id, if it should differ from its twin id.
MASTER_ID_ENV = "__CPY2PY_MASTER_ID__"


def _executable_id() -> str:
    """The default id of an interpreter: the basename of its executable."""
    return os.path.basename(sys.executable or "") or "python"


def _resolve_ids() -> Tuple[str, str]:
    """``(TWIN_ID, MASTER_ID)`` of this process, from its environment."""
    own = os.environ.pop(TWIN_ID_ENV, "")
    master = os.environ.pop(MASTER_ID_ENV, "")
    fd_var, _stderr_var, twin_var, master_var = _native.TWIN_ENV  # the kernel's order
    if os.environ.get(fd_var) and os.environ.get(twin_var):
        # a twin: the kernel's variables, which ``cpy2py.twin`` takes out of the
        # environment (with the socket) before user code runs
        return os.environ[twin_var], os.environ.get(master_var) or "host"
    own = own or _executable_id()
    return own, master or own


_ids = _resolve_ids()
#: Id of this interpreter (equal to :data:`MASTER_ID` in the master).
TWIN_ID: str = _ids[0]
#: Id of the master interpreter.
MASTER_ID: str = _ids[1]
del _ids


def is_twinterpreter(kernel_id: Optional[str] = None, *, twin_id: Optional[str] = None) -> bool:
    """Whether this interpreter is the one with id ``kernel_id`` (or ``twin_id``:
    either spelling, positional or keyword); without an id, whether it is a
    twinterpreter rather than the master."""
    if twin_id is not None:
        if kernel_id is not None and kernel_id != twin_id:
            raise TypeError("is_twinterpreter() got kernel_id=%r and twin_id=%r; pass one" % (kernel_id, twin_id))
        kernel_id = twin_id
    if kernel_id is None:
        return TWIN_ID != MASTER_ID
    return TWIN_ID == kernel_id


def is_master() -> bool:
    """Whether this process is the master."""
    return TWIN_ID == MASTER_ID


# -------------------------------------------------------------------- group state


class TwinInitDirective(object):
    """A call registered with :class:`TwinGroupState`: ``call(*args, **kwargs)``,
    registered by the interpreter ``parent_twin_id`` (which never runs it)."""

    __slots__ = ("call", "args", "kwargs", "parent_twin_id")

    def __init__(
        self, call: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any], parent_twin_id: str
    ) -> None:
        self.call = call
        self.args = args
        self.kwargs = kwargs
        self.parent_twin_id = parent_twin_id

    def __call__(self) -> Any:
        return self.call(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        name = getattr(self.call, "__qualname__", None) or repr(self.call)
        module = getattr(self.call, "__module__", None)
        return "%s%s(*%r, **%r)" % (module + "." if module else "", name, self.args, self.kwargs)


_INITIALIZERS = "initializers"
_FINALIZERS = "finalizers"


class TwinGroupState(object):
    """The group's initializers and finalizers (see the module documentation).

    In the master it holds the lists; in a twin it forwards registrations there.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        #: :class:`TwinInitDirective` s run first in every twin that starts.
        self.initializers: List[TwinInitDirective] = []
        #: :class:`TwinInitDirective` s run after the initializers.
        self.finalizers: List[TwinInitDirective] = []
        #: twin id -> peer number of the twins that have started (in the master)
        self._members: Dict[str, int] = {}

    def add_initializer(self, func: Callable[..., Any], *args: Any, init_existing: bool = True, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` in every twin when it starts, before
        anything else it serves; with ``init_existing``, also now in every running
        twin. Never in this interpreter."""
        self._add(_INITIALIZERS, func, args, kwargs, init_existing)

    def add_finalizer(self, func: Callable[..., Any], *args: Any, init_existing: bool = True, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` in every twin when it starts, after the
        initializers; with ``init_existing``, also now in every running twin.
        Never in this interpreter."""
        self._add(_FINALIZERS, func, args, kwargs, init_existing)

    def _add(
        self, collection: str, func: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any], init_existing: bool
    ) -> None:
        what = "TWIN_GROUP_STATE.add_%s" % (collection[:-1],)
        if not callable(func):
            raise TypeError("%s needs a callable, not %r" % (what, func))
        qualname = getattr(func, "__qualname__", "")
        if isinstance(func, types.FunctionType) and "<" in qualname:
            raise TypeError(
                "%s(%s.%s): the function must be reachable by name (defined at module "
                "level) to run in other interpreters" % (what, func.__module__, qualname)
            )
        if is_master():
            _register(collection, func, args, kwargs, bool(init_existing), TWIN_ID)
        else:
            _native.call(
                _native.MASTER_PEER,
                _register,
                (collection, func, args, kwargs, bool(init_existing), TWIN_ID),
                None,
            )

    # -- in the master ----------------------------------------------------------

    def _register(self, collection: str, directive: TwinInitDirective, init_existing: bool) -> None:
        with self._lock:
            getattr(self, collection).append(directive)
            members = list(self._members.items()) if init_existing else []
        for twin_id, peer in members:
            if twin_id == directive.parent_twin_id:
                continue
            try:
                _native.call(peer, _run, (directive,), None)
            except errors.TwinterpeterUnavailable:
                self.twin_ended(twin_id, peer)  # ended meanwhile: it runs nothing more

    def boot_twin(self, twin_id: str, peer: int) -> None:
        """Run the initializers, then the finalizers, in twin ``twin_id`` (just
        started as ``peer``), which from now on gets every new registration too.
        Called by :class:`~cpy2py.TwinMaster`, in the master."""
        with self._lock:
            self._members[twin_id] = peer  # (peer numbers are never reused)
            stages = [
                [d for d in self.initializers if d.parent_twin_id != twin_id],
                [d for d in self.finalizers if d.parent_twin_id != twin_id],
            ]
        for directives, kind in zip(stages, ("initializer", "finalizer")):
            for directive in directives:
                try:
                    _native.call(peer, _run, (directive,), None)
                except Exception as error:
                    raise errors.TwinterpeterUnavailable(
                        "twinterpreter %r did not start: its %s %r raised %s: %s"
                        % (twin_id, kind, directive, type(error).__name__, error),
                        twin_id=twin_id,
                    ) from error

    def twin_ended(self, twin_id: str, peer: Optional[int] = None) -> None:
        """Twin ``twin_id`` ended: it gets no more registrations. Called by
        :class:`~cpy2py.TwinMaster`, in the master."""
        with self._lock:
            if peer is None or self._members.get(twin_id) == peer:
                self._members.pop(twin_id, None)

    def __repr__(self) -> str:
        return "<TwinGroupState of %r: %d initializers, %d finalizers>" % (
            MASTER_ID,
            len(self.initializers),
            len(self.finalizers),
        )


#: The group's state (``TWIN_GROUP_STATE``).
TWIN_GROUP_STATE = TwinGroupState()


def _register(
    collection: str,
    func: Callable[..., Any],
    args: Tuple[Any, ...],
    kwargs: Dict[str, Any],
    init_existing: bool,
    parent_twin_id: str,
) -> None:
    """Runs in the master: records a directive and, with ``init_existing``, runs it
    in the running twins but its parent."""
    if not is_master():
        raise RuntimeError("group state registrations run in the master, not in %r" % (TWIN_ID,))
    directive = TwinInitDirective(func, tuple(args), dict(kwargs), parent_twin_id)
    TWIN_GROUP_STATE._register(collection, directive, init_existing)


def _run(directive: TwinInitDirective) -> None:
    """Runs in a twin: one directive (it arrives by value)."""
    directive()
