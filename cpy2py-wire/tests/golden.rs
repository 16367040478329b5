//! Golden bytes: the exact encoding of every message kind, every [`Op`] and
//! every [`Value`] variant, written out by hand from postcard's format.
//!
//! These vectors document the wire format of protocol version 6 (version 5
//! lacked the arena messages and sent every pickle buffer inline without a
//! tag, version 4 also `Message::Cancel`, version 3 also `ObjectRef::kind` and
//! `Value::Pickle::buffers`, version 2 also `Outcome::Failed`, version 1 also
//! `Value::IntList` and `Value::FloatList`). Any change to
//! the types that alters a byte breaks a test here; such a change must raise
//! [`PROTOCOL_VERSION`] and update the vectors.
//!
//! postcard, as used here:
//! - frame header: body length as `u32` little-endian (4 bytes), then the body;
//! - unsigned integers (`u32`, `u64`, lengths, enum variant indices): LEB128
//!   varint, 7 bits per byte, low bits first, high bit set on all but the last;
//! - `i64`: zigzag (`0, -1, 1, -2, ...` → `0, 1, 2, 3, ...`) then varint;
//! - `u8` and `bool`: one raw byte;
//! - `f64`: the 8 bytes of its bit pattern, little-endian;
//! - `String`, byte strings and sequences: varint length then the bytes or
//!   elements; `Option`: `0` or `1` then the value; structs, tuples and newtypes:
//!   their fields in order with nothing in between;
//! - enums: the variant's declaration index as a varint, then its fields.

mod common;

use common::{VALUE_PREFIX, decode_exactly, frame, hex, value_envelope, value_frame};
use cpy2py_wire::{
    Bytes, ChainId, Envelope, Failure, Hello, Message, ObjectId, ObjectRef, Op, Outcome,
    PROTOCOL_VERSION, PeerId, RefKind, Release, RemoteError, Reply, Request, RequestId, Value,
};

/// Checks that `envelope` encodes to exactly the concatenation of `parts`
/// (header included) and that those bytes decode back to `envelope`.
fn assert_frame(envelope: Envelope, parts: &[&[u8]]) {
    let expected = parts.concat();
    let actual = frame(&envelope);
    assert_eq!(
        actual,
        expected,
        "\n  actual: {}\nexpected: {}",
        hex(&actual),
        hex(&expected)
    );
    assert_eq!(decode_exactly(&expected), envelope);
}

/// Checks that `value`, carried by [`value_envelope`], encodes to
/// [`VALUE_PREFIX`] followed by exactly the concatenation of `parts`, and that
/// those bytes decode back to `value`.
fn assert_value(value: Value, parts: &[&[u8]]) {
    let expected = parts.concat();
    let actual = frame(&value_envelope(value.clone()));
    let body_len = u32::try_from(VALUE_PREFIX.len() + expected.len()).unwrap();
    assert_eq!(actual[..4], body_len.to_le_bytes(), "header");
    assert_eq!(actual[4..10], VALUE_PREFIX, "envelope prefix");
    assert_eq!(
        actual[10..],
        expected[..],
        "\n  actual: {}\nexpected: {}",
        hex(&actual[10..]),
        hex(&expected)
    );
    assert_eq!(
        decode_exactly(&value_frame(&expected)),
        value_envelope(value)
    );
}

#[test]
fn protocol_version_matches_these_vectors() {
    assert_eq!(PROTOCOL_VERSION, 6);
}

// ---------------------------------------------------------------------------
// Frames and messages
// ---------------------------------------------------------------------------

#[test]
fn shutdown() {
    assert_frame(
        Envelope {
            src: PeerId::MASTER,
            dst: PeerId(1),
            message: Message::Shutdown,
        },
        &[
            &[3, 0, 0, 0], // header: body of 3 bytes
            &[0],          // src: PeerId(0)
            &[1],          // dst: PeerId(1)
            &[4],          // Message::Shutdown
        ],
    );
}

#[test]
fn peer_ids_are_varints() {
    assert_frame(
        Envelope {
            src: PeerId(u32::MAX),
            dst: PeerId(128),
            message: Message::Shutdown,
        },
        &[
            &[8, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff, 0x0f], // u32::MAX: 5-byte varint
            &[0x80, 0x01],                   // 128
            &[4],
        ],
    );
}

