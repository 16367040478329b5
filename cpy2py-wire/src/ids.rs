//! Identifier newtypes; never bare integers in signatures.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A peer (interpreter) in one cpy2py application. The master is always
/// [`PeerId::MASTER`]; twins get ids from the master at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(pub u32);

impl PeerId {
    /// The master interpreter, root of the star.
    pub const MASTER: PeerId = PeerId(0);
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// Identifies one request among those a peer has in flight: a slab index plus a
/// generation, so that a late reply cannot land on a reused slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Slot in the requester's table.
    pub index: u32,
    /// Incremented every time the slot is reused.
    pub generation: u32,
}

/// A logical thread across interpreters: the peer where it started and a thread
/// number unique within that peer. Requests on one chain run on one OS thread per
/// interpreter, which makes nested callbacks reentrant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainId {
    /// Peer whose thread started the chain.
    pub origin: PeerId,
    /// Thread number within `origin`.
    pub thread: u64,
}

/// An object exported by its native peer, unique within that peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub u64);
