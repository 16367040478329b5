//! Calls that do not block the caller: the request leaves before the function
//! returns, and its outcome goes to a Python callable later.
//!
//! The kernel hands an outcome to whichever thread read the reply (the poll
//! thread, or a thread waiting for a call of its own). Converting it and
//! running the callable there would run user code (unpickling, a future's
//! done-callbacks) on a thread the kernel needs for reading, so the outcome
//! goes to one completion thread per process, which does both.

use crate::convert::Encoder;
use crate::{call_op, describe_callable, kernel, objects, outcome_to_python, prepare};
use cpy2py_kernel::{CallError, Kernel};
use cpy2py_wire::{Op, Outcome, PeerId, RequestId};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};
use std::time::Instant;

/// Names a call in its errors; described only when one needs it.
enum What {
    /// A call of this callable.
    Callable(Py<PyAny>),
    /// A call of this method.
    Method(String),
}

impl What {
    fn describe(&self, py: Python<'_>) -> String {
        match self {
            What::Callable(func) => describe_callable(func.bind(py)),
            What::Method(name) => format!("call of method {name}"),
        }
    }
}

/// An outcome on its way to its callable.
struct Done {
    kernel: &'static Kernel,
    dst: PeerId,
    what: What,
    result: Result<Outcome, CallError>,
    on_done: Py<PyAny>,
}

/// The completion thread's queue, the thread started on first use.
fn completions() -> &'static Sender<Done> {
    static QUEUE: OnceLock<Sender<Done>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (queue, outcomes) = channel::<Done>();
        let spawned = std::thread::Builder::new()
            .name("cpy2py-completions".into())
            .spawn(move || {
                // Attached once and detached while it waits, the thread keeps
                // one interpreter thread state (attaching afresh would create
                // and destroy one per outcome). Outcomes that queued up while
                // it delivered go in one attach.
                Python::attach(move |py| {
                    py.detach(move || {
                        while let Ok(first) = outcomes.recv() {
                            Python::attach(|py| {
                                deliver(py, first);
                                while let Ok(next) = outcomes.try_recv() {
                                    deliver(py, next);
                                }
                            });
                        }
                    })
                })
            });
        if let Err(e) = spawned {
            // Sends then fail and each call reports it (see `submit`).
            tracing::error!(error = %e, "the completion thread did not start");
        }
        queue
    })
}

/// Calls `on_done(True, value)` or `on_done(False, exception)`.
fn deliver(py: Python<'_>, done: Done) {
    let Done {
        kernel,
        dst,
        what,
        result,
        on_done,
    } = done;
    let called = match outcome_to_python(py, kernel, dst, result, &|| what.describe(py)) {
        Ok(value) => on_done.call1(py, (true, value)),
        Err(error) => on_done.call1(py, (false, error.into_value(py))),
    };
    if let Err(error) = called {
        // Nobody is there to raise it to: say so, as Python does for an error
        // in a callback it cannot propagate.
        error.write_unraisable(py, Some(on_done.bind(py)));
    }
}

/// What names a request sent without waiting, for [`cancel`]: its
/// destination peer and its id's index and generation.
type Handle = (u32, u32, u32);

/// Sends the request `build` makes to `dst`; `on_done` receives its outcome on
/// the completion thread. `what` names the call for the outcome's errors,
/// `described` for a failure to send it.
fn submit(
    py: Python<'_>,
    dst: PeerId,
    what: What,
    described: impl FnOnce() -> String,
    on_done: Py<PyAny>,
    build: impl FnOnce(&Encoder<'_>) -> PyResult<Op>,
) -> PyResult<Handle> {
    let kernel = kernel(py)?;
    let op = prepare(kernel, dst, build)?;
    let queue = completions().clone();
    let callback = Box::new(move |result| {
        let done = Done {
            kernel,
            dst,
            what,
            result,
            on_done,
        };
        if let Err(lost) = queue.send(done) {
            tracing::error!("no completion thread: an outcome is lost");
            // Dropped without the GIL: PyO3 defers the decref.
            drop(lost);
        }
    });
    // The request's values were encoded above; sending needs no GIL.
    py.detach(|| kernel.submit_with_callback(dst, op, None, callback))
        .map(|id| (dst.0, id.index, id.generation))
        .map_err(|e| crate::errors::call_error(py, e, &described()))
}

/// Cancels the request `handle` names (from [`call_async`]): its destination
/// interrupts it if it still runs (raising `cpy2py.errors.CallCancelled`
/// there); its outcome still reaches its `on_done`. A request that has
/// finished, or a destination that is gone, makes this do nothing.
#[pyfunction]
pub(crate) fn cancel(py: Python<'_>, handle: Handle) -> PyResult<()> {
    let (peer, index, generation) = handle;
    let kernel = kernel(py)?;
    let id = RequestId { index, generation };
    // Gone or stopping: there is nothing left to interrupt.
    let _ = py.detach(|| kernel.cancel(PeerId(peer), id));
    Ok(())
}

/// Seconds left until the deadline of the request this thread serves, or
/// `None` if it has none (or this thread serves none).
#[pyfunction]
pub(crate) fn time_left() -> Option<f64> {
    cpy2py_kernel::current_deadline()
        .map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64())
}

/// Runs `func(*args, **kwargs)` in peer `peer` without waiting:
/// `on_done(ok, value_or_exception)` is called on the completion thread.
#[pyfunction]
#[pyo3(signature = (peer, on_done, func, args, kwargs=None))]
pub(crate) fn call_async(
    py: Python<'_>,
    peer: u32,
    on_done: Py<PyAny>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Handle> {
    submit(
        py,
        PeerId(peer),
        What::Callable(func.clone().unbind()),
        || describe_callable(func),
        on_done,
        |encoder| call_op(encoder, func, args, kwargs),
    )
}

/// Calls method `name` of the object behind `proxy` without waiting, as
/// [`call_async`] does.
#[pyfunction]
#[pyo3(signature = (on_done, proxy, name, args, kwargs=None))]
pub(crate) fn call_method_async(
    py: Python<'_>,
    on_done: Py<PyAny>,
    proxy: &Bound<'_, PyAny>,
    name: String,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Handle> {
    let target = objects::proxy_target(py, proxy)?;
    let what = What::Method(name.clone());
    let described = || What::Method(name.clone()).describe(py);
    submit(py, target.owner, what, described, on_done, |encoder| {
        Ok(Op::CallMethod {
            target: target.clone(),
            name: name.clone(),
            args: encoder.values(args.iter())?,
            kwargs: encoder.kwargs(kwargs)?,
        })
    })
}
