//! Objects that travel by reference: native `TwinObject`s exported to other
//! interpreters, proxies of objects native elsewhere, and the retains and
//! releases that keep a native object alive exactly as long as a proxy of it
//! exists anywhere. The bookkeeping is `cpy2py-proxy`'s; this module binds it
//! to Python objects.
//!
//! Every table is touched only with the GIL held, and no table lock is held
//! while Python code may run (dropping a handle can run `__del__`).

use crate::runtime::runtime;
use cpy2py_kernel::Kernel;
use cpy2py_proxy::{
    Due, ExportTable, ImportTable, Received, ReleaseQueue, RetainBatch, Transfer, WeakProxy,
};
use cpy2py_wire::{ObjectId, ObjectRef, PeerId, RefKind, Release, Retain};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// A `weakref.ref` to a proxy.
pub(crate) struct PyWeak(Py<PyAny>);

impl WeakProxy for PyWeak {
    type Strong = Py<PyAny>;

    fn upgrade(&self) -> Option<Py<PyAny>> {
        // Only called with the GIL held; attaching again is then free.
        Python::attach(|py| {
            let target = self.0.bind(py).call0().ok()?;
            (!target.is_none()).then(|| target.unbind())
        })
    }
}

/// How a proxied object is described when passed on: its class and kind.
type Described = (Option<(String, String)>, RefKind);

#[derive(Default)]
struct Tables {
    exports: Mutex<ExportTable<Py<PyAny>, usize>>,
    imports: Mutex<ImportTable<PyWeak>>,
    /// Class and kind of each proxied object, to describe it when passing it on.
    classes: Mutex<HashMap<(PeerId, ObjectId), Described>>,
    /// Dropped references to send, by `cpy2py-proxy`'s one policy.
    releases: Mutex<ReleaseQueue>,
    /// Whether `releases` may hold something (checked on every call).
    dirty: AtomicBool,
}

static TABLES: OnceLock<Tables> = OnceLock::new();

fn tables() -> &'static Tables {
    TABLES.get_or_init(Tables::default)
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Collects the retains a frame needs before it is sent.
#[derive(Default)]
pub(crate) struct Retains(RetainBatch);

impl Retains {
    /// Sends every collected retain to its owner: call before the frame that
    /// carries the references.
    pub(crate) fn send(&mut self, kernel: &Kernel) {
        for (owner, retain) in self.0.take_all() {
            let objects = retain
                .objects
                .into_iter()
                .map(|(id, n)| (id, retain.for_peer, n))
                .collect();
            if let Err(e) = kernel.send_retain(owner, Retain { objects }) {
                tracing::debug!(owner = owner.0, error = %e, "retain not sent");
            }
        }
    }
}

/// The reference that sends `obj` to `dst` (a `TwinObject`, a proxy, or any
/// other object, which then gets a generic proxy there), counting it in the
/// tables and noting any retain it needs in `retains`.
pub(crate) fn to_ref(
    kernel: &Kernel,
    obj: &Bound<'_, PyAny>,
    dst: PeerId,
    retains: &mut Retains,
) -> PyResult<ObjectRef> {
    let py = obj.py();
    let info = crate::runtime::type_info(obj)?;
    if info.proxy {
        let proxy = obj.getattr(pyo3::intern!(py, "_cpy2py_ref"))?;
        let (owner, id): (u32, u64) = proxy.extract()?;
        let (owner, id) = (PeerId(owner), ObjectId(id));
        let t = tables();
        // A reference going back to its owner is retained for the owner itself
        // too: the owner's reading thread may apply a release sent after this
        // frame before the thread that decodes this frame looks the object up;
        // the decoder drops the owner's own count once it holds the object.
        let transfer = match locked(&t.imports).forward(owner, id, dst) {
            Transfer::ToOwner => Transfer::Retain {
                owner,
                id,
                for_peer: owner,
            },
            other => other,
        };
        retains.0.add(transfer);
        let (class, kind) = locked(&t.classes)
            .get(&(owner, id))
            .cloned()
            .unwrap_or((None, RefKind::Twin));
        return Ok(ObjectRef {
            owner,
            id,
            class,
            kind,
        });
    }
    let key = obj.as_ptr() as usize;
    let id = locked(&tables().exports).export(key, || obj.clone().unbind(), dst);
    Ok(ObjectRef {
        owner: kernel.me(),
        id,
        class: info.class.clone(),
        kind: info.kind,
    })
}

