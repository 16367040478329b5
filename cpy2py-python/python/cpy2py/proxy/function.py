"""cpy2py 0.17's module path of :func:`twinfunction`."""

from ..function import twinfunction

__all__ = ["twinfunction"]
