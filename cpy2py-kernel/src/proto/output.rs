//! What the protocol core asks of the shell ([`Event`], [`Transmit`]), and why
//! it closes a peer ([`Violation`]).

use super::{Completed, Inbound};
use cpy2py_wire::{Envelope, PeerId, Release, RequestId, Retain};
use std::collections::VecDeque;

/// Why a peer is closed: it broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame's sender is not the peer it came from.
    #[error("peer {from} sent a frame claiming to be {claimed}")]
    Impersonation {
        /// The peer the frame came from.
        from: PeerId,
        /// Whom it claimed to be.
        claimed: PeerId,
    },
    /// A twin addressed a control message to another twin.
    #[error("peer {from} sent a {kind} to peer {dst}")]
    ForbiddenForward {
        /// The sender.
        from: PeerId,
        /// The destination.
        dst: PeerId,
        /// The message's kind.
        kind: &'static str,
    },
    /// A frame to forward is not a whole frame.
    #[error("a frame to forward was cut short")]
    TruncatedForward,
    /// A frame to forward does not decode.
    #[error("a frame to forward is malformed: {0}")]
    MalformedForward(String),
    /// The stream does not decode.
    #[error("{0}")]
    Corrupt(String),
    /// A twin told the master to shut down.
    #[error("a twin asked the master to shut down")]
    ShutdownToMaster,
    /// A twin sent what only the master sends.
    #[error("a twin sent PeerGone")]
    PeerGoneFromTwin,
    /// A second Hello.
    #[error("unexpected Hello after the handshake")]
    HelloAfterHandshake,
    /// An arena message that did not come from the peer it concerns: arenas
    /// are shared between directly connected peers only.
    #[error("peer {from} passed on an arena message of peer {src}")]
    ArenaNotDirect {
        /// The peer the frame came from.
        from: PeerId,
        /// The envelope's source.
        src: PeerId,
    },
}

/// What the shell is asked to do, in order.
pub enum Event<W> {
    /// A request on a chain whose thread `waiter` waits here: hand it over (a
    /// nested callback), waking the thread unless it is the reading one.
    Deliver {
        /// The waiting thread.
        waiter: W,
        /// The request.
        inbound: Inbound,
    },
    /// A request nobody here waits for: run it (on the pool).
    Run(Inbound),
    /// A request of ours has its result: wake its thread or run its callback.
    Completed(Completed<W>),
    /// A peer dropped references to objects native here.
    Release(PeerId, Release),
    /// A peer hands references to objects native here on (see [`Retain`]).
    Retain(PeerId, Retain),
    /// A peer no longer waits for its request: interrupt it if it runs here.
    Cancel(PeerId, RequestId),
    /// An arena message from a directly connected peer (see `crate::arena`).
    Arena(PeerId, cpy2py_wire::Message),
    /// A peer is gone, every call pending on it failed.
    PeerLost {
        /// The peer.
        peer: PeerId,
        /// How it ended.
        reason: String,
    },
    /// This process stops (twin: shut down by the master, or the master is gone).
    Stop,
}

/// A frame the shell is asked to write.
#[derive(Debug)]
pub enum Transmit {
    /// Bytes of a frame from another peer, passed on undecoded.
    Forward {
        /// The peer to write to.
        to: PeerId,
        /// Where the frame came from (for [`super::Endpoint::forward_failed`]).
        from: PeerId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A message of this endpoint's own (a loss notice, a reply on another
    /// peer's behalf).
    Message {
        /// The peer to write to.
        to: PeerId,
        /// The envelope (boxed: these are rare, forwards are not).
        envelope: Box<Envelope>,
    },
}

/// What one input asked for: [`super::Endpoint::take_outputs`].
pub struct Outputs<W> {
    /// Events, in order.
    pub events: Few<Event<W>>,
    /// Frames to write, in order (after the events).
    pub transmits: Few<Transmit>,
}

/// A short sequence whose first item is held inline.
pub struct Few<T> {
    first: Option<T>,
    rest: std::vec::IntoIter<T>,
}

impl<T> Few<T> {
    /// `first`, then whatever is left in `queue` (taken).
    pub(super) fn new(first: Option<T>, queue: &mut VecDeque<T>) -> Few<T> {
        let rest: Vec<T> = if queue.is_empty() {
            Vec::new()
        } else {
            queue.drain(..).collect()
        };
        Few {
            first,
            rest: rest.into_iter(),
        }
    }
}

impl<T> Iterator for Few<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.first.take().or_else(|| self.rest.next())
    }
}
