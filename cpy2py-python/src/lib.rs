//! `cpy2py._native`: the Python face of the cpy2py kernel.
//!
//! This crate only translates: Python objects to and from [`cpy2py_wire::Value`]
//! (with the package's pickler as fallback), kernel errors to the exceptions of
//! `cpy2py.errors`, and kernel requests to Python calls (`handler.rs`).
//! Protocol logic lives in `cpy2py-kernel`; Python policy (naming, pickling,
//! exception formatting) in the package's `_runtime` module. Users import
//! `cpy2py`, never this module.

mod buffers;
mod cancel;
mod convert;
mod errors;
mod futures;
mod handler;
mod objects;
mod runtime;

use crate::convert::{Encoder, to_python};
use crate::handler::PyHandler;
use crate::runtime::runtime;
use cpy2py_kernel::{CallError, Kernel, KernelConfig, LocalInfo, PendingCall, TwinEnv, TwinSpec};
use cpy2py_wire::{Op, Outcome, PeerId, Value};
use pyo3::exceptions::{PyKeyError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The process's kernel: master or twin, set once.
static KERNEL: OnceLock<Kernel> = OnceLock::new();

/// How long a blocked call sleeps between checks for signals (Ctrl-C).
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// The process's kernel, if it runs.
pub(crate) fn kernel_opt() -> Option<&'static Kernel> {
    KERNEL.get()
}

