//! Requests from other interpreters, served by calling Python ([`PyHandler`]),
//! and what the kernel tells the glue of peers (releases, retains, a peer lost).

use crate::convert::{Encoder, to_python};
use crate::runtime::{attr_name, resolve_cached, runtime};
use crate::{cancel, errors, objects};
use cpy2py_kernel::{Handler, RequestContext};
use cpy2py_wire::{Op, Outcome, PeerId, RequestId, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Serves requests from other interpreters by calling Python.
pub(crate) struct PyHandler;

impl PyHandler {
    fn run<'py>(py: Python<'py>, ctx: &RequestContext<'_>, op: Op) -> PyResult<Value> {
        let twin = || ctx.kernel.peer_name(ctx.src);
        let args_of = |args: Vec<Value>| -> PyResult<Bound<'_, PyTuple>> {
            let items = args
                .into_iter()
                .map(|v| to_python(py, v, &twin))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)
        };
        let kwargs_of = |kwargs: Vec<(String, Value)>| -> PyResult<Option<Bound<'_, PyDict>>> {
            if kwargs.is_empty() {
                return Ok(None);
            }
            let dict = PyDict::new(py);
            for (k, v) in kwargs {
                dict.set_item(k, to_python(py, v, &twin)?)?;
            }
            Ok(Some(dict))
        };
        // Without arguments there is no tuple to build (on PyPy every tuple made
        // here is a cpyext object, freed only lazily).
        let call = |func: &Bound<'py, PyAny>,
                    args: Vec<Value>,
                    kwargs: Vec<(String, Value)>|
         -> PyResult<Bound<'py, PyAny>> {
            if args.is_empty() && kwargs.is_empty() {
                func.call0()
            } else {
                func.call(args_of(args)?, kwargs_of(kwargs)?.as_ref())
            }
        };
        // The object a GetAttr or CallMethod works on stays referenced in the
        // reply: `proxy.append` is a method of the native list, not of a copy.
        let mut target_of_op: Option<Bound<'py, PyAny>> = None;
        let result = match op {
            Op::CallGlobal {
                module,
                qualname,
                args,
                kwargs,
            } => call(&resolve_cached(py, module, qualname)?, args, kwargs)?,
            Op::CallValue {
                callable,
                args,
                kwargs,
            }
            | Op::Instantiate {
                class: callable,
                args,
                kwargs,
            } => call(
                &to_python(py, callable, &twin)?.into_bound(py),
                args,
                kwargs,
            )?,
            Op::GetAttr { target, name } => {
                let target = to_python(py, target, &twin)?.into_bound(py);
                let value = target.getattr(attr_name(py, name))?;
                target_of_op = Some(target);
                value
            }
            Op::SetAttr {
                target,
                name,
                value,
            } => {
                let target = to_python(py, target, &twin)?.into_bound(py);
                target.setattr(attr_name(py, name), to_python(py, value, &twin)?)?;
                py.None().into_bound(py)
            }
            Op::DelAttr { target, name } => {
                to_python(py, target, &twin)?
                    .into_bound(py)
                    .delattr(attr_name(py, name))?;
                py.None().into_bound(py)
            }
            Op::CallMethod {
                target,
                name,
                args,
                kwargs,
            } => {
                let target = objects::from_ref(py, ctx.kernel, target)?.into_bound(py);
                let value = call(&target.getattr(attr_name(py, name))?, args, kwargs)?;
                target_of_op = Some(target);
                value
            }
        };
        let mut encoder = Encoder::new(ctx.kernel, ctx.src);
        encoder.referenced = target_of_op.map(Bound::unbind);
        let value = encoder.value(&result)?;
        // The reply leaves after this returns: retains go first.
        encoder.send_retains();
        Ok(value)
    }
}

impl Handler for PyHandler {
    fn release(&self, from: PeerId, release: cpy2py_wire::Release) {
        Python::attach(|py| objects::released(py, from, release));
    }

    fn retain(&self, from: PeerId, retain: cpy2py_wire::Retain) {
        Python::attach(|_| objects::retained(from, retain));
    }

    fn peer_lost(&self, peer: PeerId, _reason: &str) {
        Python::attach(|py| {
            objects::peer_lost(peer);
            // Forget cached routes to it (a twin's lookups of other twins).
            let forgotten = runtime(py).and_then(|rt| rt.peer_gone.bind(py).call1((peer.0,)));
            if let Err(e) = forgotten {
                e.write_unraisable(py, None);
            }
        });
    }

    fn run_thread(&self, body: Box<dyn FnOnce() + Send>) {
        // Attaching once and detaching for the thread's life keeps its thread
        // state: each later `Python::attach` is then cheap instead of creating
        // and destroying one per request.
        Python::attach(|py| py.detach(body));
    }

    fn cancel(&self, from: PeerId, id: RequestId) {
        Python::attach(|py| cancel::cancel(py, from, id));
    }

    fn handle(&self, ctx: &RequestContext<'_>, op: Op) -> Outcome {
        Python::attach(|py| {
            let result = cancel::Running::enter(py, ctx.src, ctx.id).and_then(|running| {
                let result = PyHandler::run(py, ctx, op);
                let raised = matches!(&result, Err(e) if cancel::is_cancelled(py, e));
                running.leave(py, raised);
                result
            });
            let outcome = PyHandler::outcome(py, ctx, result);
            #[cfg(PyPy)]
            run_pending_actions_now_and_then(py);
            outcome
        })
    }
}

/// How many requests are served between two runs of PyPy's pending actions.
#[cfg(PyPy)]
const ACTIONS_EVERY: u32 = 64;

/// Requests served since PyPy's pending actions last ran here.
#[cfg(PyPy)]
static SINCE_ACTIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Every [`ACTIONS_EVERY`] requests, lets PyPy run its pending actions. cpyext
/// frees the objects made here through its C API (argument tuples) in such an
/// action, and actions run at a backward jump in bytecode: JIT-compiled code
/// called from C that has none never runs them. A PyPy twin served calls with
/// arguments grew by about 70 bytes per call without this, and not at all with
/// the JIT off (`bench/pypy_memory.py`, `docs/pypy-memory.md`).
#[cfg(PyPy)]
fn run_pending_actions_now_and_then(py: Python<'_>) {
    use std::sync::atomic::Ordering;
    if SINCE_ACTIONS.fetch_add(1, Ordering::Relaxed) + 1 < ACTIONS_EVERY {
        return;
    }
    SINCE_ACTIONS.store(0, Ordering::Relaxed);
    let ran = runtime(py).and_then(|rt| rt.poll_signals.bind(py).call0());
    // A cancel that came as its call returned may surface here: it is spent.
    if let Err(e) = ran {
        if !cancel::is_cancelled(py, &e) {
            e.write_unraisable(py, None);
        }
    }
}

impl PyHandler {
    /// The reply to a request that ended with `result`.
    fn outcome(py: Python<'_>, ctx: &RequestContext<'_>, result: PyResult<Value>) -> Outcome {
        match result {
            Ok(value) => Outcome::Ok(value),
            Err(err) => {
                let encoder = Encoder::new(ctx.kernel, ctx.src);
                let described = errors::describe(py, &err, &encoder);
                encoder.send_retains();
                Outcome::Err(described)
            }
        }
    }
}
