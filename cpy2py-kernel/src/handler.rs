//! The interface a host implements to serve requests.

use crate::Kernel;
use cpy2py_wire::{ChainId, Op, Outcome, PeerId, Release, RequestId, Retain};
use std::time::Instant;

/// Where a request came from, handed to [`Handler::handle`].
pub struct RequestContext<'a> {
    /// The kernel, for nested calls.
    pub kernel: &'a Kernel,
    /// The peer that sent the request (the reply goes there).
    pub src: PeerId,
    /// The logical thread the request belongs to; nested calls made from the
    /// handler continue it.
    pub chain: ChainId,
    /// The request's id, as the sender knows it (see [`Handler::cancel`]).
    pub id: RequestId,
    /// When the requester stops waiting, if it said. Nested calls made from
    /// the handler's thread inherit it: they fail with
    /// [`crate::CallError::Timeout`] once it passes.
    pub deadline: Option<Instant>,
}

/// Serves the requests that reach this process. Implemented by the host (the
/// Python bindings, or a Rust program embedding the kernel).
///
/// `handle` runs on a kernel worker thread or, for a request on a chain whose
/// thread is waiting here, on that very thread. It may call back into the
/// kernel (reentrantly, to any depth). It must not hold a lock that such a
/// nested call needs.
pub trait Handler: Send + Sync + 'static {
    /// Performs `op` and returns its outcome.
    fn handle(&self, ctx: &RequestContext<'_>, op: Op) -> Outcome;

    /// `from` dropped references to objects native to this process.
    fn release(&self, from: PeerId, release: Release) {
        let _ = (from, release);
    }

    /// `from` is handing references to objects native to this process on to
    /// other peers (see [`cpy2py_wire::Retain`]).
    fn retain(&self, from: PeerId, retain: Retain) {
        let _ = (from, retain);
    }

    /// Runs the whole life of a kernel thread (`body`). Override to set up
    /// per-thread state once instead of per request; the Python bindings keep
    /// one interpreter thread state per pool thread this way.
    fn run_thread(&self, body: Box<dyn FnOnce() + Send>) {
        body();
    }

    /// `from` no longer waits for its request `id` (the one whose
    /// [`RequestContext`] has these `src` and `id`). Interrupt it if it still
    /// runs; its reply is sent as usual and discarded. Called on the thread
    /// that read the message, possibly before the request started or after it
    /// finished: both are no-ops. Keep it short; it must not block.
    fn cancel(&self, from: PeerId, id: RequestId) {
        let _ = (from, id);
    }

    /// `peer` is gone (`reason` says how); every call pending on it has failed.
    fn peer_lost(&self, peer: PeerId, reason: &str) {
        let _ = (peer, reason);
    }
}
