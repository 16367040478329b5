"""cpy2py 0.17's utility package, kept for ``cpy2py.utility.compat``."""
