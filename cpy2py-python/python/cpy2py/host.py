"""Functions served by a Rust host.

When the master is a Rust program embedding the cpy2py kernel (see
``cpy2py_kernel::Host``), Python code in its twins calls the functions it serves
by name::

    from cpy2py import host
    total = host.call("add", 1, 2)

Arguments and results are plain data (None, bool, int, float, str, bytes and
lists, tuples, dicts and sets of them); the call runs on the host thread that is
waiting for this twin, if any, so a host function may call back into Python.
"""

from __future__ import annotations

from typing import Any

from . import _native

__all__ = ["call"]


def call(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the host's function ``name`` with ``args`` and ``kwargs``."""
    return _native.call_host(name, args, kwargs)