#[test]
fn header_is_u32_little_endian() {
    // Body: 6 bytes of prefix, Value::Bytes (1), length 300 (2), 300 bytes.
    let frame = frame(&value_envelope(Value::Bytes(Bytes::from(vec![0xab; 300]))));
    assert_eq!(frame.len(), 4 + 309);
    assert_eq!(frame[..4], [0x35, 0x01, 0x00, 0x00]); // 309 = 0x0135
    assert_eq!(frame[10..13], [6, 0xac, 0x02]); // Value::Bytes, 300 = 0xac 0x02
    assert!(frame[13..].iter().all(|&b| b == 0xab));
}

#[test]
fn hello() {
    assert_frame(
        Envelope {
            src: PeerId::MASTER,
            dst: PeerId(1),
            message: Message::Hello(Hello {
                protocol: 1,
                peer: PeerId(1),
                twin_id: "pypy3".into(),
                pid: 4242,
                interpreter: "PyPy".into(),
                version: "3.9".into(),
                pickle_protocol: 5,
            }),
        },
        &[
            &[23, 0, 0, 0],
            &[0, 1], // src, dst
            &[0],    // Message::Hello
            &[1],    // protocol
            &[1],    // peer
            &[5],    // twin_id: length 5
            b"pypy3",
            &[0x92, 0x21], // pid 4242 = 0x1092: 0x12 | 0x80, 0x21
            &[4],          // interpreter
            b"PyPy",
            &[3], // version
            b"3.9",
            &[5], // pickle_protocol: a raw u8
        ],
    );
}

/// Envelope and request fields in front of every op below: src PeerId(1), dst
/// PeerId(0), `Message::Request` (1), `RequestId { index: 3, generation: 7 }`,
/// `ChainId { origin: PeerId(1), thread: 200 }` (200 = 0xc8 0x01).
const REQUEST_PREFIX: &[u8] = &[1, 0, 1, 3, 7, 1, 0xc8, 0x01];

/// `time_left_us: None`, after every request's op.
const NO_DEADLINE: &[u8] = &[0];

fn request(op: Op) -> Envelope {
    Envelope {
        src: PeerId(1),
        dst: PeerId::MASTER,
        message: Message::Request(Request {
            id: RequestId {
                index: 3,
                generation: 7,
            },
            chain: ChainId {
                origin: PeerId(1),
                thread: 200,
            },
            op,
            time_left_us: None,
        }),
    }
}

#[test]
fn request_call_global() {
    assert_frame(
        request(Op::CallGlobal {
            module: "math".into(),
            qualname: "pow".into(),
            args: vec![Value::Int(2), Value::Int(-3)],
            kwargs: vec![("mod".into(), Value::Int(7))],
        }),
        &[
            &[31, 0, 0, 0],
            REQUEST_PREFIX,
            &[0], // Op::CallGlobal
            &[4], // module
            b"math",
            &[3], // qualname
            b"pow",
            &[2],    // args: 2 values
            &[2, 4], // Value::Int(2): zigzag 4
            &[2, 5], // Value::Int(-3): zigzag 5
            &[1],    // kwargs: 1 pair
            &[3],
            b"mod",
            &[2, 14], // Value::Int(7): zigzag 14
            NO_DEADLINE,
        ],
    );
}

#[test]
fn request_call_value() {
    assert_frame(
        request(Op::CallValue {
            callable: Value::Global {
                module: "builtins".into(),
                qualname: "print".into(),
            },
            args: vec![Value::Str("hi".into())],
            kwargs: vec![("end".into(), Value::Str(String::new()))],
        }),
        &[
            &[38, 0, 0, 0],
            REQUEST_PREFIX,
            &[1],     // Op::CallValue
            &[12, 8], // Value::Global, module
            b"builtins",
            &[5], // qualname
            b"print",
            &[1],    // args: 1 value
            &[5, 2], // Value::Str
            b"hi",
            &[1, 3], // kwargs: 1 pair
            b"end",
            &[5, 0], // Value::Str("")
            NO_DEADLINE,
        ],
    );
}

#[test]
fn request_call_method() {
    assert_frame(
        request(Op::CallMethod {
            target: ObjectRef {
                owner: PeerId::MASTER,
                id: ObjectId(5),
                class: Some(("app".into(), "Counter".into())),
                kind: RefKind::Twin,
            },
            name: "add".into(),
            args: vec![Value::Int(1)],
            kwargs: vec![],
        }),
        &[
            &[34, 0, 0, 0],
            REQUEST_PREFIX,
            &[2],    // Op::CallMethod
            &[0, 5], // ObjectRef: owner, id
            &[1, 3], // class: Some, module
            b"app",
            &[7], // qualname
            b"Counter",
            &[0], // kind: RefKind::Twin
            &[3], // name
            b"add",
            &[1, 2, 2], // args: [Value::Int(1)]
            &[0],       // kwargs: empty
            NO_DEADLINE,
        ],
    );
}

