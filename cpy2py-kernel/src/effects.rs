//! Carrying out what the protocol core asks for: waking threads, handing
//! requests over, telling the handler, writing the frames it made. Done by the
//! thread whose input caused it, in order, without holding the core's lock.

use crate::error::CallError;
use crate::kernel::{Kernel, Role};
use crate::peer::Peer;
use crate::proto::{Completed, Event, Inbound, Outputs, Transmit};
use crate::waiter::{self, Waiter};
use cpy2py_wire::{Outcome, RequestId};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Kernel {
    pub(crate) fn complete(&self, id: RequestId, result: Result<Outcome, CallError>) {
        let done = self.proto().complete(id, result);
        self.finish(done);
    }

    pub(crate) fn finish(&self, done: Completed<Arc<Waiter>>) {
        match done {
            Completed::Wake(waiter) => {
                // The thread that reads its own reply needs no wake-up call.
                if !waiter::is_current(&waiter) {
                    waiter.wake();
                }
            }
            Completed::Deliver(callback, result) => {
                if catch_unwind(AssertUnwindSafe(|| callback(result))).is_err() {
                    tracing::error!("a completion callback panicked");
                }
            }
            Completed::Stale => {}
        }
    }

    /// Carries out what one input to the core asked for, in order, on this
    /// thread. Requests to run go to `runnable`; `from` is the peer whose
    /// frame it was, if any.
    pub(crate) fn carry_out(
        &self,
        outputs: Outputs<Arc<Waiter>>,
        from: Option<&Peer>,
        runnable: &mut Vec<Inbound>,
    ) {
        for event in outputs.events {
            self.carry_out_event(event, from, runnable);
        }
        for transmit in outputs.transmits {
            self.transmit(transmit);
        }
    }

    fn carry_out_event(
        &self,
        event: Event<Arc<Waiter>>,
        from: Option<&Peer>,
        runnable: &mut Vec<Inbound>,
    ) {
        let handler = &self.shared.handler;
        match event {
            // The reading thread itself (a nested callback): it looks at its
            // inbox after this read.
            Event::Deliver { waiter, inbound } if waiter::is_current(&waiter) => {
                waiter.push_quiet(inbound)
            }
            Event::Deliver { waiter, inbound } => waiter.push(inbound),
            Event::Run(inbound) => {
                if let (Role::Master, Some(from)) = (self.shared.role, from) {
                    from.unsolicited_at
                        .store(crate::sys::monotonic_ns(), Ordering::Relaxed);
                }
                runnable.push(inbound);
            }
            Event::Completed(done) => self.finish(done),
            Event::Release(src, release) => {
                if catch_unwind(AssertUnwindSafe(|| handler.release(src, release))).is_err() {
                    tracing::error!("the handler panicked in release");
                }
            }
            Event::Retain(src, retain) => {
                if catch_unwind(AssertUnwindSafe(|| handler.retain(src, retain))).is_err() {
                    tracing::error!("the handler panicked in retain");
                }
            }
            Event::Cancel(src, id) => {
                if catch_unwind(AssertUnwindSafe(|| handler.cancel(src, id))).is_err() {
                    tracing::error!("the handler panicked in cancel");
                }
            }
            Event::Arena(src, message) => self.arena_message(src, message),
            Event::PeerLost { peer, reason } => {
                // Its objects are gone too, and so is any route to it that the
                // handler keeps (a restarted twin gets a new number).
                if catch_unwind(AssertUnwindSafe(|| handler.peer_lost(peer, &reason))).is_err() {
                    tracing::error!("the handler panicked in peer_lost");
                }
            }
            Event::Stop => self.wake_for_stop(),
        }
    }

    fn transmit(&self, transmit: Transmit) {
        match transmit {
            Transmit::Forward { to, from, frame } => {
                let (failure, frame) = match self.peer(to).filter(|p| !p.is_closed()) {
                    Some(peer) => match peer.forward(frame) {
                        Ok(()) => return,
                        Err(frame) => (self.lost_error(&peer), frame),
                    },
                    None => (self.unreachable(to), frame),
                };
                let outputs = {
                    let mut proto = self.proto();
                    proto.forward_failed(from, to, &frame, &failure);
                    proto.take_outputs()
                };
                self.carry_out(outputs, None, &mut Vec::new());
            }
            Transmit::Message { to, envelope } => {
                if let Some(peer) = self.peer(to).filter(|p| !p.is_closed()) {
                    let _ = self.send_to(&peer, &envelope);
                }
            }
        }
    }
}
