"""cpy2py 0.17's module path of :class:`TwinGroupState`."""

from ..group_state import TwinGroupState, TwinInitDirective

__all__ = ["TwinGroupState", "TwinInitDirective"]
