//! Helpers shared by the cpy2py-wire integration tests: frame builders that
//! work on raw bytes and proptest strategies for every wire type.
//!
//! Each test file compiles its own copy of this module and uses only part of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

use cpy2py_wire::{
    Bytes, ChainId, Envelope, Failure, FrameDecoder, HEADER_LEN, Hello, Message, ObjectId,
    ObjectRef, Op, Outcome, PeerId, RefKind, Release, RemoteError, Reply, Request, RequestId,
    Value, encode_frame,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Body bytes that precede a value wrapped by [`value_envelope`]:
/// src 0, dst 0, `Message::Reply` (variant 2), `RequestId { index: 0,
/// generation: 0 }`, `Outcome::Ok` (variant 0).
pub const VALUE_PREFIX: [u8; 6] = [0, 0, 2, 0, 0, 0];

/// An envelope carrying `value` as the result of a reply, the smallest
/// message that holds an arbitrary [`Value`] at its top level.
pub fn value_envelope(value: Value) -> Envelope {
    Envelope {
        src: PeerId::MASTER,
        dst: PeerId::MASTER,
        message: Message::Reply(Reply {
            id: RequestId {
                index: 0,
                generation: 0,
            },
            outcome: Outcome::Ok(value),
        }),
    }
}

/// Encodes `envelope` as one frame into a fresh buffer.
pub fn frame(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(envelope, &mut out).expect("every envelope in these tests encodes");
    out
}

/// Prefixes `body` with its length header, building a frame by hand.
pub fn with_header(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("test bodies are small");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A hand-built frame whose body is [`VALUE_PREFIX`] followed by `value`.
pub fn value_frame(value: &[u8]) -> Vec<u8> {
    let mut body = VALUE_PREFIX.to_vec();
    body.extend_from_slice(value);
    with_header(&body)
}

/// Decodes `frame` with the default decoder, requiring that it is exactly one
/// whole, valid frame.
pub fn decode_exactly(frame: &[u8]) -> Envelope {
    match FrameDecoder::default().decode(frame) {
        Ok(Some((envelope, used))) => {
            assert_eq!(used, frame.len(), "decoder used part of the frame only");
            envelope
        }
        other => panic!("expected one whole frame, got {other:?}"),
    }
}

/// Formats bytes as hex for assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// proptest strategies
// ---------------------------------------------------------------------------

/// Any peer id.
pub fn peer() -> impl Strategy<Value = PeerId> {
    any::<u32>().prop_map(PeerId)
}

/// Short identifiers (module, qualname, attribute names).
pub fn name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.]{0,12}"
}

/// Any Unicode text, including NUL and non-ASCII characters.
pub fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

/// A short byte string.
pub fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// Any 64-bit float except NaN (NaN != NaN would defeat `assert_eq!`).
pub fn float() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{INFINITE, NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

/// Integers: small ones (one- and two-byte varints) and the full range.
pub fn int() -> impl Strategy<Value = i64> {
    prop_oneof![-300i64..300, any::<i64>(), Just(i64::MIN), Just(i64::MAX)]
}

/// Any object reference, with or without a class, of either kind.
pub fn object_ref() -> impl Strategy<Value = ObjectRef> {
    let kind = prop_oneof![
        Just(RefKind::Twin),
        (any::<u64>(), any::<bool>())
            .prop_map(|(methods, hashable)| RefKind::Generic { methods, hashable }),
    ];
    (
        peer(),
        any::<u64>().prop_map(ObjectId),
        option::of((name(), name())),
        kind,
    )
        .prop_map(|(owner, id, class, kind)| ObjectRef {
            owner,
            id,
            class,
            kind,
        })
}

/// Any remote error.
pub fn remote_error() -> impl Strategy<Value = RemoteError> {
    (name(), text(), text(), option::of(bytes())).prop_map(
        |(type_path, message, traceback, pickle)| RemoteError {
            refs: Vec::new(),
            type_path,
            message,
            traceback,
            pickle,
        },
    )
}

/// Every non-container [`Value`] variant.
pub fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(Value::Int),
        bytes().prop_map(Value::BigInt),
        float().prop_map(Value::Float),
        text().prop_map(Value::Str),
        bytes().prop_map(Value::Bytes),
        (name(), name()).prop_map(|(module, qualname)| Value::Global { module, qualname }),
        object_ref().prop_map(Value::Ref),
        (bytes(), vec(object_ref(), 0..4), vec(bytes(), 0..3)).prop_map(|(data, refs, buffers)| {
            Value::Pickle {
                data,
                refs,
                buffers,
            }
        }),
        remote_error().prop_map(|e| Value::Error(Box::new(e))),
        vec(int(), 0..8).prop_map(|v| Value::int_list(&v)),
        vec(float(), 0..8).prop_map(|v| Value::float_list(&v)),
    ]
}

