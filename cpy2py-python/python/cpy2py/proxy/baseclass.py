"""cpy2py 0.17's module path of :class:`TwinObject` and :func:`localmethod`."""

from ..twinobject import TwinObject, localmethod

__all__ = ["TwinObject", "localmethod"]
