"""cpy2py 0.17's module path of the twinterpreter errors."""

from ..errors import (
    CPy2PyException,
    TwinterpreterTerminated,
    TwinterpreterTimeout,
    TwinterpreterUnavailable,
)

__all__ = ["CPy2PyException", "TwinterpreterTerminated", "TwinterpreterTimeout", "TwinterpreterUnavailable"]
