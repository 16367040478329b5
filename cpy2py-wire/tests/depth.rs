//! Nesting depth: values nested up to [`Value::MAX_DEPTH`] containers decode;
//! deeper ones are refused with `WireError::TooDeep` without recursing into
//! them, so a hostile peer cannot overflow the decoding thread's stack.
//!
//! The deep inputs are built as raw bytes, never as `Value`s, so that the tests
//! themselves do not recurse.

mod common;

use common::{VALUE_PREFIX, decode_exactly, frame, value_envelope, value_frame, with_header};
use cpy2py_wire::{
    ChainId, Envelope, FrameDecoder, Message, Op, PeerId, Request, RequestId, Value, WireError,
};

const MAX: usize = Value::MAX_DEPTH;

/// Stack given to threads that decode hostile nesting: a few times what
/// decoding `MAX_DEPTH` levels needs in a debug build (about 200 KiB), far less
/// than following 10 000 levels would.
const SMALL_STACK: usize = 1 << 20;

/// The containers, as they nest one child in raw postcard bytes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    List,
    Tuple,
    Set,
    FrozenSet,
    DictKey,
    DictValue,
}

const KINDS: [Kind; 6] = [
    Kind::List,
    Kind::Tuple,
    Kind::Set,
    Kind::FrozenSet,
    Kind::DictKey,
    Kind::DictValue,
];

impl Kind {
    /// Bytes before and after the single child.
    fn wrap(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Kind::List => (&[7, 1], &[]),
            Kind::Tuple => (&[8, 1], &[]),
            Kind::Set => (&[10, 1], &[]),
            Kind::FrozenSet => (&[11, 1], &[]),
            Kind::DictKey => (&[9, 1], &[0]),     // {child: None}
            Kind::DictValue => (&[9, 1, 0], &[]), // {None: child}
        }
    }

    fn value(self, child: Value) -> Value {
        match self {
            Kind::List => Value::List(vec![child]),
            Kind::Tuple => Value::Tuple(vec![child]),
            Kind::Set => Value::Set(vec![child]),
            Kind::FrozenSet => Value::FrozenSet(vec![child]),
            Kind::DictKey => Value::Dict(vec![(child, Value::None)]),
            Kind::DictValue => Value::Dict(vec![(Value::None, child)]),
        }
    }
}

/// Raw bytes of `None` nested in `depth` containers, the outermost first, kinds
/// taken in turn from `kinds`.
fn nested_bytes(depth: usize, kinds: &[Kind]) -> Vec<u8> {
    let mut open = Vec::new();
    let mut close = Vec::new();
    for i in 0..depth {
        let (before, after) = kinds[i % kinds.len()].wrap();
        open.extend_from_slice(before);
        close.push(after);
    }
    open.push(0); // Value::None
    for after in close.iter().rev() {
        open.extend_from_slice(after);
    }
    open
}

/// The same value as [`nested_bytes`], built innermost first (iteratively).
fn nested_value(depth: usize, kinds: &[Kind]) -> Value {
    (0..depth)
        .rev()
        .fold(Value::None, |child, i| kinds[i % kinds.len()].value(child))
}

fn assert_too_deep(frame: &[u8]) {
    let r = FrameDecoder::default().decode(frame);
    assert!(matches!(r, Err(WireError::TooDeep(MAX))), "{r:?}");
}

#[test]
fn the_limit_is_100() {
    assert_eq!(Value::MAX_DEPTH, 100);
}

#[test]
fn raw_builder_matches_the_encoder() {
    // Guards the other tests: the hand-built bytes are what encode_frame makes.
    for depth in [0, 1, 2, 7] {
        let expected = frame(&value_envelope(nested_value(depth, &KINDS)));
        assert_eq!(value_frame(&nested_bytes(depth, &KINDS)), expected);
    }
}

#[test]
fn nesting_up_to_the_limit_decodes() {
    for depth in [MAX - 1, MAX] {
        let decoded = decode_exactly(&value_frame(&nested_bytes(depth, &[Kind::List])));
        assert_eq!(decoded, value_envelope(nested_value(depth, &[Kind::List])));
    }
}

#[test]
fn nesting_one_past_the_limit_is_refused() {
    assert_too_deep(&value_frame(&nested_bytes(MAX + 1, &[Kind::List])));
}

