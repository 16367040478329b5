//! Sets PyO3's cfgs (`PyPy`, `Py_3_x`) for this crate, as for PyO3 itself: the
//! C API differs between the interpreters a wheel is built for.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
