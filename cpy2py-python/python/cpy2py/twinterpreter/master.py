"""cpy2py 0.17's module path of :class:`TwinMaster`."""

from ..master import TwinMaster

__all__ = ["TwinMaster"]