/// Value trees nested at most `depth` containers deep, about `size` nodes.
pub fn value_tree(depth: u32, size: u32) -> impl Strategy<Value = Value> {
    leaf_value().prop_recursive(depth, size, 2, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::List),
            vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            vec((inner.clone(), inner.clone()), 0..6).prop_map(Value::Dict),
            vec(inner.clone(), 0..6).prop_map(Value::Set),
            vec(inner, 0..6).prop_map(Value::FrozenSet),
        ]
    })
}

/// Any value, nested at most 8 containers deep.
pub fn value() -> impl Strategy<Value = Value> {
    value_tree(8, 256)
}

/// Smaller values, for use inside envelopes and streams.
pub fn small_value() -> impl Strategy<Value = Value> {
    value_tree(3, 16)
}

fn args() -> impl Strategy<Value = Vec<Value>> {
    vec(small_value(), 0..4)
}

fn kwargs() -> impl Strategy<Value = Vec<(String, Value)>> {
    vec((name(), small_value()), 0..4)
}

/// Every [`Op`] variant.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (name(), name(), args(), kwargs()).prop_map(|(module, qualname, args, kwargs)| {
            Op::CallGlobal {
                module,
                qualname,
                args,
                kwargs,
            }
        }),
        (small_value(), args(), kwargs()).prop_map(|(callable, args, kwargs)| Op::CallValue {
            callable,
            args,
            kwargs
        }),
        (object_ref(), name(), args(), kwargs()).prop_map(|(target, name, args, kwargs)| {
            Op::CallMethod {
                target,
                name,
                args,
                kwargs,
            }
        }),
        (small_value(), name()).prop_map(|(target, name)| Op::GetAttr { target, name }),
        (small_value(), name(), small_value()).prop_map(|(target, name, value)| Op::SetAttr {
            target,
            name,
            value
        }),
        (small_value(), name()).prop_map(|(target, name)| Op::DelAttr { target, name }),
        (small_value(), args(), kwargs()).prop_map(|(class, args, kwargs)| Op::Instantiate {
            class,
            args,
            kwargs
        }),
    ]
}

/// Any request id.
pub fn request_id() -> impl Strategy<Value = RequestId> {
    (any::<u32>(), any::<u32>()).prop_map(|(index, generation)| RequestId { index, generation })
}

/// Any chain id.
pub fn chain() -> impl Strategy<Value = ChainId> {
    (peer(), any::<u64>()).prop_map(|(origin, thread)| ChainId { origin, thread })
}

/// Every [`Failure`] variant.
pub fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        (peer(), name(), text()).prop_map(|(peer, twin_id, reason)| Failure::PeerLost {
            peer,
            twin_id,
            reason
        }),
        peer().prop_map(|peer| Failure::UnknownPeer { peer }),
        text().prop_map(|reason| Failure::Unsendable { reason }),
        text().prop_map(|message| Failure::Panicked { message }),
    ]
}

/// Every [`Message`] variant.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u32>(),
            peer(),
            name(),
            any::<u32>(),
            text(),
            text(),
            any::<u8>()
        )
            .prop_map(
                |(protocol, peer, twin_id, pid, interpreter, version, pickle_protocol)| {
                    Message::Hello(Hello {
                        protocol,
                        peer,
                        twin_id,
                        pid,
                        interpreter,
                        version,
                        pickle_protocol,
                    })
                }
            ),
        (
            request_id(),
            chain(),
            op(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(id, chain, op, time_left_us)| Message::Request(Request {
                id,
                chain,
                op,
                time_left_us,
            })),
        (
            request_id(),
            prop_oneof![
                small_value().prop_map(Outcome::Ok),
                remote_error().prop_map(Outcome::Err),
                failure().prop_map(Outcome::Failed)
            ]
        )
            .prop_map(|(id, outcome)| Message::Reply(Reply { id, outcome })),
        vec((any::<u64>().prop_map(ObjectId), any::<u64>()), 0..8)
            .prop_map(|objects| Message::Release(Release { objects })),
        Just(Message::Shutdown),
        request_id().prop_map(|id| Message::Cancel { id }),
    ]
}

/// Any envelope.
pub fn envelope() -> impl Strategy<Value = Envelope> {
    (peer(), peer(), message()).prop_map(|(src, dst, message)| Envelope { src, dst, message })
}