pub(crate) fn kernel(py: Python<'_>) -> PyResult<&'static Kernel> {
    KERNEL.get().ok_or_else(|| {
        errors::error(
            py,
            "TwinterpeterUnavailable",
            "cpy2py is not running in this process (no twin started)",
        )
    })
}

fn local_info(py: Python<'_>, name: String) -> PyResult<LocalInfo> {
    let platform = py.import("platform")?;
    let interpreter: String = platform.call_method0("python_implementation")?.extract()?;
    let version: String = platform.call_method0("python_version")?.extract()?;
    let pickle_protocol: u8 = py
        .import("pickle")?
        .getattr("HIGHEST_PROTOCOL")?
        .extract()?;
    Ok(LocalInfo {
        name,
        interpreter,
        version,
        pickle_protocol,
    })
}

/// Makes sure the interpreter's GIL exists before kernel threads attach to it:
/// PyPy creates it only when the first Python thread starts, and aborts if a
/// foreign thread tries to take it before.
fn ensure_threads(py: Python<'_>) -> PyResult<()> {
    let thread = py.import("threading")?.getattr("Thread")?.call0()?;
    thread.call_method0("start")?;
    thread.call_method0("join")?;
    Ok(())
}

/// Environment variable: MiB of shared memory this process offers each local
/// peer for large buffers (`KernelConfig::arena_size`); 0 turns arenas off.
const ARENA_MIB_ENV: &str = "CPY2PY_ARENA_MIB";

/// The kernel's configuration, with what the environment sets.
fn kernel_config() -> KernelConfig {
    let mut config = KernelConfig::default();
    if let Some(mib) = std::env::var(ARENA_MIB_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        config.arena_size = mib << 20;
    }
    config
}

/// Starts this process's kernel as the master, named `master_id` (idempotent).
#[pyfunction]
fn init_master(py: Python<'_>, master_id: String) -> PyResult<()> {
    if let Some(k) = KERNEL.get() {
        if k.role() == cpy2py_kernel::Role::Twin {
            return Err(PyRuntimeError::new_err(
                "this process is a twin; only the master starts twins",
            ));
        }
        return Ok(());
    }
    let local = local_info(py, master_id)?;
    ensure_threads(py)?;
    let kernel = py
        .detach(|| Kernel::start_master(local, kernel_config(), Arc::new(PyHandler)))
        .map_err(|e| errors::kernel_error(py, e))?;
    if KERNEL.set(kernel.clone()).is_err() {
        // Another thread started one first: keep theirs.
        kernel.shutdown(Duration::ZERO);
    }
    Ok(())
}

/// Whether this process's kernel runs.
#[pyfunction]
fn is_initialized() -> bool {
    KERNEL.get().is_some()
}

/// Starts `executable *args` as twin `twin_id`; returns its peer number.
///
/// With `stdio`, the child's stdin and stdout carry the stream (a command that
/// runs the twin elsewhere, which needs the variables of `stdio_twin_env`) and
/// `location` says where it runs, for messages.
#[pyfunction]
#[pyo3(signature = (twin_id, executable, args, env, cwd, startup_timeout, stdio=false, location=None))]
#[allow(clippy::too_many_arguments)]
fn spawn(
    py: Python<'_>,
    twin_id: String,
    executable: String,
    args: Vec<String>,
    env: HashMap<String, String>,
    cwd: Option<String>,
    startup_timeout: f64,
    stdio: bool,
    location: Option<String>,
) -> PyResult<u32> {
    let kernel = kernel(py)?;
    let mut spec = TwinSpec {
        executable: executable.into(),
        twin_id,
        args: args.into_iter().map(Into::into).collect(),
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        cwd: cwd.map(Into::into),
        startup_timeout: Some(Duration::from_secs_f64(startup_timeout.max(0.0))),
        ..TwinSpec::python(String::new(), String::new())
    };
    if stdio {
        spec.channel = cpy2py_kernel::Channel::Stdio;
        spec.location = location;
    }
    let info = py
        .detach(|| kernel.spawn(spec))
        .map_err(|e| errors::kernel_error(py, e))?;
    Ok(info.peer.0)
}

/// The environment a twin started with `spawn(..., stdio=True)` needs at the
/// far end, where this process's kernel cannot set it.
#[pyfunction]
fn stdio_twin_env(py: Python<'_>, twin_id: &str) -> PyResult<HashMap<&'static str, String>> {
    let kernel = kernel(py)?;
    Ok(TwinEnv::stdio_vars(twin_id, kernel.name())
        .into_iter()
        .collect())
}

/// Places of this process's shared-memory arena for `peer` that the peer
/// holds (buffers handed over and not given back yet): for tests.
#[pyfunction]
fn arena_places_out(peer: u32) -> usize {
    KERNEL.get().map_or(0, |k| k.arena_places_out(PeerId(peer)))
}

/// Stops twin `peer` (kill after `grace` seconds); returns how it ended.
#[pyfunction]
fn stop(py: Python<'_>, peer: u32, grace: f64) -> PyResult<String> {
    let kernel = kernel(py)?;
    let grace = Duration::from_secs_f64(grace.max(0.0));
    py.detach(|| kernel.stop_twin(PeerId(peer), grace))
        .map_err(|e| match e {
            cpy2py_kernel::KernelError::UnknownPeer(p) => {
                PyKeyError::new_err(format!("unknown twin {p}"))
            }
            other => errors::kernel_error(py, other),
        })
}

/// Whether twin `peer` is connected and running.
#[pyfunction]
fn is_alive(py: Python<'_>, peer: u32) -> bool {
    KERNEL
        .get()
        .is_some_and(|k| py.detach(|| k.is_alive(PeerId(peer))))
}

/// Whether twin `peer` is connected (cheaper than `is_alive`: no system call).
#[pyfunction]
fn is_connected(peer: u32) -> bool {
    KERNEL.get().is_some_and(|k| k.is_connected(PeerId(peer)))
}

/// How twin `peer` ended, or None while it runs.
#[pyfunction]
fn exit_status(py: Python<'_>, peer: u32) -> PyResult<Option<String>> {
    let kernel = kernel(py)?;
    if py.detach(|| kernel.is_alive(PeerId(peer))) {
        return Ok(None);
    }
    Ok(kernel.peer_gone(PeerId(peer)).map(|(_, reason)| reason))
}

/// Process id of twin `peer`.
#[pyfunction]
fn twin_pid(py: Python<'_>, peer: u32) -> PyResult<u32> {
    kernel(py)?
        .peer_info(PeerId(peer))
        .map(|i| i.pid)
        .ok_or_else(|| PyKeyError::new_err(format!("no twin peer#{peer} is connected")))
}

/// `(twin_id, interpreter, version)` of twin `peer`.
#[pyfunction]
fn peer_info(py: Python<'_>, peer: u32) -> PyResult<(String, String, String)> {
    kernel(py)?
        .peer_info(PeerId(peer))
        .map(|i| (i.twin_id, i.interpreter, i.version))
        .ok_or_else(|| PyKeyError::new_err(format!("no twin peer#{peer} is connected")))
}

pub(crate) fn describe_callable(func: &Bound<'_, PyAny>) -> String {
    let name = func
        .getattr("__qualname__")
        .or_else(|_| func.getattr("__name__"))
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "<callable>".into());
    format!("call of {name}")
}

/// Runs `func(*args, **kwargs)` in peer `peer`.
#[pyfunction]
#[pyo3(signature = (peer, func, args, kwargs=None, timeout=None))]
fn call(
    py: Python<'_>,
    peer: u32,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let kernel = kernel(py)?;
    let what = || describe_callable(func);
    request(py, kernel, PeerId(peer), timeout, &what, |encoder| {
        call_op(encoder, func, args, kwargs)
    })
}

/// The request to run `func(*args, **kwargs)` where `encoder` sends it.
pub(crate) fn call_op(
    encoder: &Encoder<'_>,
    func: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Op> {
    let name = crate::runtime::global_name(func)?;
    let args = encoder.values(args.iter())?;
    let kwargs = encoder.kwargs(kwargs)?;
    Ok(match name {
        // By value (or a proxy's reference): a function that went by
        // reference would run here, not in the twin.
        None => Op::CallValue {
            callable: encoder.value(
                &runtime(func.py())?
                    .by_value
                    .bind(func.py())
                    .call1((func,))?,
            )?,
            args,
            kwargs,
        },
        Some((module, qualname)) => Op::CallGlobal {
            module,
            qualname,
            args,
            kwargs,
        },
    })
}

/// Sends the request `build` makes to `dst` (after the retains its values
/// need), waits for the outcome and converts it; `what` names the call in
/// errors.
fn request(
    py: Python<'_>,
    kernel: &Kernel,
    dst: PeerId,
    timeout: Option<f64>,
    what: &dyn Fn() -> String,
    build: impl FnOnce(&Encoder<'_>) -> PyResult<Op>,
) -> PyResult<Py<PyAny>> {
    let op = prepare(kernel, dst, build)?;
    let result = wait_for(py, kernel, dst, op, timeout)?;
    outcome_to_python(py, kernel, dst, result, what)
}

/// The request `build` makes for `dst`, with the retains its values need sent
/// ahead of it.
pub(crate) fn prepare(
    kernel: &Kernel,
    dst: PeerId,
    build: impl FnOnce(&Encoder<'_>) -> PyResult<Op>,
) -> PyResult<Op> {
    objects::flush(kernel);
    let encoder = Encoder::new(kernel, dst);
    let op = build(&encoder)?;
    encoder.send_retains();
    Ok(op)
}

/// What a call to `dst` returned, as Python sees it: its value, or the
/// exception to raise; `what` names the call in errors.
pub(crate) fn outcome_to_python(
    py: Python<'_>,
    kernel: &Kernel,
    dst: PeerId,
    result: Result<Outcome, CallError>,
    what: &dyn Fn() -> String,
) -> PyResult<Py<PyAny>> {
    let outcome = result.map_err(|e| errors::call_error(py, e, &what()))?;
    let twin = || kernel.peer_name(dst);
    match outcome {
        Outcome::Ok(value) => to_python(py, value, &twin),
        Outcome::Err(err) => Err(PyErr::from_value(errors::rebuild(py, err, &twin())?)),
        // The kernel turns these into errors before they reach here.
        Outcome::Failed(failure) => Err(errors::call_error(py, failure.into(), &what())),
    }
}

/// Creates `cls(*args, **kwargs)` in peer `peer`; returns its proxy.
#[pyfunction]
#[pyo3(signature = (peer, cls, args, kwargs=None))]
fn instantiate(
    py: Python<'_>,
    peer: u32,
    cls: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let kernel = kernel(py)?;
    let name = crate::runtime::global_name(cls)?;
    let what = || {
        format!(
            "creation of a {}",
            describe_callable(cls).trim_start_matches("call of ")
        )
    };
    request(py, kernel, PeerId(peer), None, &what, |encoder| {
        let class = match name {
            None => encoder.value(cls)?,
            Some((module, qualname)) => Value::Global { module, qualname },
        };
        Ok(Op::Instantiate {
            class,
            args: encoder.values(args.iter())?,
            kwargs: encoder.kwargs(kwargs)?,
        })
    })
}

/// Calls method `name` of the object behind `proxy`, where it lives.
#[pyfunction]
#[pyo3(signature = (proxy, name, args, kwargs=None))]
fn call_method(
    py: Python<'_>,
    proxy: &Bound<'_, PyAny>,
    name: String,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let kernel = kernel(py)?;
    let target = objects::proxy_target(py, proxy)?;
    let what = || format!("call of method {name}");
    request(py, kernel, target.owner, None, &what, |encoder| {
        Ok(Op::CallMethod {
            target: target.clone(),
            name: name.clone(),
            args: encoder.values(args.iter())?,
            kwargs: encoder.kwargs(kwargs)?,
        })
    })
}

/// Reads attribute `name` of the object behind `proxy`.
#[pyfunction]
fn get_attr(py: Python<'_>, proxy: &Bound<'_, PyAny>, name: String) -> PyResult<Py<PyAny>> {
    let kernel = kernel(py)?;
    let target = objects::proxy_target(py, proxy)?;
    let what = || format!("read of attribute {name}");
    request(py, kernel, target.owner, None, &what, |_| {
        Ok(Op::GetAttr {
            target: Value::Ref(target.clone()),
            name: name.clone(),
        })
    })
}

/// Writes attribute `name` of the object behind `proxy`.
#[pyfunction]
fn set_attr(
    py: Python<'_>,
    proxy: &Bound<'_, PyAny>,
    name: String,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let kernel = kernel(py)?;
    let target = objects::proxy_target(py, proxy)?;
    let what = || format!("write of attribute {name}");
    request(py, kernel, target.owner, None, &what, |encoder| {
        Ok(Op::SetAttr {
            target: Value::Ref(target.clone()),
            name: name.clone(),
            value: encoder.value(value)?,
        })
    })?;
    Ok(())
}

/// Deletes attribute `name` of the object behind `proxy`.
#[pyfunction]
fn del_attr(py: Python<'_>, proxy: &Bound<'_, PyAny>, name: String) -> PyResult<()> {
    let kernel = kernel(py)?;
    let target = objects::proxy_target(py, proxy)?;
    let what = || format!("deletion of attribute {name}");
    request(py, kernel, target.owner, None, &what, |_| {
        Ok(Op::DelAttr {
            target: Value::Ref(target.clone()),
            name: name.clone(),
        })
    })?;
    Ok(())
}

/// Calls function `name` served by a Rust host (the master, when it is one).
#[pyfunction]
#[pyo3(signature = (name, args, kwargs=None))]
fn call_host(
    py: Python<'_>,
    name: String,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let kernel = kernel(py)?;
    let what = || format!("host function {name}");
    request(py, kernel, PeerId::MASTER, None, &what, |encoder| {
        Ok(Op::CallGlobal {
            module: "__host__".into(),
            qualname: name.clone(),
            args: encoder.values(args.iter())?,
            kwargs: encoder.kwargs(kwargs)?,
        })
    })
}

/// Weak-reference callback of a proxy: releases what it stood for (batched).
#[pyfunction]
#[pyo3(signature = (owner, object_id, _weakref=None))]
fn proxy_dropped(owner: u32, object_id: u64, _weakref: Option<&Bound<'_, PyAny>>) {
    objects::proxy_dropped(
        KERNEL.get(),
        PeerId(owner),
        cpy2py_wire::ObjectId(object_id),
    );
}

/// Sends the batched releases now.
#[pyfunction]
fn flush_releases() {
    if let Some(kernel) = KERNEL.get() {
        objects::flush(kernel);
    }
}

/// Native objects of this process that other interpreters still reference.
#[pyfunction]
fn exported_count() -> usize {
    objects::exported_count()
}

/// Sends `op` and waits for its outcome with the GIL released, waking every
/// [`SIGNAL_SLICE`] to let Python handle signals: an exception from a signal
/// handler (Ctrl-C) abandons the call and propagates. `timeout` travels with
/// the request as its deadline; a call made while serving a request with a
/// sooner deadline gets that one.
fn wait_for(
    py: Python<'_>,
    kernel: &Kernel,
    dst: PeerId,
    op: Op,
    timeout: Option<f64>,
) -> PyResult<Result<Outcome, CallError>> {
    // A timeout too large for a deadline (`inf`) is none.
    let deadline = timeout
        .and_then(|t| Duration::try_from_secs_f64(t.max(0.0)).ok())
        .and_then(|t| Instant::now().checked_add(t));
    let slice = |deadline: Option<Instant>| match deadline {
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(SIGNAL_SLICE),
        None => SIGNAL_SLICE,
    };
    let submitted: Result<(PendingCall, _), CallError> =
        py.detach(|| kernel.submit_and_wait_until(dst, op, deadline, Some(slice(deadline))));
    let (mut pending, mut result) = match submitted {
        Ok(submitted) => submitted,
        Err(e) => return Ok(Err(e)),
    };
    let deadline = pending.deadline();
    loop {
        if let Some(result) = result {
            return Ok(result);
        }
        // Dropping `pending` on this early return abandons the call.
        py.check_signals()?;
        // PyPy's PyErr_CheckSignals does nothing; its handlers run in bytecode.
        runtime(py)?.poll_signals.bind(py).call0()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Err(CallError::Timeout));
        }
        result = py.detach(|| pending.wait(Some(slice(deadline))));
    }
}

/// Runs this process as a twin until the master stops it or goes away.
///
/// `inherited` holds the variables of `TWIN_ENV` the master set, taken out of the
/// environment by the caller so that programs this twin starts do not see them.
#[pyfunction]
fn serve(py: Python<'_>, inherited: HashMap<String, String>) -> PyResult<()> {
    if KERNEL.get().is_some() {
        return Err(PyRuntimeError::new_err(
            "cpy2py already runs in this process",
        ));
    }
    let mut inherited = inherited;
    let env =
        TwinEnv::read(|name| inherited.remove(name)).map_err(|e| errors::kernel_error(py, e))?;
    let local = local_info(py, env.twin_id.clone().unwrap_or_default())?;
    ensure_threads(py)?;
    let config = KernelConfig {
        exit_after_stop: Some(Duration::from_secs(3)),
        ..kernel_config()
    };
    let kernel = py
        .detach(|| Kernel::connect_twin(env, local, config, Arc::new(PyHandler)))
        .map_err(|e| errors::kernel_error(py, e))?;
    if KERNEL.set(kernel.clone()).is_err() {
        return Err(PyRuntimeError::new_err(
            "cpy2py already runs in this process",
        ));
    }
    py.detach(|| kernel.serve());
    Ok(())
}

/// This process's twin id.
#[pyfunction]
fn twin_id() -> String {
    KERNEL
        .get()
        .map(|k| k.name().to_owned())
        .unwrap_or_default()
}

/// The master's twin id.
#[pyfunction]
fn master_id() -> String {
    KERNEL
        .get()
        .map(|k| k.master_name().to_owned())
        .unwrap_or_default()
}

/// This process's peer number.
#[pyfunction]
fn my_peer() -> u32 {
    KERNEL.get().map_or(0, |k| k.me().0)
}

/// Peer number of the connected twin `twin_id`.
#[pyfunction]
fn peer_of(twin_id: &str) -> Option<u32> {
    KERNEL
        .get()
        .and_then(|k| k.peer_by_name(twin_id))
        .map(|p| p.0)
}

/// `CPY2PY_DEBUG`, parsed here once for both sides: unset or empty, no
/// logging; a level name (any case; `WARN` for `WARNING`) sets the level;
/// anything else means `DEBUG`. The name is Python logging's.
fn debug_level() -> Option<&'static str> {
    let setting = std::env::var("CPY2PY_DEBUG").ok()?;
    let setting = setting.trim();
    if setting.is_empty() {
        return None;
    }
    Some(match setting.to_ascii_uppercase().as_str() {
        "CRITICAL" => "CRITICAL",
        "ERROR" => "ERROR",
        "WARNING" | "WARN" => "WARNING",
        "INFO" => "INFO",
        _ => "DEBUG",
    })
}

/// The level `CPY2PY_DEBUG` asks the `__cpy2py__` loggers for, as a Python
/// logging level name, or None (no logging).
#[pyfunction]
fn log_level() -> Option<&'static str> {
    debug_level()
}

