//! Handles to the Python functions of `cpy2py._runtime`, which hold the policy
//! the Rust glue defers to: naming globals, pickling, describing exceptions.

use cpy2py_wire::RefKind;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The `cpy2py._runtime` functions, imported once.
pub(crate) struct Runtime {
    pub global_name: Py<PyAny>,
    pub resolve: Py<PyAny>,
    pub dumps: Py<PyAny>,
    pub loads: Py<PyAny>,
    pub describe_exception: Py<PyAny>,
    pub rebuild_exception: Py<PyAny>,
    pub poll_signals: Py<PyAny>,
    pub peer_gone: Py<PyAny>,
    /// `_runtime.proxy_ref` and `make_proxy`.
    pub proxy_ref: Py<PyAny>,
    pub make_proxy: Py<PyAny>,
    /// `_remote.make_remote` and `describe_type`, for generic references.
    pub make_remote: Py<PyAny>,
    pub describe_type: Py<PyAny>,
    /// `_remote.ByValue`: a value that must not fall back to a reference.
    pub by_value: Py<PyAny>,
    /// `cpy2py.twinobject.TwinObject`.
    pub twin_object: Py<PyAny>,
    pub proxy_dropped: Py<PyAny>,
    pub partial: Py<PyAny>,
    pub weakref: Py<PyAny>,
    pub errors: Py<PyModule>,
    /// `_runtime.pack_numbers` and `unpack_numbers` when this is PyPy, whose
    /// `array` module packs lists far faster than calls through cpyext.
    pub packers: Option<(Py<PyAny>, Py<PyAny>)>,
    /// Whether this interpreter is PyPy.
    pub pypy: bool,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime hooks, importing `cpy2py._runtime` on first use.
pub(crate) fn runtime(py: Python<'_>) -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let module = py.import("cpy2py._runtime")?;
    let remote = py.import("cpy2py._remote")?;
    let get = |name: &str| -> PyResult<Py<PyAny>> { Ok(module.getattr(name)?.unbind()) };
    let pypy = py
        .import("sys")?
        .getattr("implementation")?
        .getattr("name")?
        .extract::<String>()?
        == "pypy";
    let rt = Runtime {
        global_name: get("global_name")?,
        resolve: get("resolve")?,
        dumps: get("dumps")?,
        loads: get("loads")?,
        describe_exception: get("describe_exception")?,
        rebuild_exception: get("rebuild_exception")?,
        poll_signals: get("poll_signals")?,
        peer_gone: get("peer_gone")?,
        proxy_ref: get("proxy_ref")?,
        make_proxy: get("make_proxy")?,
        make_remote: remote.getattr("make_remote")?.unbind(),
        describe_type: remote.getattr("describe_type")?.unbind(),
        by_value: remote.getattr("ByValue")?.unbind(),
        // Every hook is required: a failed import fails this call loudly (and
        // the next one tries again) instead of switching TwinObjects off.
        twin_object: py
            .import("cpy2py.twinobject")?
            .getattr("TwinObject")?
            .unbind(),
        proxy_dropped: py
            .import("cpy2py._native")?
            .getattr("proxy_dropped")?
            .unbind(),
        partial: py.import("functools")?.getattr("partial")?.unbind(),
        weakref: py.import("weakref")?.getattr("ref")?.unbind(),
        errors: py.import("cpy2py.errors")?.unbind(),
        packers: if pypy {
            Some((get("pack_numbers")?, get("unpack_numbers")?))
        } else {
            None
        },
        pypy,
    };
    // A concurrent first use may have won the race; either copy is the same.
    let _ = RUNTIME.set(rt);
    Ok(RUNTIME.get().expect("set just above"))
}

/// A map from keys to Python objects that saves a Python call (and on PyPy the
/// C-level objects its arguments need, which cpyext frees only lazily) per
/// lookup. Cleared when full, so that programs that make names or classes on
/// the fly keep a bounded number alive.
struct Cache<K, V> {
    map: Mutex<Option<HashMap<K, V>>>,
}

/// Entries a [`Cache`] holds before it starts over.
const CACHE_LIMIT: usize = 4096;

impl<K: Eq + Hash, V> Cache<K, V> {
    const fn new() -> Self {
        Cache {
            map: Mutex::new(None),
        }
    }

    fn get<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.as_ref().and_then(|m| m.get(key)).map(read)
    }

    fn insert(&self, key: K, value: V) {
        let full = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            let map = map.get_or_insert_with(HashMap::new);
            let full = (map.len() >= CACHE_LIMIT).then(|| std::mem::take(map));
            map.insert(key, value);
            full
        };
        // Dropped unlocked: dropping a Python object may run code that uses
        // this very cache.
        drop(full);
    }
}

