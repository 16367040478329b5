//! Envelopes, messages and operations.

use crate::bytes::Bytes;
use crate::ids::{ChainId, ObjectId, PeerId, RequestId};
use crate::value::{ObjectRef, Value};
use serde::{Deserialize, Serialize};

/// One frame's content: who sent it, for whom, and what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sending peer. Must stay the first field: [`crate::peek_route`] reads it
    /// without decoding the message.
    pub src: PeerId,
    /// Destination peer; the master forwards frames not addressed to itself.
    pub dst: PeerId,
    /// The message.
    pub message: Message,
}

/// The messages of the protocol. New variants go at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Handshake, sent once in each direction when a twin starts.
    Hello(Hello),
    /// Asks the destination to perform an operation and reply.
    Request(Request),
    /// Answers a request.
    Reply(Reply),
    /// Fire-and-forget: the sender dropped references to objects native to the
    /// destination.
    Release(Release),
    /// Asks the destination to finish its work and exit.
    Shutdown,
    /// From the master: a peer is gone; requests routed to it will get no reply.
    PeerGone {
        /// The peer that is gone.
        peer: PeerId,
        /// How it ended.
        reason: String,
    },
    /// Fire-and-forget, to an object's owner: the sender is passing references
    /// to the owner's objects on to other peers. Sent before the frame that
    /// carries them; the star's per-link FIFO order makes it arrive before any
    /// release by the new holders.
    Retain(Retain),
    /// Fire-and-forget, to the destination of request `id`: its sender no longer
    /// waits for it. The destination interrupts it if it is still running and
    /// replies as usual; the reply is discarded (new in protocol version 5).
    Cancel {
        /// The sender's request.
        id: RequestId,
    },
    /// To a directly connected peer on this host: the sender shares a memory
    /// region with it, the memfd `fd` of the sender's process (open it as
    /// `/proc/<pid>/fd/<fd>`, the pid from the sender's Hello) of `size`
    /// bytes, for large buffers ([`crate::ArenaSlot`]) once accepted (new in
    /// protocol version 6).
    ArenaOffer {
        /// The memfd's number in the sender's process.
        fd: u32,
        /// Its size in bytes.
        size: u64,
    },
    /// The answer to an [`Message::ArenaOffer`]: whether the receiver mapped it.
    ArenaAnswer {
        /// Mapped: the offering side may now send arena places.
        accepted: bool,
    },
    /// To an arena's owner: buffers it handed over (by offset) are free again.
    ArenaFree {
        /// Their offsets.
        offsets: Vec<u64>,
    },
}

/// References handed on by the sender to third peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retain {
    /// `(object, new holder, count)` triples.
    pub objects: Vec<(ObjectId, PeerId, u64)>,
}

/// Handshake content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// Peer id of the twin: assigned by the master, echoed by the twin.
    pub peer: PeerId,
    /// Human-readable twin id (`"pypy3"`); the master's is its own id.
    pub twin_id: String,
    /// Process id of the sender.
    pub pid: u32,
    /// Interpreter implementation (`"CPython"`, `"PyPy"`, `"rust"`).
    pub interpreter: String,
    /// Interpreter version string.
    pub version: String,
    /// Highest pickle protocol the sender reads (0 if it cannot unpickle).
    pub pickle_protocol: u8,
}

/// A request for an operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Id chosen by the requester; echoed in the reply.
    pub id: RequestId,
    /// Logical thread the request belongs to.
    pub chain: ChainId,
    /// What to do.
    pub op: Op,
    /// Microseconds left until the requester's deadline when the request was
    /// sent, or `None` for no deadline. Relative, so that the peers' clocks
    /// need not agree; requests the destination makes on its behalf inherit
    /// what is left (new in protocol version 5).
    pub time_left_us: Option<u64>,
}

/// Keyword arguments, in call order.
pub type Kwargs = Vec<(String, Value)>;

/// Operations a peer can be asked to perform. New variants go at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Call a module-level callable named by module and qualified name.
    CallGlobal {
        /// Dotted module name.
        module: String,
        /// Qualified name within the module.
        qualname: String,
        /// Positional arguments.
        args: Vec<Value>,
        /// Keyword arguments.
        kwargs: Kwargs,
    },
    /// Call a callable given as a value.
    CallValue {
        /// The callable.
        callable: Value,
        /// Positional arguments.
        args: Vec<Value>,
        /// Keyword arguments.
        kwargs: Kwargs,
    },
    /// Look up a method on a referenced object and call it, in one round trip.
    CallMethod {
        /// The object, native to the destination.
        target: ObjectRef,
        /// Method name.
        name: String,
        /// Positional arguments.
        args: Vec<Value>,
        /// Keyword arguments.
        kwargs: Kwargs,
    },
    /// Read an attribute.
    GetAttr {
        /// Object or class whose attribute is read.
        target: Value,
        /// Attribute name.
        name: String,
    },
    /// Write an attribute.
    SetAttr {
        /// Object or class whose attribute is written.
        target: Value,
        /// Attribute name.
        name: String,
        /// New value.
        value: Value,
    },
    /// Delete an attribute.
    DelAttr {
        /// Object or class whose attribute is deleted.
        target: Value,
        /// Attribute name.
        name: String,
    },
    /// Create an instance of a class native to the destination.
    Instantiate {
        /// The class.
        class: Value,
        /// Positional arguments.
        args: Vec<Value>,
        /// Keyword arguments.
        kwargs: Kwargs,
    },
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: RequestId,
    /// Result or error.
    pub outcome: Outcome,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// It returned a value.
    Ok(Value),
    /// It raised an error.
    Err(RemoteError),
    /// cpy2py itself could not perform it or deliver its result (new in
    /// protocol version 3).
    Failed(Failure),
}

/// Why cpy2py could not perform a request or deliver its result, as the peer
/// that answered saw it: typed, so that each host maps it to its own errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The destination is gone; the master answered on its behalf.
    PeerLost {
        /// The peer that is gone.
        peer: PeerId,
        /// Its twin id.
        twin_id: String,
        /// How it ended.
        reason: String,
    },
    /// The destination was never connected to the master.
    UnknownPeer {
        /// The peer asked for.
        peer: PeerId,
    },
    /// The result could not be encoded (too large, or too deeply nested).
    Unsendable {
        /// Why.
        reason: String,
    },
    /// The host's handler panicked while performing it.
    Panicked {
        /// The panic's message.
        message: String,
    },
}

/// An error raised by the peer that performed an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// Dotted path of the error's type (`"builtins.ValueError"`).
    pub type_path: String,
    /// The error's message.
    pub message: String,
    /// Formatted traceback text from the raising peer.
    pub traceback: String,
    /// The error itself, serialized by the raising language, if that worked.
    pub pickle: Option<Bytes>,
    /// Object references inside `pickle`, by position (as in [`crate::Value::Pickle`]).
    pub refs: Vec<ObjectRef>,
}

/// References released by the sender: each object id with the number of
/// references dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `(object, count)` pairs.
    pub objects: Vec<(ObjectId, u64)>,
}