/// With `CPY2PY_DEBUG` set, the kernel's own events go to stderr at the level
/// it names, like the `__cpy2py__` loggers. They are written directly, not
/// through Python logging: kernel threads emit them while holding kernel locks,
/// where taking the GIL could deadlock.
fn init_kernel_logging() {
    let level = match debug_level() {
        None => return,
        Some("CRITICAL" | "ERROR") => tracing::Level::ERROR,
        Some("WARNING") => tracing::Level::WARN,
        Some("INFO") => tracing::Level::INFO,
        Some(_) => tracing::Level::DEBUG,
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_thread_names(true)
        .finish();
    // Another subscriber (an embedding application's) wins.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The module `cpy2py._native`.
#[pymodule]
mod _native {
    #[pymodule_export]
    use super::buffers::ReceivedBuffer;
    #[pymodule_export]
    use super::futures::{call_async, call_method_async, cancel, time_left};
    #[pymodule_export]
    use super::{
        arena_places_out, call, call_host, call_method, del_attr, exit_status, exported_count,
        flush_releases, get_attr, init_master, instantiate, is_alive, is_connected, is_initialized,
        log_level, master_id, my_peer, peer_info, peer_of, proxy_dropped, serve, set_attr, spawn,
        stdio_twin_env, stop, twin_id, twin_pid,
    };
    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::init_kernel_logging();
        m.add("PROTOCOL_VERSION", cpy2py_wire::PROTOCOL_VERSION)?;
        m.add("MASTER_PEER", cpy2py_wire::PeerId::MASTER.0)?;
        m.add(
            "TWIN_ENV",
            pyo3::types::PyTuple::new(m.py(), cpy2py_kernel::TWIN_ENV)?,
        )?;
        m.add(
            "SPECIAL_METHODS",
            pyo3::types::PyTuple::new(m.py(), cpy2py_wire::SPECIAL_METHODS)?,
        )?;
        Ok(())
    }
}
