"""cpy2py 0.17's module path of the errors about unavailable twinterpreters."""

from ..errors import CPy2PyException, TwinterpeterTerminated, TwinterpeterUnavailable

__all__ = ["CPy2PyException", "TwinterpeterTerminated", "TwinterpeterUnavailable"]
