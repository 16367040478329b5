"""The proxy classes and the TwinObject machinery the pickling runtime needs: a
leaf module (it imports nothing of cpy2py).

:mod:`cpy2py.twinobject` fills it: every proxy class it builds goes into
:data:`PROXY_NATIVE`, and it calls :func:`register_twin_objects` once when it is
imported. :mod:`cpy2py._runtime` reads it to pickle TwinObjects by reference and
to make proxies of the ones that arrive. Until ``cpy2py.twinobject`` is imported
(only while the package itself is being imported), no object is a TwinObject and
making a proxy raises.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

__all__ = ["PROXY_NATIVE", "TwinObjects", "TWIN_OBJECTS", "register_twin_objects"]

#: Proxy class -> the user's class it stands for.
PROXY_NATIVE: Dict[type, type] = {}


class _NotYet(object):
    """Stands for TwinObject until :mod:`cpy2py.twinobject` is imported."""


def _not_yet(*args: Any) -> Any:
    raise RuntimeError("cpy2py.twinobject is not imported yet: no TwinObject proxies")


class TwinObjects(object):
    """What ``cpy2py.twinobject`` provides (one instance, :data:`TWIN_OBJECTS`)."""

    __slots__ = ("base", "remote_method", "new_proxy", "method_of")

    def __init__(self) -> None:
        #: The TwinObject base class (natives and proxies are instances).
        self.base: type = _NotYet
        #: Type of the methods of proxies that their proxy class does not know.
        self.remote_method: type = _NotYet
        #: ``new_proxy(cls, owner, object_id)``: a new proxy, ``__init__`` not run.
        self.new_proxy: Callable[[type, int, int], Any] = _not_yet
        #: ``method_of(obj, name)``: method ``name`` of a TwinObject or proxy.
        self.method_of: Callable[[Any, str], Any] = _not_yet


#: The one registry, filled by :func:`register_twin_objects`.
TWIN_OBJECTS = TwinObjects()


def register_twin_objects(
    base: type,
    remote_method: type,
    new_proxy: Callable[[type, int, int], Any],
    method_of: Callable[[Any, str], Any],
) -> None:
    """Called once, by :mod:`cpy2py.twinobject` when it is imported."""
    if TWIN_OBJECTS.base is not _NotYet:
        raise RuntimeError("cpy2py.twinobject registered twice")
    TWIN_OBJECTS.base = base
    TWIN_OBJECTS.remote_method = remote_method
    TWIN_OBJECTS.new_proxy = new_proxy
    TWIN_OBJECTS.method_of = method_of
