"""cpy2py 0.17's module path of :class:`InstanceProxy`, of which every proxy of a
TwinObject is an instance."""

from ..twinobject import InstanceProxy

__all__ = ["InstanceProxy"]
