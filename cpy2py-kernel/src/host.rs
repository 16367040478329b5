//! A Rust program as the master: start Python twins, call them with `Value`s,
//! hold their objects by reference, and serve named Rust functions to them.
//!
//! A twin sees a host that cannot unpickle (pickle protocol 0) and so sends
//! every result that is not plain data as an object reference; a
//! [`RemoteObject`] holds one and releases it (batched) when dropped.

use crate::error::{CallError, KernelError};
use crate::handler::{Handler, RequestContext};
use crate::kernel::{Kernel, KernelConfig, LocalInfo};
use crate::spawn::{TwinInfo, TwinSpec};
use cpy2py_proxy::{Due, ReleaseQueue};
use cpy2py_wire::{Kwargs, ObjectRef, Op, Outcome, PeerId, RemoteError, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A Rust function Python code can call (`cpy2py.host.call(name, ...)`).
pub type HostFunction = Box<
    dyn Fn(&RequestContext<'_>, Vec<Value>, Kwargs) -> Result<Value, RemoteError> + Send + Sync,
>;

/// Why a host's call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The Python code raised an exception.
    #[error("{}: {}", .0.type_path, .0.message)]
    Remote(RemoteError),
    /// The call did not complete (twin gone, timeout, ...).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The result was not what the caller asked for.
    #[error("unexpected result: {0}")]
    Unexpected(String),
}

/// Builds a [`Host`].
pub struct HostBuilder {
    name: String,
    config: KernelConfig,
    functions: HashMap<String, HostFunction>,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            name: "host".into(),
            config: KernelConfig::default(),
            functions: HashMap::new(),
        }
    }
}

impl HostBuilder {
    /// The host's name, which twins see as their master's id.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Kernel tunables.
    pub fn config(mut self, config: KernelConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves `f` to Python code as `name`. It runs on the thread that waits
    /// for the call that led to it when there is one (reentrant), and may call
    /// twins again through `ctx.kernel`.
    pub fn function(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&RequestContext<'_>, Vec<Value>, Kwargs) -> Result<Value, RemoteError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.functions.insert(name.into(), Box::new(f));
        self
    }

    /// Starts the host's kernel.
    pub fn build(self) -> Result<Host, KernelError> {
        let handler = Arc::new(HostHandler {
            functions: self.functions,
        });
        let local = LocalInfo {
            name: self.name,
            interpreter: "rust".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pickle_protocol: 0,
        };
        let kernel = Kernel::start_master(local, self.config, handler)?;
        Ok(Host {
            kernel,
            refs: Arc::new(Refs::default()),
        })
    }
}

struct HostHandler {
    functions: HashMap<String, HostFunction>,
}

fn error(type_path: &str, message: String) -> RemoteError {
    RemoteError {
        refs: Vec::new(),
        type_path: type_path.into(),
        message,
        traceback: String::new(),
        pickle: None,
    }
}

impl Handler for HostHandler {
    fn handle(&self, ctx: &RequestContext<'_>, op: Op) -> Outcome {
        let Op::CallGlobal {
            qualname,
            args,
            kwargs,
            ..
        } = op
        else {
            return Outcome::Err(error(
                "builtins.TypeError",
                "a Rust host serves only function calls".into(),
            ));
        };
        match self.functions.get(&qualname) {
            Some(f) => match f(ctx, args, kwargs) {
                Ok(v) => Outcome::Ok(v),
                Err(e) => Outcome::Err(e),
            },
            None => Outcome::Err(error(
                "builtins.LookupError",
                format!("the host serves no function named {qualname:?}"),
            )),
        }
    }
}

/// Released references waiting to be sent, by `cpy2py-proxy`'s policy (the
/// Python side's too): once a batch is full, else before the next call.
#[derive(Default)]
struct Refs {
    releases: Mutex<ReleaseQueue>,
}

/// A Rust program's connection to its twins: a master kernel plus typed calls.
/// Cheap to clone; usable from many threads at once.
#[derive(Clone)]
pub struct Host {
    kernel: Kernel,
    refs: Arc<Refs>,
}

impl Host {
    /// A builder for a host.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The kernel underneath.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Starts a twin.
    pub fn spawn(&self, spec: TwinSpec) -> Result<Twin, KernelError> {
        let info = self.kernel.spawn(spec)?;
        Ok(Twin {
            host: self.clone(),
            info,
        })
    }

    /// Sends every released reference now.
    pub fn flush_releases(&self) {
        let batches = lock(&self.refs.releases).take_all();
        for (owner, release) in batches {
            let _ = self.kernel.send_release(owner, release);
        }
    }

    /// Stops every twin.
    pub fn shutdown(&self, grace: Duration) {
        self.kernel.shutdown(grace);
    }

    fn request(
        &self,
        dst: PeerId,
        op: Op,
        timeout: Option<Duration>,
    ) -> Result<Returned, HostError> {
        self.flush_releases();
        match self.kernel.call(dst, op, timeout)? {
            Outcome::Ok(value) => Ok(self.adopt(value)),
            Outcome::Err(e) => Err(HostError::Remote(e)),
            // The kernel turns these into errors; a handler may still return one.
            Outcome::Failed(failure) => Err(HostError::Call(failure.into())),
        }
    }

