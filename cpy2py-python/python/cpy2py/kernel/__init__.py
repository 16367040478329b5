"""cpy2py 0.17's kernel package, kept for its module paths: ``cpy2py.kernel.state``
(:mod:`cpy2py.kernel_state`) and ``cpy2py.kernel.exceptions``."""