/// `Value::Ref(ObjectRef { owner: PeerId(0), id: ObjectId(5), class: None, kind: Twin })`.
const REF_5: &[u8] = &[13, 0, 5, 0, 0];

fn ref_5() -> Value {
    Value::Ref(ObjectRef {
        owner: PeerId::MASTER,
        id: ObjectId(5),
        class: None,
        kind: RefKind::Twin,
    })
}

#[test]
fn request_get_attr() {
    assert_frame(
        request(Op::GetAttr {
            target: ref_5(),
            name: "x".into(),
        }),
        &[
            &[17, 0, 0, 0],
            REQUEST_PREFIX,
            &[3],
            REF_5,
            &[1],
            b"x",
            NO_DEADLINE,
        ],
    );
}

#[test]
fn request_set_attr() {
    assert_frame(
        request(Op::SetAttr {
            target: ref_5(),
            name: "x".into(),
            value: Value::Float(1.5),
        }),
        &[
            &[26, 0, 0, 0],
            REQUEST_PREFIX,
            &[4], // Op::SetAttr
            REF_5,
            &[1],
            b"x",
            &[4, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f], // Value::Float(1.5) = 0x3ff8_0000_0000_0000
            NO_DEADLINE,
        ],
    );
}

#[test]
fn request_del_attr() {
    assert_frame(
        request(Op::DelAttr {
            target: ref_5(),
            name: "x".into(),
        }),
        &[
            &[17, 0, 0, 0],
            REQUEST_PREFIX,
            &[5],
            REF_5,
            &[1],
            b"x",
            NO_DEADLINE,
        ],
    );
}

#[test]
fn request_instantiate() {
    assert_frame(
        request(Op::Instantiate {
            class: Value::Global {
                module: "app".into(),
                qualname: "Counter".into(),
            },
            args: vec![],
            kwargs: vec![("start".into(), Value::Int(10))],
        }),
        &[
            &[33, 0, 0, 0],
            REQUEST_PREFIX,
            &[6],     // Op::Instantiate
            &[12, 3], // Value::Global
            b"app",
            &[7],
            b"Counter",
            &[0],    // args: empty
            &[1, 5], // kwargs: 1 pair
            b"start",
            &[2, 20], // Value::Int(10): zigzag 20
            NO_DEADLINE,
        ],
    );
}

#[test]
fn request_with_a_deadline() {
    let mut envelope = request(Op::DelAttr {
        target: ref_5(),
        name: "x".into(),
    });
    if let Message::Request(request) = &mut envelope.message {
        request.time_left_us = Some(1_500_000);
    }
    assert_frame(
        envelope,
        &[
            &[20, 0, 0, 0],
            REQUEST_PREFIX,
            &[5],
            REF_5,
            &[1],
            b"x",
            &[1, 0xe0, 0xc6, 0x5b], // Some(1_500_000): varint of 0x16e360
        ],
    );
}

#[test]
fn cancel() {
    assert_frame(
        Envelope {
            src: PeerId::MASTER,
            dst: PeerId(2),
            message: Message::Cancel {
                id: RequestId {
                    index: 300,
                    generation: 1,
                },
            },
        },
        &[
            &[6, 0, 0, 0],
            &[0, 2],          // src, dst
            &[7],             // Message::Cancel
            &[0xac, 0x02, 1], // RequestId { index: 300, generation: 1 }
        ],
    );
}

#[test]
fn arena_offer_answer_and_free() {
    let cases: [(Message, &[u8]); 3] = [
        (
            Message::ArenaOffer {
                fd: 5,
                size: 1 << 29,
            },
            &[8, 5, 0x80, 0x80, 0x80, 0x80, 0x02], // ArenaOffer, fd, size (varint)
        ),
        (Message::ArenaAnswer { accepted: true }, &[9, 1]),
        (
            Message::ArenaFree {
                offsets: vec![0, 4096],
            },
            &[10, 2, 0, 0x80, 0x20], // ArenaFree, 2 offsets
        ),
    ];
    for (message, body) in cases {
        let len = u8::try_from(2 + body.len()).unwrap();
        assert_frame(
            Envelope {
                src: PeerId(1),
                dst: PeerId::MASTER,
                message,
            },
            &[&[len, 0, 0, 0], &[1, 0], body],
        );
    }
}

