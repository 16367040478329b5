//! A byte string that postcard encodes as one length-prefixed block, and that
//! large payloads share instead of copying.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Memory that a [`Bytes`] can share: anything that can lend a stable `&[u8]`
/// and be sent between threads.
pub(crate) type Owner = Arc<dyn Lend>;

/// Memory a [`Bytes`] shares; a buffer it may also write to (a received frame
/// it owns) says so with [`Lend::lend_mut`].
pub trait Lend: AsRef<[u8]> + Send + Sync + 'static {
    /// The same bytes, writable, if this owner's memory may be written to; asked
    /// only while nothing else shares the owner.
    fn lend_mut(&mut self) -> Option<&mut [u8]> {
        None
    }

    /// Where these bytes lie in an arena shared with the receiver, if they do:
    /// then only the place is encoded (see [`crate::ArenaSlot`]).
    fn arena_slot(&self) -> Option<crate::ArenaSlot> {
        None
    }
}

/// An owner lent read-only ([`Bytes::from_owner`]).
struct ReadOnly<T>(T);

impl<T: AsRef<[u8]>> AsRef<[u8]> for ReadOnly<T> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl<T: AsRef<[u8]> + Send + Sync + 'static> Lend for ReadOnly<T> {}

impl Lend for Vec<u8> {
    fn lend_mut(&mut self) -> Option<&mut [u8]> {
        Some(self)
    }
}

/// A byte string encoded as a single block (varint length then the raw bytes)
/// instead of serde's default element-by-element sequence.
///
/// Byte strings of [`Bytes::SHARE_MIN`] bytes or more are not copied on their
/// way through the wire when the sender and receiver allow it:
/// [`crate::encode_frame_vectored`] leaves them out of the frame buffer for a
/// vectored write, and [`crate::FrameDecoder::decode_owned`] makes them views
/// of the received frame. A view keeps its whole frame alive.
#[derive(Clone, Default)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<u8>),
    /// Kept to one pointer so that values (and the errors carrying them) stay
    /// small; a view of part of a buffer is a [`FrameView`] owner.
    Shared(Owner),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Owned(Vec::new())
    }
}

impl Bytes {
    /// Length from which byte strings are shared rather than copied; below it
    /// a `memcpy` is cheaper than the bookkeeping.
    pub const SHARE_MIN: usize = 32 * 1024;

    /// An empty byte string.
    pub fn new() -> Self {
        Bytes::default()
    }

    /// Shares `owner`'s bytes without copying them. `owner` must lend the same
    /// bytes every time (an immutable buffer); it is dropped with the last
    /// clone of the result.
    pub fn from_owner<T: AsRef<[u8]> + Send + Sync + 'static>(owner: T) -> Self {
        Bytes(Repr::Shared(Arc::new(ReadOnly(owner))))
    }

    /// Shares `owner`'s bytes without copying them, with everything its
    /// [`Lend`] implementation says: writable when unique, or a place in an
    /// arena.
    pub fn from_lend<L: Lend>(owner: L) -> Self {
        Bytes(Repr::Shared(Arc::new(owner)))
    }

    /// Where the bytes lie in an arena shared with the receiver, if they do.
    pub fn arena_slot(&self) -> Option<crate::ArenaSlot> {
        match &self.0 {
            Repr::Owned(_) => None,
            Repr::Shared(owner) => owner.arena_slot(),
        }
    }

    /// The bytes, writable in place, if nothing else shares their memory and
    /// its owner allows writing (an owned vector, a view of a received frame
    /// that no other view shares). `None` otherwise: copy them to write.
    pub fn unique_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.0 {
            Repr::Owned(v) => Some(v),
            Repr::Shared(owner) => Arc::get_mut(owner)?.lend_mut(),
        }
    }

    /// The bytes as an owned vector (copied unless this value owns them).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(_) => self.as_slice().to_vec(),
        }
    }

    /// Whether the bytes are shared with another owner rather than held here.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }

    fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(owner) => (**owner).as_ref(),
        }
    }

    /// Whether `self` and `other` are the very same memory (not just equal).
    fn same_memory(&self, other: &[u8]) -> bool {
        let mine = self.as_slice();
        std::ptr::eq(mine.as_ptr(), other.as_ptr()) && mine.len() == other.len()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads are never formatted in full: they can be megabytes.
        write!(f, "Bytes(len={})", self.len())
    }
}

