"""Which interpreter this is: the master or one of its twinterpreters.

:data:`TWIN_ID` is this interpreter's id and :data:`MASTER_ID` the master's. In the
master both are the same: the basename of ``sys.executable`` (``'python3.11'``,
``'pypy3'``, ``'python'`` in a virtualenv), as in cpy2py 0.17, or the value of the
environment variable ``__CPY2PY_TWIN_ID__`` when cpy2py is first imported. A master
tells each twin both ids (in ``__CPY2PY_TWIN_ID__`` and ``__CPY2PY_MASTER_ID__``), so
they hold from the first import of cpy2py there; both variables are removed from the
environment once read, so that processes started later do not inherit them.

:data:`TWIN_GROUP_STATE` is the group's shared state (see
:class:`cpy2py.group_state.TwinGroupState`): initializers and finalizers that every
twin runs when it starts.

Read the ids as attributes of this module (``kernel_state.TWIN_ID``); they are
constants for the life of the process once user code runs. ``cpy2py.kernel.state``
is this very module, under the path cpy2py 0.17 gave it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .group_state import TwinGroupState

__all__ = ["TWIN_ID", "MASTER_ID", "TWIN_GROUP_STATE", "is_twinterpreter", "is_master"]

#: Environment variable: this interpreter's id (the master's, when set for a master).
TWIN_ID_ENV = "__CPY2PY_TWIN_ID__"
#: Environment variable: the master's id, set by a master for its twins.
MASTER_ID_ENV = "__CPY2PY_MASTER_ID__"


def _executable_id() -> str:
    """The default id of an interpreter: the basename of its executable."""
    return os.path.basename(sys.executable or "") or "python"


#: Id of this interpreter (equal to :data:`MASTER_ID` in the master).
TWIN_ID: str = os.environ.pop(TWIN_ID_ENV, "") or _executable_id()
#: Id of the master interpreter.
MASTER_ID: str = os.environ.pop(MASTER_ID_ENV, "") or TWIN_ID

if TYPE_CHECKING:
    #: The group's shared state, made on first access.
    TWIN_GROUP_STATE: TwinGroupState


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


def _become_twin(twin_id: str, master_id: str) -> None:
    """Record that this process is twinterpreter ``twin_id`` of master ``master_id``.

    Called once by the twin bootstrap, before user code runs.
    """
    global TWIN_ID, MASTER_ID
    if twin_id == master_id:
        raise ValueError("twin id %r equals the master id" % (twin_id,))
    TWIN_ID = twin_id
    MASTER_ID = master_id


def __getattr__(name: str) -> Any:
    # The group state needs the kernel; made on first use, not when cpy2py imports.
    if name == "TWIN_GROUP_STATE":
        from .group_state import TWIN_GROUP_STATE

        return TWIN_GROUP_STATE
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