    /// Takes ownership of every reference inside `value`.
    fn adopt(&self, value: Value) -> Returned {
        let mut objects = Vec::new();
        collect_refs(&value, &mut |r| {
            objects.push(RemoteObject {
                host: self.clone(),
                r: r.clone(),
            });
        });
        Returned { value, objects }
    }

    /// One handle is gone: release the one reference it stood for (each
    /// handle is one reference received).
    fn dropped(&self, r: &ObjectRef) {
        let due = lock(&self.refs.releases).add(r.owner, r.id, 1);
        if due == Due::Now {
            self.flush_releases();
        }
    }
}

fn collect_refs(value: &Value, f: &mut dyn FnMut(&ObjectRef)) {
    match value {
        Value::Ref(r) => f(r),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items.iter().for_each(|v| collect_refs(v, f));
        }
        Value::Dict(items) => items.iter().for_each(|(k, v)| {
            collect_refs(k, f);
            collect_refs(v, f);
        }),
        Value::Pickle { refs, .. } => refs.iter().for_each(f),
        _ => {}
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running twin of a [`Host`].
#[derive(Clone)]
pub struct Twin {
    host: Host,
    info: TwinInfo,
}

impl Twin {
    /// Its peer id, process id and interpreter.
    pub fn info(&self) -> &TwinInfo {
        &self.info
    }

    /// Calls `module.qualname(*args, **kwargs)` in the twin.
    pub fn call_global(
        &self,
        module: &str,
        qualname: &str,
        args: impl IntoIterator<Item = Value>,
        kwargs: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<Returned, HostError> {
        let op = Op::CallGlobal {
            module: module.into(),
            qualname: qualname.into(),
            args: args.into_iter().collect(),
            kwargs: kwargs.into_iter().collect(),
        };
        self.host.request(self.info.peer, op, None)
    }

    /// Like [`Twin::call_global`], failing after `timeout`.
    pub fn call_global_timeout(
        &self,
        module: &str,
        qualname: &str,
        args: impl IntoIterator<Item = Value>,
        timeout: Duration,
    ) -> Result<Returned, HostError> {
        let op = Op::CallGlobal {
            module: module.into(),
            qualname: qualname.into(),
            args: args.into_iter().collect(),
            kwargs: Vec::new(),
        };
        self.host.request(self.info.peer, op, Some(timeout))
    }

    /// Stops the twin (kill after `grace`); returns how it ended.
    pub fn stop(&self, grace: Duration) -> Result<String, KernelError> {
        self.host.kernel.stop_twin(self.info.peer, grace)
    }

    /// Whether the twin runs.
    pub fn is_alive(&self) -> bool {
        self.host.kernel.is_alive(self.info.peer)
    }
}

/// A call's result: its value, and handles for the object references in it
/// (released when dropped, unless taken).
pub struct Returned {
    /// The value (object references appear as [`Value::Ref`]).
    pub value: Value,
    objects: Vec<RemoteObject>,
}

impl std::fmt::Debug for Returned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returned")
            .field("value", &self.value)
            .finish()
    }
}

impl Returned {
    /// The object the call returned (an error if it returned plain data).
    pub fn into_object(mut self) -> Result<RemoteObject, HostError> {
        match (&self.value, self.objects.len()) {
            (Value::Ref(_), 1) => Ok(self.objects.remove(0)),
            (other, _) => Err(HostError::Unexpected(format!(
                "expected an object, got {other:?}"
            ))),
        }
    }

    /// Handles of every object reference in the value, in order.
    pub fn into_objects(self) -> Vec<RemoteObject> {
        self.objects
    }
}

/// An object living in a twin, held by reference; dropping it releases it.
pub struct RemoteObject {
    host: Host,
    r: ObjectRef,
}

impl std::fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteObject")
            .field("owner", &self.r.owner)
            .field("id", &self.r.id)
            .finish()
    }
}

impl RemoteObject {
    /// The reference, to pass it as an argument (`Value::Ref(obj.reference())`).
    pub fn reference(&self) -> ObjectRef {
        self.r.clone()
    }

    /// Calls its method `name`.
    pub fn call_method(
        &self,
        name: &str,
        args: impl IntoIterator<Item = Value>,
        kwargs: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<Returned, HostError> {
        let op = Op::CallMethod {
            target: self.r.clone(),
            name: name.into(),
            args: args.into_iter().collect(),
            kwargs: kwargs.into_iter().collect(),
        };
        self.host.request(self.r.owner, op, None)
    }

    /// Reads its attribute `name`.
    pub fn get_attr(&self, name: &str) -> Result<Returned, HostError> {
        let op = Op::GetAttr {
            target: Value::Ref(self.r.clone()),
            name: name.into(),
        };
        self.host.request(self.r.owner, op, None)
    }

    /// Writes its attribute `name`.
    pub fn set_attr(&self, name: &str, value: Value) -> Result<(), HostError> {
        let op = Op::SetAttr {
            target: Value::Ref(self.r.clone()),
            name: name.into(),
            value,
        };
        self.host.request(self.r.owner, op, None).map(drop)
    }
}

impl Drop for RemoteObject {
    fn drop(&mut self) {
        self.host.dropped(&self.r);
    }
}