#[test]
fn every_container_counts_towards_the_limit() {
    for kind in KINDS {
        let at_limit = value_frame(&nested_bytes(MAX, &[kind]));
        assert_eq!(
            decode_exactly(&at_limit),
            value_envelope(nested_value(MAX, &[kind])),
            "{kind:?}"
        );
        assert_too_deep(&value_frame(&nested_bytes(MAX + 1, &[kind])));
    }
    // Mixed kinds.
    assert_eq!(
        decode_exactly(&value_frame(&nested_bytes(MAX, &KINDS))),
        value_envelope(nested_value(MAX, &KINDS))
    );
    assert_too_deep(&value_frame(&nested_bytes(MAX + 1, &KINDS)));
}

#[test]
fn very_deep_nesting_is_refused_on_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(|| {
            for depth in [10_000, 1_000_000] {
                assert_too_deep(&value_frame(&nested_bytes(depth, &[Kind::List])));
                assert_too_deep(&value_frame(&nested_bytes(depth, &KINDS)));
            }
            // A whole frame whose envelope stops inside the nesting: the limit
            // is reached before the missing bytes are.
            let mut body = VALUE_PREFIX.to_vec();
            body.extend(std::iter::repeat_n([7, 1], 10_000).flatten());
            assert_too_deep(&with_header(&body));
        })
        .unwrap()
        .join()
        .expect("decoding deep nesting panicked or overflowed");
}

#[test]
fn limit_counts_depth_not_size() {
    // A list of 50 siblings, each nested MAX - 1 deep: total depth MAX.
    let child = nested_bytes(MAX - 1, &[Kind::Tuple]);
    let mut bytes = vec![7, 50];
    for _ in 0..50 {
        bytes.extend_from_slice(&child);
    }
    let expected = Value::List(vec![nested_value(MAX - 1, &[Kind::Tuple]); 50]);
    assert_eq!(
        decode_exactly(&value_frame(&bytes)),
        value_envelope(expected)
    );
}

#[test]
fn each_decode_starts_at_depth_zero() {
    let at_limit = value_frame(&nested_bytes(MAX, &[Kind::List]));
    let expected = value_envelope(nested_value(MAX, &[Kind::List]));

    // After a TooDeep error...
    assert_too_deep(&value_frame(&nested_bytes(MAX + 1, &[Kind::List])));
    assert_eq!(decode_exactly(&at_limit), expected);

    // ...and after a malformed frame abandoned 60 levels deep.
    let mut body = VALUE_PREFIX.to_vec();
    body.extend(std::iter::repeat_n([7, 1], 60).flatten());
    body.push(16); // no such Value variant
    let r = FrameDecoder::default().decode(&with_header(&body));
    assert!(matches!(r, Err(WireError::Malformed(_))), "{r:?}");
    assert_eq!(decode_exactly(&at_limit), expected);
}

fn request(op: Op) -> Envelope {
    Envelope {
        src: PeerId(1),
        dst: PeerId::MASTER,
        message: Message::Request(Request {
            id: RequestId {
                index: 0,
                generation: 0,
            },
            chain: ChainId {
                origin: PeerId(1),
                thread: 0,
            },
            op,
            time_left_us: None,
        }),
    }
}

#[test]
fn limit_applies_to_every_value_in_a_request() {
    let deep = |depth| nested_value(depth, &[Kind::List]);
    let ops = |depth: usize| {
        vec![
            Op::CallValue {
                callable: deep(depth),
                args: vec![],
                kwargs: vec![],
            },
            Op::CallGlobal {
                module: "m".into(),
                qualname: "f".into(),
                args: vec![Value::None, deep(depth)],
                kwargs: vec![],
            },
            Op::CallGlobal {
                module: "m".into(),
                qualname: "f".into(),
                args: vec![],
                kwargs: vec![("k".into(), deep(depth))],
            },
            Op::SetAttr {
                target: Value::None,
                name: "x".into(),
                value: deep(depth),
            },
        ]
    };
    // Argument lists are not containers: an argument may itself nest MAX deep.
    for op in ops(MAX) {
        let e = request(op);
        assert_eq!(decode_exactly(&frame(&e)), e);
    }
    for op in ops(MAX + 1) {
        assert_too_deep(&frame(&request(op)));
    }
}
