//! Typed errors of the kernel. A remote exception is not one of them: it is data
//! in a reply ([`cpy2py_wire::Outcome::Err`]).

use cpy2py_wire::{Failure, PeerId, WireError};
use std::io;
use std::path::PathBuf;

/// Why a twin could not be started or connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The executable could not be started at all.
    #[error("cannot start twin {twin_id:?}: executable {path:?}: {source}")]
    Spawn {
        /// The twin's id.
        twin_id: String,
        /// The path tried.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The twin's process ended before completing the handshake.
    #[error(
        "twin {twin_id:?} ({path:?}, pid {pid}) {status} before completing the handshake{}",
        stderr_suffix(stderr)
    )]
    ExitedEarly {
        /// The twin's id.
        twin_id: String,
        /// The executable.
        path: PathBuf,
        /// Its process id.
        pid: u32,
        /// How it ended.
        status: String,
        /// Its exit status, if it exited (rather than being killed).
        code: Option<i32>,
        /// What it wrote to stderr meanwhile.
        stderr: String,
    },
    /// The twin did not complete the handshake in time.
    #[error(
        "twin {twin_id:?} ({path:?}, pid {pid}) did not complete the handshake within {seconds:.1} s{}",
        stderr_suffix(stderr)
    )]
    HandshakeTimeout {
        /// The twin's id.
        twin_id: String,
        /// The executable.
        path: PathBuf,
        /// Its process id.
        pid: u32,
        /// The timeout.
        seconds: f64,
        /// What it wrote to stderr meanwhile.
        stderr: String,
    },
    /// The peer speaks another protocol or broke the handshake's rules.
    #[error("handshake with {peer} failed: {reason}")]
    Handshake {
        /// The peer.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// This process was not started as a twin (its environment names no master).
    #[error("not started as a cpy2py twin: {0}")]
    NotATwin(String),
    /// A twin with this id is already connected.
    #[error("a twin with id {0:?} is already running")]
    DuplicateTwin(String),
    /// The kernel is shutting down.
    #[error("the cpy2py kernel is shutting down")]
    ShuttingDown,
    /// The peer is not known here.
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// A socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; its stderr:\n{trimmed}")
    }
}

/// Why a call did not produce an outcome.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The destination (or the route to it) is gone.
    #[error("twin {twin_id:?} ({peer}) terminated: {reason}")]
    PeerLost {
        /// The peer.
        peer: PeerId,
        /// Its twin id.
        twin_id: String,
        /// How it ended.
        reason: String,
    },
    /// The destination is not connected to this kernel.
    #[error("no twin {0} is connected")]
    UnknownPeer(PeerId),
    /// The request could not be encoded (too large, or too deeply nested).
    #[error("cannot send the request: {0}")]
    Encode(String),
    /// The deadline passed before the reply arrived (the reply will be discarded).
    #[error("no reply within the timeout")]
    Timeout,
    /// The kernel is shutting down.
    #[error("the cpy2py kernel is shutting down")]
    ShuttingDown,
    /// The destination could not send its result (too large, or too deeply
    /// nested).
    #[error("the reply could not be sent: {0}")]
    Unsendable(String),
    /// The destination's handler panicked.
    #[error("the handler panicked: {0}")]
    Panicked(String),
}

impl From<Failure> for CallError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::PeerLost {
                peer,
                twin_id,
                reason,
            } => CallError::PeerLost {
                peer,
                twin_id,
                reason,
            },
            Failure::UnknownPeer { peer } => CallError::UnknownPeer(peer),
            Failure::Unsendable { reason } => CallError::Unsendable(reason),
            Failure::Panicked { message } => CallError::Panicked(message),
        }
    }
}

impl CallError {
    /// The failure to answer a request with, on behalf of its destination.
    pub fn to_failure(&self) -> Failure {
        match self {
            CallError::PeerLost {
                peer,
                twin_id,
                reason,
            } => Failure::PeerLost {
                peer: *peer,
                twin_id: twin_id.clone(),
                reason: reason.clone(),
            },
            CallError::UnknownPeer(peer) => Failure::UnknownPeer { peer: *peer },
            CallError::Panicked(message) => Failure::Panicked {
                message: message.clone(),
            },
            other => Failure::Unsendable {
                reason: other.to_string(),
            },
        }
    }
}