/// Globals resolved so far, by module and qualified name (`_runtime.resolve`
/// caches the same way, so nothing changes but the cost).
static RESOLVED: Cache<(String, String), Py<PyAny>> = Cache::new();

/// The object `qualname` names in `module` (see `_runtime.resolve`).
pub(crate) fn resolve_cached(
    py: Python<'_>,
    module: String,
    qualname: String,
) -> PyResult<Bound<'_, PyAny>> {
    let key = (module, qualname);
    if let Some(found) = RESOLVED.get(&key, |f| f.clone_ref(py)) {
        return Ok(found.into_bound(py));
    }
    let found = runtime(py)?
        .resolve
        .bind(py)
        .call1((key.0.as_str(), key.1.as_str()))?;
    RESOLVED.insert(key, found.clone().unbind());
    Ok(found)
}

/// Names found by `_runtime.global_name`, by object address; the entry keeps
/// the object alive, so that the address cannot be reused while cached.
static GLOBAL_NAMES: Cache<usize, (Py<PyAny>, (String, String))> = Cache::new();

/// `_runtime.global_name(obj)`: where `obj` can be found by reference. Only
/// found names are cached, as `_runtime` does: an object may become findable.
pub(crate) fn global_name(obj: &Bound<'_, PyAny>) -> PyResult<Option<(String, String)>> {
    let key = obj.as_ptr() as usize;
    if let Some(found) = GLOBAL_NAMES.get(&key, |(_, name)| name.clone()) {
        return Ok(Some(found));
    }
    let py = obj.py();
    let name: Option<(String, String)> =
        runtime(py)?.global_name.bind(py).call1((obj,))?.extract()?;
    if let Some(name) = &name {
        GLOBAL_NAMES.insert(key, (obj.clone().unbind(), name.clone()));
    }
    Ok(name)
}

/// Attribute and method names as Python strings, made once each.
static NAMES: Cache<String, Py<PyString>> = Cache::new();

/// `name` as a Python string.
pub(crate) fn attr_name(py: Python<'_>, name: String) -> Bound<'_, PyString> {
    if let Some(found) = NAMES.get(&name, |n| n.clone_ref(py)) {
        return found.into_bound(py);
    }
    let made = PyString::intern(py, &name);
    NAMES.insert(name, made.clone().unbind());
    made
}

/// What sending an instance of a type by reference needs to know about it.
pub(crate) struct TypeInfo {
    /// Whether the type is a proxy class (`_runtime.proxy_ref` answers for it).
    pub proxy: bool,
    /// The type's name for native ones: `_runtime.global_name` for a TwinObject
    /// class, its module and qualified name for any other.
    pub class: Option<(String, String)>,
    /// The proxy its instances get elsewhere (for native types).
    pub kind: RefKind,
    /// Whether its instances always travel by reference: proxies and TwinObjects.
    pub by_ref: bool,
}

/// [`TypeInfo`] by type address; the entry keeps the type alive, so that the
/// address cannot be reused by another type while cached.
static TYPES: Cache<usize, (Py<PyType>, std::sync::Arc<TypeInfo>)> = Cache::new();

/// The [`TypeInfo`] of `obj`'s type. A class is a proxy class from its creation
/// on (the metaclass registers it before any instance exists), so the answer
/// for its first instance holds for all.
pub(crate) fn type_info(obj: &Bound<'_, PyAny>) -> PyResult<std::sync::Arc<TypeInfo>> {
    let py = obj.py();
    let ty = obj.get_type();
    let key = ty.as_ptr() as usize;
    if let Some(found) = TYPES.get(&key, |(_, info)| info.clone()) {
        return Ok(found);
    }
    let rt = runtime(py)?;
    let proxy = !rt.proxy_ref.bind(py).call1((obj,))?.is_none();
    let (class, kind) = if proxy {
        (None, RefKind::Twin)
    } else if ty.is_subclass(rt.twin_object.bind(py))? {
        (global_name(ty.as_any())?, RefKind::Twin)
    } else {
        let (methods, hashable, module, qualname): (u64, bool, String, String) =
            rt.describe_type.bind(py).call1((&ty,))?.extract()?;
        (
            Some((module, qualname)),
            RefKind::Generic { methods, hashable },
        )
    };
    let by_ref = proxy || kind == RefKind::Twin;
    let info = std::sync::Arc::new(TypeInfo {
        proxy,
        class,
        kind,
        by_ref,
    });
    TYPES.insert(key, (ty.unbind(), info.clone()));
    Ok(info)
}
