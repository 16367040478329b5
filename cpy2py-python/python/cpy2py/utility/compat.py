"""cpy2py 0.17's compatibility names, as it defined them for Python 3."""

import builtins
import logging
import pickle
import sys
from io import BytesIO as BytesFile

PY3 = True
range = builtins.range
NullHandler = logging.NullHandler
stringabc = (str, bytes)
unicode_str = str
long_int = int
intern_str = sys.intern
inf = float("inf")

__all__ = ["PY3", "pickle", "range", "NullHandler", "stringabc", "unicode_str", "long_int", "intern_str", "inf", "BytesFile"]
