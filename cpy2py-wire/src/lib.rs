//! The wire format of cpy2py.
//!
//! Every byte that crosses a cpy2py socket is a *frame*: a `u32` little-endian
//! length followed by that many bytes of a [postcard]-encoded [`Envelope`]. The
//! envelope names its source and destination peer (so that the master can forward
//! a frame between twins by reading only [`peek_route`]) and carries one
//! [`Message`]. Payloads are [`Value`] trees, which are language neutral: no type in
//! this crate knows Python exists.
//!
//! This crate deliberately does no IO and knows nothing of threads or clocks: the
//! [`FrameDecoder`] is fed bytes and returns whole envelopes, `Ok(None)` meaning
//! "need more bytes" and `Err` meaning the stream is corrupt and must be closed.
//!
//! postcard is not self-describing and encodes enum variants by their index, so
//! new variants go at the end of each enum and [`PROTOCOL_VERSION`] is raised for
//! every incompatible change; the [`Hello`] handshake carries it.
//!
//! # Examples
//!
//! ```
//! use cpy2py_wire::{encode_frame, Envelope, FrameDecoder, Message, PeerId};
//!
//! let envelope = Envelope { src: PeerId::MASTER, dst: PeerId(1), message: Message::Shutdown };
//! let mut stream = Vec::new();
//! encode_frame(&envelope, &mut stream).unwrap();
//!
//! let decoder = FrameDecoder::default();
//! let (decoded, used) = decoder.decode(&stream).unwrap().expect("a whole frame");
//! assert_eq!(decoded, envelope);
//! assert_eq!(used, stream.len());
//! // A partial frame asks for more bytes instead of failing.
//! assert!(decoder.decode(&stream[..3]).unwrap().is_none());
//! ```

mod bytes;
mod frame;
mod ids;
mod message;
mod shared;
mod value;

pub use crate::bytes::{Bytes, Lend};
pub use crate::frame::{
    DEFAULT_MAX_FRAME, FrameDecoder, HEADER_LEN, Splice, WireError, encode_frame,
    encode_frame_vectored, frame_length, peek_route,
};
pub use crate::ids::{ChainId, ObjectId, PeerId, RequestId};
pub use crate::message::{
    Envelope, Failure, Hello, Kwargs, Message, Op, Outcome, Release, RemoteError, Reply, Request,
    Retain,
};
pub use crate::shared::{ArenaResolver, ArenaSlot, with_arena};
pub use crate::value::{ObjectRef, RefKind, SPECIAL_METHODS, Value};

/// Version of the protocol spoken by this crate; peers with another version are
/// refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 6;
