//! The kernel of cpy2py: one mio event loop per process owning every peer
//! socket, twins started over inherited Unix socketpairs, the Hello handshake,
//! requests and blocking replies, chains and reentrant dispatch, forwarding
//! between twins, peer-loss detection and shutdown.
//!
//! The kernel knows nothing of Python: a host (the Python bindings, or any Rust
//! program) implements [`Handler`] to serve requests and calls
//! [`Kernel::call`] / [`Kernel::submit`] to make them.
//!
//! # Threads
//!
//! A thread waiting for its reply reads the socket the reply comes from itself
//! (leader/follower), so a call costs the two wake-ups of a socketpair round
//! trip. A request on a chain whose thread waits here runs on that thread
//! (reentrant callbacks to any depth); other requests run on the pool thread
//! that read them, which first hands polling to another pool thread.
//!
//! # Examples
//!
//! A Rust host starting a Python twin (needs an interpreter with cpy2py
//! installed, so not run as a doctest):
//!
//! ```no_run
//! use cpy2py_kernel::{Handler, Kernel, KernelConfig, LocalInfo, RequestContext, TwinSpec};
//! use cpy2py_wire::{Op, Outcome, Value};
//! use std::sync::Arc;
//!
//! struct NoCallbacks;
//! impl Handler for NoCallbacks {
//!     fn handle(&self, _: &RequestContext<'_>, _: Op) -> Outcome {
//!         Outcome::Ok(Value::None)
//!     }
//! }
//!
//! let local = LocalInfo {
//!     name: "host".into(),
//!     interpreter: "rust".into(),
//!     version: env!("CARGO_PKG_VERSION").into(),
//!     pickle_protocol: 0,
//! };
//! let kernel = Kernel::start_master(local, KernelConfig::default(), Arc::new(NoCallbacks))?;
//! let twin = kernel.spawn(TwinSpec::python("pypy3", "pypy"))?;
//! let op = Op::CallGlobal {
//!     module: "math".into(),
//!     qualname: "factorial".into(),
//!     args: vec![Value::Int(20)],
//!     kwargs: vec![],
//! };
//! let outcome = kernel.call(twin.peer, op, None)?;
//! assert_eq!(outcome, Outcome::Ok(Value::Int(2432902008176640000)));
//! kernel.shutdown(std::time::Duration::from_secs(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod arena;
mod call;
mod connect;
mod effects;
mod error;
mod handler;
mod host;
mod kernel;
mod lifecycle;
mod peer;
mod pool;
/// The sans-IO protocol core, public only with the `proto` feature (for the
/// fuzz harness, which drives it directly): not a stable interface.
#[cfg(feature = "proto")]
pub mod proto;
#[cfg(not(feature = "proto"))]
mod proto;
mod reader;
mod serve;
mod spawn;
mod stdio;
mod sys;
mod transport;
mod waiter;

pub use crate::arena::{ARENA_MIN, ArenaChunk};
pub use crate::call::PendingCall;
pub use crate::connect::{
    ENV_FD, ENV_MASTER_NAME, ENV_STDERR_FD, ENV_TWIN_ID, STDIO_CHANNEL, TWIN_ENV, TwinChannel,
    TwinEnv,
};
pub use crate::error::{CallError, KernelError};
pub use crate::handler::{Handler, RequestContext};
pub use crate::host::{Host, HostBuilder, HostError, HostFunction, RemoteObject, Returned, Twin};
pub use crate::kernel::{Kernel, KernelConfig, LocalInfo, PeerInfo, Role};
pub use crate::proto::Callback;
pub use crate::spawn::{Channel, TwinInfo, TwinSpec};
pub use crate::transport::{PipeTransport, SocketTransport, Transport};
pub use crate::waiter::current_deadline;
pub use cpy2py_wire as wire;