/// A buffer in an arena on the sending side: only its place is encoded.
struct InArena;

impl AsRef<[u8]> for InArena {
    fn as_ref(&self) -> &[u8] {
        b"not encoded"
    }
}

impl cpy2py_wire::Lend for InArena {
    fn arena_slot(&self) -> Option<cpy2py_wire::ArenaSlot> {
        Some(cpy2py_wire::ArenaSlot {
            offset: 4096,
            len: 300,
        })
    }
}

#[test]
fn a_pickle_buffer_in_an_arena_is_its_place() {
    let value = Value::Pickle {
        data: Bytes::from(vec![b'.']),
        refs: vec![],
        buffers: vec![Bytes::from_lend(InArena)],
    };
    let actual = frame(&value_envelope(value));
    let expected: &[u8] = &[
        14, // Value::Pickle
        1, b'.', // data
        0,    // refs: none
        1, 1, // buffers: 1, in the arena
        0x80, 0x20, // offset 4096
        0xac, 0x02, // len 300
    ];
    assert_eq!(actual[10..], expected[..], "{}", hex(&actual[10..]));
}

#[test]
fn reply_ok() {
    assert_frame(
        Envelope {
            src: PeerId::MASTER,
            dst: PeerId(1),
            message: Message::Reply(Reply {
                id: RequestId {
                    index: 3,
                    generation: 7,
                },
                outcome: Outcome::Ok(Value::Int(42)),
            }),
        },
        &[
            &[8, 0, 0, 0],
            &[0, 1],  // src, dst
            &[2],     // Message::Reply
            &[3, 7],  // RequestId
            &[0],     // Outcome::Ok
            &[2, 84], // Value::Int(42): zigzag 84
        ],
    );
}

#[test]
fn reply_err() {
    assert_frame(
        Envelope {
            src: PeerId::MASTER,
            dst: PeerId(1),
            message: Message::Reply(Reply {
                id: RequestId {
                    index: 3,
                    generation: 7,
                },
                outcome: Outcome::Err(RemoteError {
                    refs: Vec::new(),
                    type_path: "builtins.KeyError".into(),
                    message: "k".into(),
                    traceback: "tb".into(),
                    pickle: Some(Bytes::from(vec![0x80, 0x04])),
                }),
            }),
        },
        &[
            &[34, 0, 0, 0],
            &[0, 1], // src, dst
            &[2],    // Message::Reply
            &[3, 7], // RequestId
            &[1],    // Outcome::Err
            &[17],   // type_path
            b"builtins.KeyError",
            &[1], // message
            b"k",
            &[2], // traceback
            b"tb",
            &[1, 2, 0x80, 0x04], // pickle: Some, 2 bytes
            &[0],                // refs: none
        ],
    );
}

/// A reply whose outcome is `failure`, from the master to peer 1.
fn failed(failure: Failure) -> Envelope {
    Envelope {
        src: PeerId::MASTER,
        dst: PeerId(1),
        message: Message::Reply(Reply {
            id: RequestId {
                index: 3,
                generation: 7,
            },
            outcome: Outcome::Failed(failure),
        }),
    }
}

#[test]
fn reply_failed() {
    let head: &[u8] = &[0, 1, 2, 3, 7, 2]; // src, dst, Message::Reply, RequestId, Outcome::Failed
    assert_frame(
        failed(Failure::PeerLost {
            peer: PeerId(2),
            twin_id: "py".into(),
            reason: "gone".into(),
        }),
        &[&[16, 0, 0, 0], head, &[0, 2], &[2], b"py", &[4], b"gone"],
    );
    assert_frame(
        failed(Failure::UnknownPeer { peer: PeerId(300) }),
        &[&[9, 0, 0, 0], head, &[1], &[0xac, 0x02]], // 300 as a varint
    );
    assert_frame(
        failed(Failure::Unsendable {
            reason: "big".into(),
        }),
        &[&[11, 0, 0, 0], head, &[2], &[3], b"big"],
    );
    assert_frame(
        failed(Failure::Panicked {
            message: "oops".into(),
        }),
        &[&[12, 0, 0, 0], head, &[3], &[4], b"oops"],
    );
}

