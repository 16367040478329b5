//! Interrupting a request that runs here when its requester cancels it.
//!
//! While a request's Python code runs, its thread is noted ([`Running`]). A
//! cancel for it schedules `cpy2py.errors.CallCancelled` in that thread as an
//! asynchronous exception, raised at its next bytecode boundary
//! (`PyThreadState_SetAsyncExc`; on PyPy `__pypy__.thread._raise_in_thread`).
//! Code blocked in C (a sleep, a lock) sees it when it returns to Python.
//!
//! One scheduled just as the request's code returned must not hit whatever the
//! thread runs next: CPython withdraws it; PyPy cannot, so the thread runs
//! bytecode until it is raised (for at most 100 ms). A cancel that
//! arrives before its request starts is remembered (the last [`EARLY_KEPT`]),
//! and the request then fails without running.
//!
//! Lock order: the interpreter's lock, then [`STATE`]. A thread holding the
//! interpreter's lock waits for [`STATE`] only with that lock released, so a
//! canceller inside Python (PyPy may switch threads there) cannot deadlock it.

use crate::runtime::runtime;
use cpy2py_wire::{PeerId, RequestId};
use pyo3::prelude::*;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};

/// Cancels remembered for requests that had not started.
const EARLY_KEPT: usize = 64;

/// How long a PyPy thread runs bytecode to take a late cancel's exception.
#[cfg(PyPy)]
const ABSORB_LIMIT: f64 = 0.1;

type Key = (PeerId, RequestId);

/// A running request's thread, and whether a cancel was scheduled in it.
struct Entry {
    key: Key,
    thread: u64,
    scheduled: bool,
}

#[derive(Default)]
struct State {
    /// As many as threads run requests: a scan beats hashing per request.
    running: Vec<Entry>,
    early: VecDeque<Key>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Locks [`STATE`], releasing the interpreter's lock only if it must wait.
fn state(py: Python<'_>) -> MutexGuard<'static, Option<State>> {
    loop {
        match STATE.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(e)) => return e.into_inner(),
            // Wait until it is free without the interpreter's lock, then try
            // again with it.
            Err(TryLockError::WouldBlock) => py.detach(|| drop(STATE.lock())),
        }
    }
}

