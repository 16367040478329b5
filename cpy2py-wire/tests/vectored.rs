//! Vectored encoding and shared decoding: large byte strings skip the frame
//! buffer on the way out and are views of the received frame on the way in,
//! and neither changes a single byte on the wire.

mod common;

use common::{envelope, frame, value_envelope};
use cpy2py_wire::{
    Bytes, Envelope, FrameDecoder, HEADER_LEN, Message, Outcome, Reply, Splice, Value,
    encode_frame_vectored,
};
use proptest::prelude::*;

/// Joins a vectored encoding back into one contiguous frame.
fn join(head: &[u8], splices: &[Splice]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for s in splices {
        out.extend_from_slice(&head[at..s.at]);
        out.extend_from_slice(&s.bytes);
        at = s.at;
    }
    out.extend_from_slice(&head[at..]);
    out
}

fn big(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

/// An envelope with large byte strings in several places: top level, inside a
/// list, and as pickle data.
fn with_large_strings() -> Envelope {
    value_envelope(Value::List(vec![
        Value::Bytes(big(Bytes::SHARE_MIN, 1)),
        Value::Str("between".into()),
        Value::Bytes(big(100, 2)),
        Value::Pickle {
            data: big(Bytes::SHARE_MIN * 3 + 5, 3),
            refs: Vec::new(),
            buffers: Vec::new(),
        },
        Value::Bytes(big(1 << 20, 4)),
    ]))
}

#[test]
fn large_strings_are_spliced_and_the_joined_frame_is_unchanged() {
    let envelope = with_large_strings();
    let mut head = vec![0xee; 7]; // something already in the buffer
    let mut splices = Vec::new();
    let total = encode_frame_vectored(&envelope, &mut head, &mut splices).expect("encodes");
    assert_eq!(splices.len(), 3, "the three strings over the threshold");
    assert!(splices.iter().all(|s| s.bytes.len() >= Bytes::SHARE_MIN));
    let joined = join(&head, &splices);
    assert_eq!(&joined[..7], &[0xee; 7]);
    assert_eq!(joined.len() - 7, total);
    assert_eq!(
        joined[7..],
        frame(&envelope)[..],
        "same bytes as encode_frame"
    );
    let spliced: usize = splices.iter().map(|s| s.bytes.len()).sum();
    assert_eq!(
        head.len() - 7 + spliced,
        total,
        "the buffer holds no spliced byte"
    );
}

#[test]
fn owned_decoding_shares_large_strings_only() {
    let envelope = with_large_strings();
    let decoded = FrameDecoder::default()
        .decode_owned(frame(&envelope))
        .expect("decodes");
    assert_eq!(decoded, envelope);
    let cpy2py_wire::Message::Reply(reply) = decoded.message else {
        unreachable!()
    };
    let cpy2py_wire::Outcome::Ok(Value::List(items)) = reply.outcome else {
        unreachable!()
    };
    let shared: Vec<bool> = items
        .iter()
        .filter_map(|v| match v {
            Value::Bytes(b) | Value::Pickle { data: b, .. } => Some(b.is_shared()),
            _ => None,
        })
        .collect();
    assert_eq!(shared, vec![true, false, true, true]);
}

#[test]
fn owned_decoding_refuses_partial_and_padded_frames() {
    let bytes = frame(&with_large_strings());
    let decoder = FrameDecoder::default();
    let short = decoder.decode_owned(bytes[..bytes.len() - 1].to_vec());
    assert!(
        matches!(short, Err(cpy2py_wire::WireError::Incomplete { len, needed }) if needed == bytes.len() && len + 1 == needed),
        "{short:?}"
    );
    assert!(decoder.decode_owned(bytes[..2].to_vec()).is_err());
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(decoder.decode_owned(padded).is_err());
    let tiny = FrameDecoder::new(16);
    assert!(tiny.decode_owned(bytes).is_err(), "over the frame limit");
}

#[test]
fn shared_strings_survive_the_frame_going_away() {
    let decoded = FrameDecoder::default()
        .decode_owned(frame(&value_envelope(Value::Bytes(big(1 << 16, 9)))))
        .unwrap();
    // The frame buffer is now owned only by the views inside `decoded`.
    let again = frame(&decoded);
    assert_eq!(
        again.len(),
        HEADER_LEN + common::VALUE_PREFIX.len() + 1 + 3 + (1 << 16)
    );
    assert_eq!(decoded, value_envelope(Value::Bytes(big(1 << 16, 9))));
}

/// A frame buffer that reports when it is dropped, as a recycling reader's does.
struct Tracked(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicBool>);

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl cpy2py_wire::Lend for Tracked {}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_frame_owner_is_dropped_with_its_last_view_and_not_before() {
    use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering};
    let dropped = Arc::new(AtomicBool::new(false));
    let owner = Tracked(
        frame(&value_envelope(Value::Bytes(big(1 << 16, 3)))),
        Arc::clone(&dropped),
    );
    let decoded = FrameDecoder::default().decode_owned(owner).unwrap();
    assert!(
        !dropped.load(Ordering::SeqCst),
        "a view still needs the frame"
    );
    let kept = decoded.clone();
    drop(decoded);
    assert!(
        !dropped.load(Ordering::SeqCst),
        "a clone of the view remains"
    );
    assert_eq!(kept, value_envelope(Value::Bytes(big(1 << 16, 3))));
    drop(kept);
    assert!(dropped.load(Ordering::SeqCst), "the last view is gone");

    // Without a large string there is no view: the owner goes at once.
    let small = Arc::new(AtomicBool::new(false));
    let owner = Tracked(frame(&value_envelope(Value::Int(7))), Arc::clone(&small));
    let decoded = FrameDecoder::default().decode_owned(owner).unwrap();
    assert!(small.load(Ordering::SeqCst));
    assert_eq!(decoded, value_envelope(Value::Int(7)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_envelope_encodes_the_same_bytes_vectored(e in envelope()) {
        let mut head = Vec::new();
        let mut splices = Vec::new();
        let total = encode_frame_vectored(&e, &mut head, &mut splices).expect("encodes");
        let joined = join(&head, &splices);
        prop_assert_eq!(joined.len(), total);
        prop_assert_eq!(joined, frame(&e));
    }

    #[test]
    fn any_envelope_decodes_owned_as_it_was(e in envelope()) {
        let decoded = FrameDecoder::default().decode_owned(frame(&e)).unwrap();
        prop_assert_eq!(decoded, e);
    }
}

#[test]
fn the_last_view_of_a_received_frame_can_be_written_in_place() {
    let decoder = FrameDecoder::new(1 << 24);
    let value = Value::Pickle {
        data: Bytes::from(vec![1, 2, 3]),
        refs: Vec::new(),
        buffers: vec![big(Bytes::SHARE_MIN * 2, 9), big(Bytes::SHARE_MIN, 4)],
    };
    let received = decoder
        .decode_owned(frame(&value_envelope(value)))
        .expect("decodes");
    let Message::Reply(Reply {
        outcome: Outcome::Ok(Value::Pickle { mut buffers, .. }),
        ..
    }) = received.message
    else {
        panic!("not a pickle")
    };
    let mut second = buffers.pop().expect("two buffers");
    let mut first = buffers.pop().expect("two buffers");
    // Both views share the frame: neither may write.
    assert!(first.unique_mut().is_none() && second.unique_mut().is_none());
    let copy = second.clone();
    drop(first);
    assert!(second.unique_mut().is_none(), "a clone still shares it");
    drop(copy);
    let expected = big(Bytes::SHARE_MIN, 4);
    let writable = second.unique_mut().expect("the last view");
    assert_eq!(&*writable, &*expected);
    writable[0] ^= 0xff;
    assert_ne!(second[0], expected[0]);
    // Read-only owners never lend their memory.
    assert!(Bytes::from_owner(vec![0u8; 8]).unique_mut().is_none());
    assert!(Bytes::from(vec![0u8; 8]).unique_mut().is_some());
}
