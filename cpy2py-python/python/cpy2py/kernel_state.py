"""Which interpreter this is: the master or one of its twinterpreters.

:data:`TWIN_ID` is this interpreter's id and :data:`MASTER_ID` the master's. In the
master both are the master id: ``'__master__'``, or the value of the environment
variable ``CPY2PY_MASTER_ID`` when cpy2py is first imported (set it there if you need
another name; it must differ from every twin id). In a twinterpreter, the bootstrap
(``python -m cpy2py.twin``) sets both before any user code runs, from what the master
told it; they match ``cpy2py._native.twin_id()`` and ``master_id()``.

Read them as attributes of this module (``kernel_state.TWIN_ID``); they are constants
for the life of the process once user code runs.
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["TWIN_ID", "MASTER_ID", "is_twinterpreter", "is_master"]

#: Id of the master unless the environment says otherwise.
DEFAULT_MASTER_ID = "__master__"

#: Id of the master interpreter.
MASTER_ID: str = os.environ.get("CPY2PY_MASTER_ID") or DEFAULT_MASTER_ID
#: Id of this interpreter (equal to :data:`MASTER_ID` in the master).
TWIN_ID: str = MASTER_ID


def is_twinterpreter(twin_id: Optional[str] = None) -> bool:
    """Whether this process is a twinterpreter (no argument), or the twinterpreter
    ``twin_id``."""
    if twin_id is None:
        return TWIN_ID != MASTER_ID
    return TWIN_ID == twin_id


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
