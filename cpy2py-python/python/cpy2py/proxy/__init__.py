"""cpy2py 0.17's package of TwinObject and its proxies, kept so that its imports
keep working: the names are those of :mod:`cpy2py.twinobject`."""

from ..twinobject import InstanceProxy, TwinMeta, TwinObject, localmethod

__all__ = ["InstanceProxy", "TwinMeta", "TwinObject", "localmethod"]