impl From<Vec<u8>> for Bytes {
    /// Takes `v` without copying. From [`Bytes::SHARE_MIN`] bytes on, clones
    /// share it instead of copying it, which is what lets a vectored encode
    /// leave it out of the frame buffer.
    fn from(v: Vec<u8>) -> Self {
        if v.len() >= Bytes::SHARE_MIN {
            Bytes(Repr::Shared(Arc::new(v)))
        } else {
            Bytes(Repr::Owned(v))
        }
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes::from(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Bytes {
    fn from(v: &[u8; N]) -> Self {
        Bytes::from(v.to_vec())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for Bytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

// ----- vectored encoding and shared decoding -------------------------------------
//
// serde gives neither a serializer's output position nor a deserializer's input
// buffer to the value being (de)serialized, so the two ends meet through
// thread-locals that only exist for the duration of one encode or decode. No
// pointer is ever dereferenced from them: addresses are only compared, and the
// bytes are reached through the `Bytes` or `Arc` that owns them.

thread_local! {
    /// During a vectored encode: the large byte strings serialized so far that
    /// the output flavor has not yet claimed.
    static SPLICE_CANDIDATES: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
    /// During a shared decode: the frame being decoded.
    static DECODE_BACKING: RefCell<Option<Owner>> = const { RefCell::new(None) };
}

/// Runs `f` with vectored encoding on for this thread.
pub(crate) fn with_splicing<R>(f: impl FnOnce() -> R) -> R {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            SPLICE_CANDIDATES.with(|c| *c.borrow_mut() = None);
        }
    }
    SPLICE_CANDIDATES.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let _off = Off;
    f()
}

/// The byte string that owns exactly `data`, if one was offered for splicing
/// in the current vectored encode.
pub(crate) fn claim_splice(data: &[u8]) -> Option<Bytes> {
    SPLICE_CANDIDATES.with(|c| {
        let mut c = c.borrow_mut();
        let list = c.as_mut()?;
        let at = list.iter().rposition(|b| b.same_memory(data))?;
        Some(list.swap_remove(at))
    })
}

/// Runs `f` with large byte strings decoded as views of `frame`.
pub(crate) fn with_backing<R>(frame: &Owner, f: impl FnOnce() -> R) -> R {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            DECODE_BACKING.with(|c| *c.borrow_mut() = None);
        }
    }
    DECODE_BACKING.with(|c| *c.borrow_mut() = Some(Arc::clone(frame)));
    let _off = Off;
    f()
}

/// Part of a received frame.
struct FrameView {
    frame: Owner,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for FrameView {
    fn as_ref(&self) -> &[u8] {
        // `start..end` was checked against the frame's length when the view
        // was made, and the frame does not change.
        (*self.frame)
            .as_ref()
            .get(self.start..self.end)
            .unwrap_or(&[])
    }
}

impl Lend for FrameView {
    fn lend_mut(&mut self) -> Option<&mut [u8]> {
        // Only the last view of its frame may write: no other reads it then.
        Arc::get_mut(&mut self.frame)?
            .lend_mut()?
            .get_mut(self.start..self.end)
    }
}

/// A view of the frame being decoded if `data` lies inside it and is large
/// enough to be worth sharing.
fn view_of_backing(data: &[u8]) -> Option<Bytes> {
    if data.len() < Bytes::SHARE_MIN {
        return None;
    }
    DECODE_BACKING.with(|c| {
        let c = c.borrow();
        let frame = c.as_ref()?;
        let whole = (**frame).as_ref();
        let base = whole.as_ptr() as usize;
        let start = (data.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(data.len())?;
        if end > whole.len() {
            return None;
        }
        Some(Bytes(Repr::Shared(Arc::new(FrameView {
            frame: Arc::clone(frame),
            start,
            end,
        }))))
    })
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Only shared bytes can be offered: cloning owned ones would copy them.
        if self.is_shared() && self.len() >= Bytes::SHARE_MIN {
            SPLICE_CANDIDATES.with(|c| {
                if let Some(list) = c.borrow_mut().as_mut() {
                    list.push(self.clone());
                }
            });
        }
        s.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
                Ok(view_of_backing(v).unwrap_or_else(|| Bytes::from(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                // Only reached by self-describing formats; postcard always uses
                // `visit_borrowed_bytes`. The size hint is not trusted.
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                if out.len() > u32::MAX as usize {
                    return Err(A::Error::custom("byte string too long"));
                }
                Ok(Bytes::from(out))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_no_larger_than_a_vec() {
        assert_eq!(std::mem::size_of::<Bytes>(), std::mem::size_of::<Vec<u8>>());
    }

    #[test]
    fn shared_and_owned_compare_by_content() {
        let owned = Bytes::from(vec![1u8, 2, 3]);
        assert!(
            Bytes::from(vec![0u8; Bytes::SHARE_MIN]).is_shared(),
            "large vectors are shared"
        );
        let shared = Bytes::from_owner(vec![1u8, 2, 3]);
        assert!(shared.is_shared() && !owned.is_shared());
        assert_eq!(owned, shared);
        assert_eq!(&*shared, &[1, 2, 3]);
        assert_eq!(shared.clone().into_vec(), vec![1, 2, 3]);
    }

    #[test]
    fn a_view_needs_data_inside_the_backing() {
        let frame = Arc::new(vec![9u8; Bytes::SHARE_MIN * 2]);
        let owner: Owner = frame.clone();
        let outside = vec![9u8; Bytes::SHARE_MIN];
        with_backing(&owner, || {
            let inside = view_of_backing(&frame[10..10 + Bytes::SHARE_MIN]).expect("a view");
            assert!(inside.is_shared());
            assert_eq!(inside.len(), Bytes::SHARE_MIN);
            assert!(view_of_backing(&outside).is_none());
            assert!(
                view_of_backing(&frame[..100]).is_none(),
                "small data is copied"
            );
        });
        assert!(
            view_of_backing(&frame[..Bytes::SHARE_MIN]).is_none(),
            "backing cleared"
        );
    }
}
