"""Which peer number reaches a twin id from this process: the package's one
routing table. A leaf: it imports of cpy2py only the native module, the errors
and :mod:`cpy2py.kernel_state`.

In a twin, the master is peer 0, and any other twin is looked up in the master
(which may start it) and cached until the kernel reports it gone. In the master,
the running :class:`~cpy2py.TwinMaster` objects are the table: ``cpy2py.master``
hands its resolver to :func:`set_master_resolver` when it is imported.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from . import _native, errors, kernel_state

__all__ = ["peer_for", "forget", "forget_peer_number", "call_in", "lookup_in_master", "set_master_resolver"]

_native_call = _native.call

#: In a twin: ``twin id -> peer`` as learnt from the master.
_twin_peers: Dict[str, int] = {}
#: In the master: ``twin id -> peer``, starting the twin if the rules allow.
_master_resolver: Optional[Callable[[str], int]] = None


def set_master_resolver(resolve: Callable[[str], int]) -> None:
    """Called once by ``cpy2py.master``: how the master finds (or starts) a twin."""
    global _master_resolver
    _master_resolver = resolve


def peer_for(twin_id: str) -> int:
    """Peer number to reach twin ``twin_id`` from this process."""
    if kernel_state.is_master():
        if _master_resolver is None:  # cpy2py/__init__ imports cpy2py.master first
            raise RuntimeError("cpy2py.master is not imported: no twins can be reached")
        return _master_resolver(twin_id)
    if twin_id == kernel_state.MASTER_ID:
        return _native.MASTER_PEER
    peer = _twin_peers.get(twin_id)
    if peer is None:
        peer = _native_call(_native.MASTER_PEER, lookup_in_master, (twin_id,), None)
        _twin_peers[twin_id] = peer
    return peer


def lookup_in_master(twin_id: str) -> int:
    """Runs in the master, called by twins: the peer number of twin ``twin_id``,
    starting it as :func:`peer_for` would there."""
    if not kernel_state.is_master():
        raise RuntimeError("lookup_in_master runs in the master, not in twinterpreter %r" % (kernel_state.TWIN_ID,))
    return peer_for(twin_id)


def forget(twin_id: str) -> None:
    """Drop the cached route (in a twin) to ``twin_id``, after a call found it gone."""
    _twin_peers.pop(twin_id, None)


def forget_peer_number(peer: int) -> None:
    """Drop cached routes (in a twin) to peer ``peer``, which ended: a twin started
    again under the same id gets a new number."""
    for twin_id, cached in list(_twin_peers.items()):
        if cached == peer:
            _twin_peers.pop(twin_id, None)


def call_in(twin_id: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(peer, *args)`` with the peer of ``twin_id``, forgetting the route when
    the call finds the twin gone (the next call asks the master again)."""
    peer = peer_for(twin_id)
    try:
        return call(peer, *args)
    except errors.TwinterpeterUnavailable:
        forget(twin_id)
        raise
