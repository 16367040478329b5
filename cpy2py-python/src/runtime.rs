//! Handles to the Python functions of `cpy2py._runtime`, which hold the policy
//! the Rust glue defers to: naming globals, pickling, describing exceptions.

use pyo3::prelude::*;
use std::sync::OnceLock;

/// The `cpy2py._runtime` functions, imported once.
pub(crate) struct Runtime {
    pub global_name: Py<PyAny>,
    pub resolve: Py<PyAny>,
    pub dumps: Py<PyAny>,
    pub loads: Py<PyAny>,
    pub describe_exception: Py<PyAny>,
    pub rebuild_exception: Py<PyAny>,
    pub poll_signals: Py<PyAny>,
    /// `_runtime.proxy_ref` and `make_proxy`, present with TwinObject support.
    pub proxy_ref: Option<Py<PyAny>>,
    pub make_proxy: Option<Py<PyAny>>,
    /// `cpy2py.proxy.TwinObject`, once that module exists.
    pub twin_object: Option<Py<PyAny>>,
    pub proxy_dropped: Py<PyAny>,
    pub partial: Py<PyAny>,
    pub weakref: Py<PyAny>,
    pub errors: Py<PyModule>,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime hooks, importing `cpy2py._runtime` on first use.
pub(crate) fn runtime(py: Python<'_>) -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let module = py.import("cpy2py._runtime")?;
    let get = |name: &str| -> PyResult<Py<PyAny>> { Ok(module.getattr(name)?.unbind()) };
    let rt = Runtime {
        global_name: get("global_name")?,
        resolve: get("resolve")?,
        dumps: get("dumps")?,
        loads: get("loads")?,
        describe_exception: get("describe_exception")?,
        rebuild_exception: get("rebuild_exception")?,
        poll_signals: get("poll_signals")?,
        proxy_ref: get("proxy_ref").ok(),
        make_proxy: get("make_proxy").ok(),
        twin_object: py
            .import("cpy2py.proxy")
            .and_then(|m| m.getattr("TwinObject"))
            .ok()
            .map(Bound::unbind),
        proxy_dropped: py
            .import("cpy2py._native")?
            .getattr("proxy_dropped")?
            .unbind(),
        partial: py.import("functools")?.getattr("partial")?.unbind(),
        weakref: py.import("weakref")?.getattr("ref")?.unbind(),
        errors: py.import("cpy2py.errors")?.unbind(),
    };
    // A concurrent first use may have won the race; either copy is the same.
    let _ = RUNTIME.set(rt);
    Ok(RUNTIME.get().expect("set just above"))
}
