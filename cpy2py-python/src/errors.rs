//! The one place where kernel errors and remote errors become Python
//! exceptions (classes defined in `cpy2py.errors`).

use crate::convert::Encoder;
use crate::runtime::runtime;
use cpy2py_kernel::{CallError, KernelError};
use cpy2py_wire::{Bytes, RemoteError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// An instance of `cpy2py.errors.<class>` with `message`.
pub(crate) fn error(py: Python<'_>, class: &str, message: &str) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let cls = runtime(py)?.errors.bind(py).getattr(class)?;
        Ok(PyErr::from_value(cls.call1((message,))?))
    };
    make().unwrap_or_else(|e| e)
}

/// Maps a failed call.
pub(crate) fn call_error(py: Python<'_>, err: CallError, what: &str) -> PyErr {
    match err {
        CallError::PeerLost {
            twin_id, reason, ..
        } => error(
            py,
            "TwinterpeterTerminated",
            &format!("twinterpreter {twin_id:?} terminated ({reason}) during {what}"),
        ),
        CallError::UnknownPeer(peer) => error(
            py,
            "TwinterpeterUnavailable",
            &format!("no twinterpreter {peer} is running (for {what})"),
        ),
        CallError::Encode(reason) => error(py, "CPy2PyException", &format!("{what}: {reason}")),
        CallError::Timeout => error(
            py,
            "TwinterpreterTimeout",
            &format!("{what} did not complete within its timeout"),
        ),
        CallError::ShuttingDown => error(
            py,
            "TwinterpeterUnavailable",
            &format!("cpy2py is shutting down (during {what})"),
        ),
        other => error(py, "CPy2PyException", &format!("{what}: {other}")),
    }
}

/// Maps a failed start or connection.
///
/// A twin that ended during its start gives the exception `exit_code` (None
/// when killed) and `stderr` attributes, for callers that explain them (what
/// an `ssh` client's status 255 means, say).
pub(crate) fn kernel_error(py: Python<'_>, err: KernelError) -> PyErr {
    match err {
        KernelError::NotATwin(reason) => PyRuntimeError::new_err(reason),
        KernelError::ExitedEarly {
            code, ref stderr, ..
        } => {
            let exc = error(py, "TwinterpeterUnavailable", &err.to_string());
            let value = exc.value(py);
            let _ = value.setattr("exit_code", code);
            let _ = value.setattr("stderr", stderr);
            exc
        }
        other => error(py, "TwinterpeterUnavailable", &other.to_string()),
    }
}

/// Rebuilds a remote exception raised in `twin`.
pub(crate) fn rebuild<'py>(
    py: Python<'py>,
    err: RemoteError,
    twin: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let pickled = err.pickle.as_ref().map(|b| PyBytes::new(py, b));
    let references = match (err.refs.is_empty(), crate::kernel_opt()) {
        (true, _) | (_, None) => None,
        (false, Some(kernel)) => Some(PyList::new(
            py,
            err.refs
                .into_iter()
                .map(|r| crate::objects::from_ref(py, kernel, r))
                .collect::<PyResult<Vec<_>>>()?,
        )?),
    };
    runtime(py)?.rebuild_exception.bind(py).call1((
        err.type_path,
        err.message,
        err.traceback,
        pickled,
        twin,
        references,
    ))
}

/// Describes a Python exception for the wire, for the peer `encoder` sends to
/// (TwinObjects inside it travel by reference).
pub(crate) fn describe(py: Python<'_>, err: &PyErr, encoder: &Encoder<'_>) -> RemoteError {
    // `into_value` attaches the traceback, which `value` alone may lack.
    let value = err.clone_ref(py).into_value(py).into_bound(py);
    let described = runtime(py).and_then(|rt| {
        let t = rt
            .describe_exception
            .bind(py)
            .call1((&value, encoder.protocol))?;
        let t = t.downcast::<PyTuple>()?;
        let pickled = t.get_item(3)?;
        let (pickle, refs) = if pickled.is_none() {
            (None, Vec::new())
        } else if let Ok(pair) = pickled.downcast::<PyTuple>() {
            let data: Vec<u8> = pair.get_item(0)?.extract()?;
            let mut refs = Vec::new();
            for obj in pair.get_item(1)?.try_iter()? {
                let obj = obj?;
                refs.push(crate::objects::to_ref(
                    encoder.kernel,
                    &obj,
                    encoder.dst,
                    &mut encoder.retains.borrow_mut(),
                )?);
            }
            (Some(Bytes::from(data)), refs)
        } else {
            (Some(Bytes::from(pickled.extract::<Vec<u8>>()?)), Vec::new())
        };
        Ok(RemoteError {
            type_path: t.get_item(0)?.extract()?,
            message: t.get_item(1)?.extract()?,
            traceback: t.get_item(2)?.extract()?,
            pickle,
            refs,
        })
    });
    described.unwrap_or_else(|e| RemoteError {
        refs: Vec::new(),
        type_path: "builtins.Exception".into(),
        message: format!("{value} (and describing it failed: {e})"),
        traceback: String::new(),
        pickle: None,
    })
}
