"""pypy3 run.py tuple|none: RSS right after C loops of n calls of a Python
function, with or without a 1-tuple made in C per call."""
import sys

import tuplecalls


def ident(x=None):
    return x


with_tuple = sys.argv[1] == "tuple"
for n in (100000, 400000, 1600000):
    rss = tuplecalls.call_many(ident, None, n, 1 if with_tuple else 0) // 1024
    print("%9d calls %s a tuple: RSS %4d MiB" % (n, "with" if with_tuple else "without", rss))
