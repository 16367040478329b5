//! Helpers for the end-to-end tests of cpy2py.
