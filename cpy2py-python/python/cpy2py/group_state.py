"""The group's shared state (``kernel_state.TWIN_GROUP_STATE``), under its own
module name: the classes live in :mod:`cpy2py.kernel_state`, beside the ids."""

from .kernel_state import TWIN_GROUP_STATE, TwinGroupState, TwinInitDirective

__all__ = ["TWIN_GROUP_STATE", "TwinGroupState", "TwinInitDirective"]
