"""cpy2py 0.17's twinterpreter package, kept for its module paths: ``master``,
``group_state`` and ``exceptions``."""
