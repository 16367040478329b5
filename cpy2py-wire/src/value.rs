//! The language-neutral payload tree.

use crate::bytes::Bytes;
use crate::ids::{ObjectId, PeerId};
use crate::message::RemoteError;
use serde::{Deserialize, Serialize};

/// A reference to an object that lives in (is *native to*) one peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Peer that holds the native object.
    pub owner: PeerId,
    /// The object's id within its owner.
    pub id: ObjectId,
    /// Module and qualified name of the object's class, when it has one that can
    /// be named.
    pub class: Option<(String, String)>,
    /// What kind of proxy stands for it elsewhere.
    pub kind: RefKind,
}

/// What kind of proxy the receiver of a reference makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefKind {
    /// An instance of a class made to be proxied (Python: a `TwinObject`): its
    /// proxy is built from its class, which the receiver imports.
    #[default]
    Twin,
    /// Any other object, sent by reference because it cannot or must not go by
    /// value: a generic proxy that forwards attribute access, calls, and the
    /// special methods the object's type has, without importing its class.
    Generic {
        /// The type's special methods: bit `i` stands for [`SPECIAL_METHODS`]`[i]`.
        methods: u64,
        /// Whether the type is hashable (`__hash__` is not `None`).
        hashable: bool,
    },
}

/// The special methods a generic proxy can forward, by bit of
/// [`RefKind::Generic::methods`]. New names go at the end (at most 64).
pub const SPECIAL_METHODS: [&str; 58] = [
    "__len__",
    "__iter__",
    "__next__",
    "__reversed__",
    "__contains__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__call__",
    "__enter__",
    "__exit__",
    "__bool__",
    "__hash__",
    "__eq__",
    "__ne__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__add__",
    "__sub__",
    "__mul__",
    "__matmul__",
    "__truediv__",
    "__floordiv__",
    "__mod__",
    "__divmod__",
    "__pow__",
    "__lshift__",
    "__rshift__",
    "__and__",
    "__xor__",
    "__or__",
    "__radd__",
    "__rsub__",
    "__rmul__",
    "__rmatmul__",
    "__rtruediv__",
    "__rfloordiv__",
    "__rmod__",
    "__rpow__",
    "__rand__",
    "__rxor__",
    "__ror__",
    "__iadd__",
    "__isub__",
    "__imul__",
    "__itruediv__",
    "__neg__",
    "__pos__",
    "__abs__",
    "__invert__",
    "__int__",
    "__float__",
    "__index__",
    "__complex__",
    "__round__",
    "__length_hint__",
];

