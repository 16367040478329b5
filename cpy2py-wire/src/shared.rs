//! Out-of-band buffers that travel as places in shared memory rather than as
//! bytes in the frame.
//!
//! A sender that shares a memory region (an *arena*) with the receiver copies a
//! large buffer into it once and sends only `(offset, len)`; the receiver uses
//! the bytes where they are. On the sending side such a buffer is a [`Bytes`]
//! whose owner reports [`Lend::arena_slot`]; on the receiving side the decoder
//! asks the [`ArenaResolver`] installed with [`with_arena`] for a [`Bytes`] over
//! that place. Without a resolver (a peer that never shared an arena, a frame
//! forwarded from another peer) a place is a decoding error: the stream is
//! corrupt.

use crate::bytes::Bytes;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

/// Where a buffer lies in the sender's arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaSlot {
    /// Byte offset from the arena's start.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Turns places in a peer's arena into byte strings while its frames decode.
pub trait ArenaResolver: Send + Sync {
    /// The bytes at `slot`, owned by the receiver until the result (and every
    /// clone of it) is dropped; `Err` with a reason if `slot` is not a buffer
    /// the peer may hand over (outside the arena, or one already handed over).
    fn resolve(&self, slot: ArenaSlot) -> Result<Bytes, String>;
}

thread_local! {
    static RESOLVER: RefCell<Option<Arc<dyn ArenaResolver>>> = const { RefCell::new(None) };
    /// Why the decode on this thread failed at an arena place (postcard keeps
    /// no message of its own).
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Why the last decode on this thread failed at an arena place, if it did.
pub(crate) fn take_failure() -> Option<String> {
    FAILURE.with(|f| f.borrow_mut().take())
}

/// Runs `f` (a decode) with `resolver` turning arena places into bytes.
pub fn with_arena<R>(resolver: Arc<dyn ArenaResolver>, f: impl FnOnce() -> R) -> R {
    struct Off(Option<Arc<dyn ArenaResolver>>);
    impl Drop for Off {
        fn drop(&mut self) {
            let previous = self.0.take();
            RESOLVER.with(|r| *r.borrow_mut() = previous);
        }
    }
    let previous = RESOLVER.with(|r| r.borrow_mut().replace(resolver));
    let _off = Off(previous);
    f()
}

/// One out-of-band buffer on the wire.
#[derive(Serialize, Deserialize)]
enum Buffer<B> {
    /// The bytes themselves (spliced from the object's memory when large).
    Inline(B),
    /// A place in the sender's arena.
    Arena(ArenaSlot),
}

/// Serde for `Value::Pickle`'s buffers: each inline or as an arena place.
pub(crate) mod buffers {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(buffers: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(buffers.len()))?;
        for buffer in buffers {
            match buffer.arena_slot() {
                Some(slot) => seq.serialize_element(&Buffer::<&Bytes>::Arena(slot))?,
                None => seq.serialize_element(&Buffer::Inline(buffer))?,
            }
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        struct Buffers;
        impl<'de> Visitor<'de> for Buffers {
            type Value = Vec<Bytes>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of buffers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Bytes>, A::Error> {
                // The size hint comes from the peer: not trusted for allocation.
                let mut out = Vec::new();
                while let Some(buffer) = seq.next_element::<Buffer<Bytes>>()? {
                    out.push(match buffer {
                        Buffer::Inline(bytes) => bytes,
                        Buffer::Arena(slot) => RESOLVER
                            .with(|r| match &*r.borrow() {
                                Some(resolver) => resolver.resolve(slot),
                                None => Err("this peer shares no arena here".into()),
                            })
                            .map_err(|why| {
                                let why = format!(
                                    "arena buffer at {} (+{} bytes): {why}",
                                    slot.offset, slot.len
                                );
                                FAILURE.with(|f| *f.borrow_mut() = Some(why.clone()));
                                A::Error::custom(why)
                            })?,
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Buffers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, FrameDecoder, Lend, Message, PeerId, Value, encode_frame};
    use std::sync::Mutex;

    /// A sender-side buffer that lies in an arena.
    struct InArena(Vec<u8>, ArenaSlot);

    impl AsRef<[u8]> for InArena {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Lend for InArena {
        fn arena_slot(&self) -> Option<ArenaSlot> {
            Some(self.1)
        }
    }

    /// Hands out each slot once, as bytes of its offset's low byte.
    #[derive(Default)]
    struct Resolver(Mutex<Vec<ArenaSlot>>);

    impl ArenaResolver for Resolver {
        fn resolve(&self, slot: ArenaSlot) -> Result<Bytes, String> {
            let mut given = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if given.contains(&slot) {
                return Err("handed over twice".into());
            }
            given.push(slot);
            Ok(Bytes::from(vec![slot.offset as u8; slot.len as usize]))
        }
    }

    fn frame_with(buffers: Vec<Bytes>) -> Vec<u8> {
        let envelope = Envelope {
            src: PeerId(1),
            dst: PeerId::MASTER,
            message: Message::Reply(crate::Reply {
                id: crate::RequestId {
                    index: 1,
                    generation: 0,
                },
                outcome: crate::Outcome::Ok(Value::Pickle {
                    data: Bytes::from(b"p"),
                    refs: vec![],
                    buffers,
                }),
            }),
        };
        let mut frame = Vec::new();
        encode_frame(&envelope, &mut frame).expect("encoded");
        frame
    }

    fn buffers_of(envelope: Envelope) -> Vec<Bytes> {
        match envelope.message {
            Message::Reply(crate::Reply {
                outcome: crate::Outcome::Ok(Value::Pickle { buffers, .. }),
                ..
            }) => buffers,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_arena_buffer_travels_as_its_place_and_resolves_on_arrival() {
        let slot = ArenaSlot { offset: 7, len: 3 };
        let big = vec![9u8; 1 << 20];
        let frame = frame_with(vec![
            Bytes::from_lend(InArena(big.clone(), slot)),
            Bytes::from(b"abc"),
        ]);
        assert!(
            frame.len() < 100,
            "the arena buffer's bytes stayed out of the frame"
        );
        let resolver: Arc<dyn ArenaResolver> = Arc::new(Resolver::default());
        let decoder = FrameDecoder::default();
        let decoded = with_arena(resolver, || decoder.decode(&frame))
            .expect("decoded")
            .expect("whole");
        let buffers = buffers_of(decoded.0);
        assert_eq!(&buffers[0][..], &[7, 7, 7]);
        assert_eq!(&buffers[1][..], b"abc");
    }

    #[test]
    fn a_place_without_a_resolver_or_handed_over_twice_is_corrupt() {
        let slot = ArenaSlot { offset: 1, len: 1 };
        let one = || Bytes::from_lend(InArena(vec![0], slot));
        let decoder = FrameDecoder::default();
        let error = decoder
            .decode(&frame_with(vec![one()]))
            .expect_err("no resolver");
        assert!(error.to_string().contains("shares no arena"), "{error}");
        let resolver: Arc<dyn ArenaResolver> = Arc::new(Resolver::default());
        let error = with_arena(resolver, || decoder.decode(&frame_with(vec![one(), one()])))
            .expect_err("twice");
        assert!(error.to_string().contains("handed over twice"), "{error}");
    }
}