/// The object a reference stands for here: the native object itself if it is
/// ours, else its proxy (the same proxy for as long as it lives).
pub(crate) fn from_ref(py: Python<'_>, kernel: &Kernel, r: ObjectRef) -> PyResult<Py<PyAny>> {
    let t = tables();
    if r.owner == kernel.me() {
        let me = kernel.me();
        let (object, freed) = {
            let mut exports = locked(&t.exports);
            let object = exports.get(r.id).map(|h| h.clone_ref(py));
            // Drop the count its sender retained for us (see `to_ref`); a
            // sender that retained nothing makes this a harmless error.
            (object, exports.release(me, r.id, 1).ok().flatten())
        };
        drop(freed);
        return object.ok_or_else(|| {
            crate::errors::error(
                py,
                "CPy2PyException",
                &format!("object {} of this interpreter no longer exists", r.id.0),
            )
        });
    }
    let received = locked(&t.imports).receive(r.owner, r.id);
    if let Received::Existing(proxy) = received {
        return Ok(proxy);
    }
    let made = (|| -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let rt = runtime(py)?;
        let proxy = match (r.kind, r.class.clone()) {
            (RefKind::Generic { methods, hashable }, class) => {
                let (module, qualname) = class.unwrap_or_default();
                rt.make_remote
                    .bind(py)
                    .call1((module, qualname, methods, hashable, r.owner.0, r.id.0))?
            }
            (RefKind::Twin, Some((module, qualname))) => rt
                .make_proxy
                .bind(py)
                .call1((module, qualname, r.owner.0, r.id.0))?,
            (RefKind::Twin, None) => {
                return Err(crate::errors::error(
                    py,
                    "CPy2PyException",
                    &format!(
                        "received object {} of {} without its class",
                        r.id.0, r.owner
                    ),
                ));
            }
        };
        let callback = rt
            .partial
            .bind(py)
            .call1((rt.proxy_dropped.bind(py), r.owner.0, r.id.0))?;
        let weak = rt.weakref.bind(py).call1((&proxy, callback))?;
        Ok((proxy.unbind(), weak.unbind()))
    })();
    match made {
        Ok((proxy, weak)) => {
            locked(&t.classes).insert((r.owner, r.id), (r.class, r.kind));
            let existing = locked(&t.imports).insert(r.owner, r.id, PyWeak(weak));
            Ok(existing.unwrap_or(proxy))
        }
        Err(e) => {
            if let Some((id, count)) = locked(&t.imports).abandon(r.owner, r.id) {
                let _due = queue_release(r.owner, id, count); // sent with the next call
            }
            Err(e)
        }
    }
}

fn queue_release(owner: PeerId, id: ObjectId, count: u64) -> Due {
    let t = tables();
    let due = locked(&t.releases).add(owner, id, count);
    t.dirty.store(true, Ordering::Release);
    due
}

/// A proxy died: release the references it stood for (batched).
pub(crate) fn proxy_dropped(kernel: Option<&'static Kernel>, owner: PeerId, id: ObjectId) {
    let t = tables();
    let released = locked(&t.imports).proxy_dropped(owner, id);
    locked(&t.classes).remove(&(owner, id));
    if let Some((id, count)) = released {
        let due = queue_release(owner, id, count);
        let Some(kernel) = kernel else { return };
        match due {
            Due::Now => flush(kernel),
            Due::Within(_) => wake_flusher(kernel),
        }
    }
}

static FLUSHER: OnceLock<(Mutex<bool>, Condvar)> = OnceLock::new();

/// Makes sure queued releases are sent within the policy's delay even if no
/// call follows: a thread sleeps until releases are queued, waits for more to
/// batch, and sends them. Needs no GIL.
fn wake_flusher(kernel: &'static Kernel) {
    let mut started = false;
    let (lock, cv) = FLUSHER.get_or_init(|| {
        started = true;
        (Mutex::new(false), Condvar::new())
    });
    if started {
        let spawned = std::thread::Builder::new()
            .name("cpy2py-release".into())
            .spawn(move || {
                let (lock, cv) = FLUSHER.get().expect("initialized before the thread starts");
                loop {
                    let mut pending = locked(lock);
                    while !*pending {
                        pending = cv.wait(pending).unwrap_or_else(PoisonError::into_inner);
                    }
                    *pending = false;
                    drop(pending);
                    let delay = locked(&tables().releases).policy().delay;
                    std::thread::sleep(delay);
                    if kernel.is_stopping() {
                        return;
                    }
                    flush(kernel);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the release thread");
        }
    }
    *locked(lock) = true;
    cv.notify_one();
}

/// Sends every batched release now.
pub(crate) fn flush(kernel: &Kernel) {
    let t = tables();
    if !t.dirty.swap(false, Ordering::AcqRel) {
        return;
    }
    let batches = locked(&t.releases).take_all();
    for (owner, release) in batches {
        if let Err(e) = kernel.send_release(owner, release) {
            tracing::debug!(owner = owner.0, error = %e, "release not sent");
        }
    }
}

/// Applies a peer's release; the freed objects are dropped here, outside the
/// table's lock.
pub(crate) fn released(py: Python<'_>, from: PeerId, release: Release) {
    let result = locked(&tables().exports).release_all(from, &release.objects);
    for e in &result.errors {
        tracing::debug!(peer = from.0, error = ?e, "release refused");
    }
    drop(result.freed);
    let _ = py;
}

/// Applies a peer's retain.
pub(crate) fn retained(from: PeerId, retain: Retain) {
    let mut exports = locked(&tables().exports);
    for (id, holder, count) in retain.objects {
        if let Err(e) = exports.retain(id, holder, count) {
            tracing::debug!(peer = from.0, error = ?e, "retain refused");
        }
    }
}

/// A peer is gone: free what it held and forget its objects.
pub(crate) fn peer_lost(peer: PeerId) {
    let t = tables();
    let freed = locked(&t.exports).peer_lost(peer);
    drop(freed);
    locked(&t.imports).owner_lost(peer);
    locked(&t.releases).owner_lost(peer);
}

/// Number of native objects exported and still referenced elsewhere.
pub(crate) fn exported_count() -> usize {
    locked(&tables().exports).len()
}

/// `(owner, id)` of a proxy, if `obj` is one.
pub(crate) fn proxy_target(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<ObjectRef> {
    let rt = runtime(py)?;
    let r = rt.proxy_ref.bind(py).call1((obj,))?;
    if r.is_none() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{} is not a cpy2py proxy",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    }
    let t: Bound<'_, PyTuple> = r.downcast_into()?;
    let (owner, id): (u32, u64) = t.extract()?;
    let (class, kind) = locked(&tables().classes)
        .get(&(PeerId(owner), ObjectId(id)))
        .cloned()
        .unwrap_or((None, RefKind::Twin));
    Ok(ObjectRef {
        owner: PeerId(owner),
        id: ObjectId(id),
        class,
        kind,
    })
}
