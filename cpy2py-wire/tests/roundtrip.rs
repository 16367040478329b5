//! Round trips: any [`Value`] and any [`Envelope`] survive `encode_frame`
//! followed by `FrameDecoder::decode`, and re-encoding the decoded envelope
//! gives the same bytes (so floats keep their exact bit patterns).

mod common;

use common::{decode_exactly, envelope, frame, leaf_value, value, value_envelope};
use cpy2py_wire::{Bytes, HEADER_LEN, Message, Outcome, Value, frame_length};
use proptest::prelude::*;

/// Encodes, decodes and re-encodes `envelope`, checking every step.
fn assert_round_trip(envelope: &cpy2py_wire::Envelope) {
    let bytes = frame(envelope);
    assert_eq!(frame_length(&bytes), Some(bytes.len() - HEADER_LEN));
    let decoded = decode_exactly(&bytes);
    assert_eq!(&decoded, envelope);
    assert_eq!(frame(&decoded), bytes, "re-encoding changed the bytes");
}

/// The value carried by a [`value_envelope`].
fn carried_value(envelope: cpy2py_wire::Envelope) -> Value {
    match envelope.message {
        Message::Reply(reply) => match reply.outcome {
            Outcome::Ok(value) => value,
            other => panic!("expected Outcome::Ok, got {other:?}"),
        },
        other => panic!("expected a reply, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_leaf_value_round_trips(v in leaf_value()) {
        assert_round_trip(&value_envelope(v));
    }

    #[test]
    fn any_value_round_trips(v in value()) {
        assert_round_trip(&value_envelope(v));
    }

    #[test]
    fn any_envelope_round_trips(e in envelope()) {
        assert_round_trip(&e);
    }

    #[test]
    fn floats_keep_their_bits(bits in any::<u64>()) {
        // Any bit pattern, NaNs with payloads included: compare bits, not values.
        let bytes = frame(&value_envelope(Value::Float(f64::from_bits(bits))));
        match carried_value(decode_exactly(&bytes)) {
            Value::Float(f) => prop_assert_eq!(f.to_bits(), bits),
            other => prop_assert!(false, "expected a float, got {:?}", other),
        }
    }
}

#[test]
fn special_floats_round_trip() {
    for f in [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        f64::MIN_POSITIVE / 2.0, // subnormal
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
    ] {
        assert_round_trip(&value_envelope(Value::Float(f)));
    }
}

#[test]
fn nan_round_trips_bit_exact() {
    let bytes = frame(&value_envelope(Value::Float(f64::NAN)));
    match carried_value(decode_exactly(&bytes)) {
        Value::Float(f) => assert_eq!(f.to_bits(), f64::NAN.to_bits()),
        other => panic!("expected a float, got {other:?}"),
    }
}

#[test]
fn large_byte_string_round_trips() {
    let data: Vec<u8> = (0..(4usize << 20)).map(|i| (i % 251) as u8).collect();
    let bytes = frame(&value_envelope(Value::Bytes(Bytes::from(data.clone()))));
    match carried_value(decode_exactly(&bytes)) {
        Value::Bytes(b) => assert!(*b == data[..], "4 MiB byte string changed"),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn long_list_round_trips() {
    let list = Value::List((0..100_000).map(Value::Int).collect());
    assert_round_trip(&value_envelope(list));
}

#[test]
fn unicode_strings_round_trip() {
    for s in ["", "\0", "héllo", "日本語", "🐍🦀", "\u{10ffff}", "a\u{0}b"] {
        assert_round_trip(&value_envelope(Value::Str(s.into())));
    }
}