#[test]
fn release() {
    assert_frame(
        Envelope {
            src: PeerId(2),
            dst: PeerId::MASTER,
            message: Message::Release(Release {
                objects: vec![(ObjectId(1), 1), (ObjectId(300), 2)],
            }),
        },
        &[
            &[9, 0, 0, 0],
            &[2, 0],          // src, dst
            &[3],             // Message::Release
            &[2],             // 2 pairs
            &[1, 1],          // (ObjectId(1), 1)
            &[0xac, 0x02, 2], // (ObjectId(300), 2): 300 = 0x12c
        ],
    );
}

// ---------------------------------------------------------------------------
// Values (after VALUE_PREFIX)
// ---------------------------------------------------------------------------

#[test]
fn value_none() {
    assert_value(Value::None, &[&[0]]);
}

#[test]
fn value_bool() {
    assert_value(Value::Bool(false), &[&[1, 0]]);
    assert_value(Value::Bool(true), &[&[1, 1]]);
}

#[test]
fn value_int_small() {
    assert_value(Value::Int(0), &[&[2, 0]]);
    assert_value(Value::Int(5), &[&[2, 10]]);
    assert_value(Value::Int(63), &[&[2, 126]]);
    // 64 zigzags to 128, the first two-byte varint.
    assert_value(Value::Int(64), &[&[2, 0x80, 0x01]]);
    assert_value(Value::Int(300), &[&[2, 0xd8, 0x04]]); // 600 = 0x258
}

#[test]
fn value_int_negative() {
    assert_value(Value::Int(-1), &[&[2, 1]]);
    assert_value(Value::Int(-3), &[&[2, 5]]);
    assert_value(Value::Int(-64), &[&[2, 127]]);
    assert_value(Value::Int(-65), &[&[2, 0x81, 0x01]]);
}

#[test]
fn value_int_large() {
    // i64::MAX zigzags to u64::MAX - 1: a 10-byte varint.
    assert_value(Value::Int(i64::MAX), &[&[2, 0xfe], &[0xff; 8], &[0x01]]);
    // i64::MIN zigzags to u64::MAX.
    assert_value(Value::Int(i64::MIN), &[&[2], &[0xff; 9], &[0x01]]);
}

#[test]
fn value_big_int() {
    // 2**64: two's complement, little-endian, minimal: eight 0x00 then 0x01.
    assert_value(
        Value::BigInt(Bytes::from(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])),
        &[&[3, 9], &[0; 8], &[1]],
    );
}

#[test]
fn value_float() {
    assert_value(Value::Float(1.5), &[&[4, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f]]);
    assert_value(Value::Float(-0.0), &[&[4, 0, 0, 0, 0, 0, 0, 0, 0x80]]);
    assert_value(
        Value::Float(f64::INFINITY),
        &[&[4, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f]],
    );
}

#[test]
fn value_str() {
    assert_value(Value::Str(String::new()), &[&[5, 0]]);
    // Length in bytes of UTF-8, not in characters: "é" is 0xc3 0xa9.
    assert_value(Value::Str("hé".into()), &[&[5, 3, b'h', 0xc3, 0xa9]]);
}

#[test]
fn value_bytes() {
    assert_value(
        Value::Bytes(Bytes::from(vec![0x00, 0xff, 0x10])),
        &[&[6, 3, 0x00, 0xff, 0x10]],
    );
}

#[test]
fn value_list() {
    assert_value(
        Value::List(vec![Value::Int(1), Value::None]),
        &[&[7, 2], &[2, 2], &[0]],
    );
}

#[test]
fn value_tuple() {
    assert_value(
        Value::Tuple(vec![Value::Bool(true), Value::Str("a".into())]),
        &[&[8, 2], &[1, 1], &[5, 1, b'a']],
    );
}

#[test]
fn value_dict() {
    assert_value(
        Value::Dict(vec![
            (Value::Str("a".into()), Value::Int(1)),
            (Value::None, Value::List(vec![])),
        ]),
        &[
            &[9, 2],       // Value::Dict, 2 pairs
            &[5, 1, b'a'], // key "a"
            &[2, 2],       // value 1
            &[0],          // key None
            &[7, 0],       // value []
        ],
    );
}

#[test]
fn value_set() {
    assert_value(Value::Set(vec![]), &[&[10, 0]]);
    assert_value(Value::Set(vec![Value::Int(1)]), &[&[10, 1, 2, 2]]);
}

#[test]
fn value_frozen_set() {
    assert_value(
        Value::FrozenSet(vec![Value::Int(-1), Value::Int(1)]),
        &[&[11, 2], &[2, 1], &[2, 2]],
    );
}