thread_local! {
    /// This thread's Python thread id, once asked for.
    static IDENT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn thread_ident(py: Python<'_>) -> PyResult<u64> {
    if let Some(ident) = IDENT.get() {
        return Ok(ident);
    }
    static GET_IDENT: OnceLock<Py<PyAny>> = OnceLock::new();
    let get_ident = match GET_IDENT.get() {
        Some(f) => f,
        None => {
            let f = py.import("_thread")?.getattr("get_ident")?.unbind();
            GET_IDENT.get_or_init(|| f)
        }
    };
    let ident: u64 = get_ident.call0(py)?.extract(py)?;
    IDENT.set(Some(ident));
    Ok(ident)
}

/// A request whose Python code runs on this thread: a cancel for it raises
/// there until [`Running::leave`].
pub(crate) struct Running {
    key: Key,
    thread: u64,
}

impl Running {
    /// Notes that request `id` from `src` runs on this thread. Raises
    /// `CallCancelled` if its requester cancelled it already.
    pub(crate) fn enter(py: Python<'_>, src: PeerId, id: RequestId) -> PyResult<Running> {
        let thread = thread_ident(py)?;
        let key = (src, id);
        let cancelled_early = {
            let mut guard = state(py);
            let state = guard.get_or_insert_with(State::default);
            match state.early.iter().position(|k| *k == key) {
                Some(at) => {
                    state.early.remove(at);
                    true
                }
                None => {
                    state.running.push(Entry {
                        key,
                        thread,
                        scheduled: false,
                    });
                    false
                }
            }
        };
        if cancelled_early {
            return Err(cancelled(py, "its caller cancelled it before it started"));
        }
        Ok(Running { key, thread })
    }

    /// The request's code has returned (`raised`: with `CallCancelled`, the
    /// cancel's exception taken). A cancel scheduled and not raised is
    /// withdrawn here.
    pub(crate) fn leave(self, py: Python<'_>, raised: bool) {
        let scheduled = {
            let mut guard = state(py);
            guard.as_mut().is_some_and(|s| {
                match s.running.iter().rposition(|e| e.key == self.key) {
                    Some(at) => s.running.swap_remove(at).scheduled,
                    None => false,
                }
            })
        };
        if scheduled && !raised {
            withdraw(py, self.thread);
        }
    }
}

/// The exception a cancelled request raises, with `message`.
fn cancelled(py: Python<'_>, message: &str) -> PyErr {
    match runtime(py).and_then(|rt| rt.errors.bind(py).getattr("CallCancelled")) {
        Ok(class) => match class.call1((message,)) {
            Ok(error) => PyErr::from_value(error),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// Whether `error` is a `CallCancelled`.
pub(crate) fn is_cancelled(py: Python<'_>, error: &PyErr) -> bool {
    runtime(py)
        .and_then(|rt| rt.errors.bind(py).getattr("CallCancelled"))
        .is_ok_and(|class| error.get_type(py).is_subclass(&class).unwrap_or(false))
}

/// Request `id` from `src` is cancelled: raise in its thread if it runs,
/// remember it if it has not started.
pub(crate) fn cancel(py: Python<'_>, src: PeerId, id: RequestId) {
    let key = (src, id);
    let mut guard = state(py);
    let state = guard.get_or_insert_with(State::default);
    match state.running.iter_mut().find(|e| e.key == key) {
        Some(entry) if entry.scheduled => {}
        Some(entry) => {
            // Under the lock: `leave` cannot withdraw before it is scheduled.
            match schedule(py, entry.thread) {
                Ok(()) => entry.scheduled = true,
                Err(e) => e.write_unraisable(py, None),
            }
        }
        None => {
            if state.early.len() >= EARLY_KEPT {
                state.early.pop_front();
            }
            state.early.push_back(key);
        }
    }
}

/// Schedules `CallCancelled` in Python thread `thread`.
#[cfg(not(PyPy))]
fn schedule(py: Python<'_>, thread: u64) -> PyResult<()> {
    let class = runtime(py)?.errors.bind(py).getattr("CallCancelled")?;
    // SAFETY: the caller holds the interpreter's lock (`py`) and `class` is a
    // live type object, borrowed: the function takes its own reference. A
    // thread that no longer runs makes it return 0, which is no error here.
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(thread as std::os::raw::c_long, class.as_ptr());
    }
    Ok(())
}

/// Schedules `CallCancelled` in Python thread `thread` (PyPy's C API has the
/// function, but PyO3 does not declare it; `__pypy__` has the same).
#[cfg(PyPy)]
fn schedule(py: Python<'_>, thread: u64) -> PyResult<()> {
    let class = runtime(py)?.errors.bind(py).getattr("CallCancelled")?;
    py.import("__pypy__.thread")?
        .getattr("_raise_in_thread")?
        .call1((thread, class))?;
    Ok(())
}

/// Takes back a cancel's exception scheduled in `thread` (this thread) and not
/// raised.
#[cfg(not(PyPy))]
fn withdraw(_py: Python<'_>, thread: u64) {
    // SAFETY: as in `schedule`; a null exception clears a pending one.
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(thread as std::os::raw::c_long, std::ptr::null_mut());
    }
}

/// Takes back a cancel's exception scheduled in this thread and not raised:
/// PyPy 7.3 cannot clear one, so run bytecode until it is raised.
#[cfg(PyPy)]
fn withdraw(py: Python<'_>, _thread: u64) {
    let absorbed = runtime(py).and_then(|rt| {
        py.import("cpy2py._runtime")?
            .getattr("absorb_cancel")?
            .call1((rt.errors.bind(py).getattr("CallCancelled")?, ABSORB_LIMIT))
    });
    if let Err(e) = absorbed {
        e.write_unraisable(py, None);
    }
}
