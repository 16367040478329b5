"""cpy2py: several Python interpreters acting as one application.

The master (your interpreter) starts twinterpreters (PyPy, another CPython, a
virtualenv's Python) as child processes and runs functions in them::

    from cpy2py import TwinMaster, twinfunction

    with TwinMaster('pypy3') as pypy:
        pypy.execute(my_function, 1, 2, doctor="who?")   # runs in PyPy

    @twinfunction('pypy3')
    def hot_loop(n): ...                                # always runs in PyPy

    class SuperComputer(TwinObject):
        __twin_id__ = 'pypy3'                           # instances live in PyPy
        def megaloop(self, x, y): ...

    SuperComputer().megaloop(1000, 1000)                # a proxy here; runs in PyPy

Everything public is importable from here. Logging goes to the ``__cpy2py__`` logger
hierarchy; set the environment variable ``CPY2PY_DEBUG`` to log to stderr (its value
may be a level name such as ``INFO``; otherwise the level is ``DEBUG``).
"""

from __future__ import annotations

import logging as _logging
from typing import Any as _Any

from . import _native


def _setup_logging() -> None:
    logger = _logging.getLogger("__cpy2py__")
    if getattr(logger, "_cpy2py_configured", False):
        return
    logger._cpy2py_configured = True  # type: ignore[attr-defined]
    # CPY2PY_DEBUG is parsed by the extension, for the kernel's log and ours alike.
    name = _native.log_level()
    if name is None:
        logger.addHandler(_logging.NullHandler())
        return
    level = _logging.getLevelName(name)
    handler = _logging.StreamHandler()
    handler.setFormatter(
        _logging.Formatter("[%(name)s %(process)d %(threadName)s] %(levelname)s: %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


_setup_logging()

from . import errors, kernel_state  # noqa: E402
from .errors import (  # noqa: E402
    CPy2PyException,
    RemoteException,
    RemoteTraceback,
    TwinterpeterTerminated,
    TwinterpeterUnavailable,
    TwinterpreterTerminated,
    TwinterpreterTimeout,
    TwinterpreterUnavailable,
    UnpicklableError,
)
from ._remote import RemoteObject, always_by_ref, by_ref, by_value  # noqa: E402
from ._futures import TwinFuture, aio, time_left  # noqa: E402
from .function import twinfunction  # noqa: E402
from .master import TwinMaster  # noqa: E402
from .pool import TwinPool  # noqa: E402
from .twinobject import TwinObject, localmethod  # noqa: E402

__all__ = [
    "TwinMaster",
    "TwinPool",
    "TwinObject",
    "twinfunction",
    "localmethod",
    "by_ref",
    "by_value",
    "always_by_ref",
    "RemoteObject",
    "aio",
    "time_left",
    "TwinFuture",
    "kernel_state",
    "errors",
    "CPy2PyException",
    "TwinterpeterUnavailable",
    "TwinterpeterTerminated",
    "TwinterpreterUnavailable",
    "TwinterpreterTerminated",
    "TwinterpreterTimeout",
    "UnpicklableError",
    "RemoteException",
    "RemoteTraceback",
    "__version__",
]


def __getattr__(name: str) -> _Any:
    # the version comes from the installed distribution; looked up on demand so that
    # a twin's startup does not pay for scanning the installed packages
    if name == "__version__":
        try:
            from importlib.metadata import version
        except ImportError:  # pragma: no cover
            return "unknown"
        try:
            return version("cpy2py")
        except Exception:
            return "unknown"
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