#[test]
fn value_global() {
    assert_value(
        Value::Global {
            module: "os".into(),
            qualname: "getpid".into(),
        },
        &[&[12, 2], b"os", &[6], b"getpid"],
    );
}

#[test]
fn value_ref() {
    assert_value(
        Value::Ref(ObjectRef {
            owner: PeerId(2),
            id: ObjectId(200),
            class: Some(("app".into(), "Counter".into())),
            kind: RefKind::Twin,
        }),
        &[
            &[13],         // Value::Ref
            &[2],          // owner
            &[0xc8, 0x01], // id 200
            &[1, 3],       // class: Some, module
            b"app",
            &[7],
            b"Counter",
            &[0], // kind: RefKind::Twin
        ],
    );
    assert_value(
        Value::Ref(ObjectRef {
            owner: PeerId(1),
            id: ObjectId(7),
            class: None,
            kind: RefKind::Twin,
        }),
        &[&[13, 1, 7, 0, 0]],
    );
    // A generic reference: methods bits 0, 1, 2 (__len__, __iter__, __next__)
    // and bit 12 (__hash__) = 0x1007, varint 0x87 0x20; hashable: true.
    assert_value(
        Value::Ref(ObjectRef {
            owner: PeerId(1),
            id: ObjectId(7),
            class: Some(("builtins".into(), "generator".into())),
            kind: RefKind::Generic {
                methods: 0x1007,
                hashable: true,
            },
        }),
        &[
            &[13, 1, 7],
            &[1, 8], // class: Some, module
            b"builtins",
            &[9],
            b"generator",
            &[1],          // RefKind::Generic
            &[0x87, 0x20], // methods
            &[1],          // hashable
        ],
    );
}

#[test]
fn value_pickle() {
    assert_value(
        Value::Pickle {
            data: Bytes::from(vec![0x80, 0x05, b'.']),
            refs: vec![ObjectRef {
                owner: PeerId(1),
                id: ObjectId(9),
                class: None,
                kind: RefKind::Twin,
            }],
            buffers: vec![Bytes::from(vec![7, 8])],
        },
        &[
            &[14],                  // Value::Pickle
            &[3, 0x80, 0x05, b'.'], // data
            &[1],                   // refs: 1
            &[1, 9, 0, 0],          // owner, id, class None, kind Twin
            &[1, 0, 2, 7, 8],       // buffers: 1, inline, of 2 bytes
        ],
    );
}

#[test]
fn value_error() {
    assert_value(
        Value::Error(Box::new(RemoteError {
            refs: Vec::new(),
            type_path: "builtins.ValueError".into(),
            message: "bad".into(),
            traceback: String::new(),
            pickle: None,
        })),
        &[
            &[15, 19], // Value::Error (the Box is transparent), type_path
            b"builtins.ValueError",
            &[3],
            b"bad",
            &[0], // traceback ""
            &[0], // pickle None
            &[0], // refs: none
        ],
    );
}

#[test]
fn value_int_list() {
    let value = Value::int_list(&[1, -2, i64::MAX]);
    assert_eq!(
        value.ints().unwrap().collect::<Vec<_>>(),
        vec![1, -2, i64::MAX]
    );
    assert_value(
        value,
        &[
            &[16, 24], // Value::IntList, 24 bytes
            &1i64.to_le_bytes(),
            &(-2i64).to_le_bytes(),
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ],
    );
}

#[test]
fn value_float_list() {
    let value = Value::float_list(&[1.5, -0.0]);
    let back: Vec<u64> = value.floats().unwrap().map(f64::to_bits).collect();
    assert_eq!(back, vec![1.5f64.to_bits(), (-0.0f64).to_bits()]);
    assert_value(
        value,
        &[
            &[17, 16], // Value::FloatList, 16 bytes
            &[0, 0, 0, 0, 0, 0, 0xf8, 0x3f],
            &[0, 0, 0, 0, 0, 0, 0, 0x80],
        ],
    );
}

#[test]
fn packed_lists_of_partial_items_are_refused() {
    for variant in [16u8, 17] {
        let mut body = VALUE_PREFIX.to_vec();
        body.extend_from_slice(&[variant, 7, 1, 2, 3, 4, 5, 6, 7]);
        let mut bytes = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let r = cpy2py_wire::FrameDecoder::default().decode(&bytes);
        assert!(
            matches!(r, Err(cpy2py_wire::WireError::Malformed(_))),
            "variant {variant}: {r:?}"
        );
    }
}