/// A payload: arguments, results and attribute values.
///
/// Builtin data maps to its own variant so that each side converts it natively;
/// anything else travels as [`Value::Pickle`] (with the object references found
/// inside it listed beside the bytes). New variants go at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// `None` / null.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 signed bits.
    Int(i64),
    /// Any other integer: two's-complement, little-endian, minimal length.
    BigInt(Bytes),
    /// A 64-bit float.
    Float(f64),
    /// A Unicode string.
    Str(String),
    /// A byte string.
    Bytes(Bytes),
    /// A mutable sequence.
    List(#[serde(deserialize_with = "depth::guarded")] Vec<Value>),
    /// An immutable sequence.
    Tuple(#[serde(deserialize_with = "depth::guarded")] Vec<Value>),
    /// A mapping, in insertion order.
    Dict(#[serde(deserialize_with = "depth::guarded")] Vec<(Value, Value)>),
    /// A mutable set.
    Set(#[serde(deserialize_with = "depth::guarded")] Vec<Value>),
    /// An immutable set.
    FrozenSet(#[serde(deserialize_with = "depth::guarded")] Vec<Value>),
    /// A module-level object named by reference: a function, class or module
    /// attribute.
    Global {
        /// Dotted module name.
        module: String,
        /// Qualified name within the module.
        qualname: String,
    },
    /// A reference to an object native to some peer.
    Ref(ObjectRef),
    /// An object serialized by the sender's language (Python: pickle).
    Pickle {
        /// The serialized bytes.
        data: Bytes,
        /// Object references found inside, by position (pickle persistent ids).
        refs: Vec<ObjectRef>,
        /// Large buffers of the objects inside, out of band, in the order the
        /// pickle uses them (Python: pickle protocol 5's `PickleBuffer`s), each
        /// written from its object's memory without a copy into `data`, or
        /// sent as its place in an arena shared with the receiver.
        #[serde(with = "crate::shared::buffers")]
        buffers: Vec<Bytes>,
    },
    /// An error raised by the peer that produced this value.
    Error(Box<RemoteError>),
    /// A list of integers that all fit in 64 signed bits, packed as
    /// little-endian `i64`s: one block instead of a value per item. See
    /// [`Value::int_list`] and [`Value::ints`].
    IntList(#[serde(deserialize_with = "packed::eight_byte_items")] Bytes),
    /// A list of floats packed as little-endian `f64` bit patterns. See
    /// [`Value::float_list`] and [`Value::floats`].
    FloatList(#[serde(deserialize_with = "packed::eight_byte_items")] Bytes),
}

impl Value {
    /// Deepest nesting of containers a decoder accepts. Deeper data is refused
    /// (senders should pickle such subtrees) so that decoding cannot exhaust
    /// the stack.
    pub const MAX_DEPTH: usize = 100;

    /// A [`Value::IntList`] of `items`.
    pub fn int_list(items: &[i64]) -> Value {
        Value::IntList(packed::pack(items.iter().map(|i| i.to_le_bytes())))
    }

    /// A [`Value::FloatList`] of `items` (bit patterns kept exactly).
    pub fn float_list(items: &[f64]) -> Value {
        Value::FloatList(packed::pack(
            items.iter().map(|f| f.to_bits().to_le_bytes()),
        ))
    }

    /// The items of a [`Value::IntList`]; `None` for any other value.
    pub fn ints(&self) -> Option<impl ExactSizeIterator<Item = i64> + '_> {
        match self {
            Value::IntList(b) => Some(packed::items(b).map(i64::from_le_bytes)),
            _ => None,
        }
    }

    /// The items of a [`Value::FloatList`]; `None` for any other value.
    pub fn floats(&self) -> Option<impl ExactSizeIterator<Item = f64> + '_> {
        match self {
            Value::FloatList(b) => {
                Some(packed::items(b).map(|b| f64::from_bits(u64::from_le_bytes(b))))
            }
            _ => None,
        }
    }
}

/// Lists of eight-byte numbers packed into one byte string.
mod packed {
    use crate::bytes::Bytes;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    pub(super) fn pack(items: impl ExactSizeIterator<Item = [u8; 8]>) -> Bytes {
        let mut out = Vec::with_capacity(items.len() * 8);
        items.for_each(|b| out.extend_from_slice(&b));
        Bytes::from(out)
    }

    /// The items of a packed list. Its length is a multiple of 8: checked when
    /// it was decoded, and [`pack`] only makes such lists (a trailing partial
    /// item of a hand-made value is ignored).
    pub(super) fn items(b: &Bytes) -> impl ExactSizeIterator<Item = [u8; 8]> + '_ {
        b.chunks_exact(8).map(|c| {
            let mut item = [0; 8];
            item.copy_from_slice(c);
            item
        })
    }

    /// Decodes a packed list, refusing a length that is not a whole number of
    /// items.
    pub(super) fn eight_byte_items<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let b = Bytes::deserialize(d)?;
        if b.len() % 8 != 0 {
            return Err(D::Error::custom(
                "packed list length is not a multiple of 8",
            ));
        }
        Ok(b)
    }
}

/// Nesting guard for decoding: a thread-local depth count around every
/// container.
pub(crate) mod depth {
    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use std::cell::Cell;
    use std::marker::PhantomData;

    thread_local! {
        static DEPTH: Cell<usize> = const { Cell::new(0) };
        static EXCEEDED: Cell<bool> = const { Cell::new(false) };
    }

    /// Starts a new decode.
    pub(crate) fn reset() {
        DEPTH.set(0);
        EXCEEDED.set(false);
    }

    /// Whether the last decode hit the depth limit.
    pub(crate) fn exceeded() -> bool {
        EXCEEDED.get()
    }

    struct Level;

    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.set(DEPTH.get().saturating_sub(1));
        }
    }

    /// Decodes one container's elements one level deeper. Space is reserved
    /// for at most [`PREALLOCATE`] elements whatever length the input claims, so
    /// memory follows the elements actually present.
    pub(crate) fn guarded<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let depth = DEPTH.get() + 1;
        if depth > super::Value::MAX_DEPTH {
            EXCEEDED.set(true);
            return Err(D::Error::custom("values nested too deeply"));
        }
        DEPTH.set(depth);
        let _level = Level;
        d.deserialize_seq(Elements(PhantomData))
    }

    /// Elements reserved up front per container.
    const PREALLOCATE: usize = 64;

    struct Elements<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Elements<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOCATE));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(Bytes::from(v))
    }
}
