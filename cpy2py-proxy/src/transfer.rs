//! Passing a proxy on to a third peer: the retain its owner must see first.

use cpy2py_wire::{ObjectId, PeerId};
use std::collections::BTreeMap;

/// What sending a proxy to another peer requires, from
/// [`ImportTable::forward`](crate::ImportTable::forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Send `owner` a [`Retain`] of one reference to `id` for `for_peer`, before
    /// the frame that carries the reference and while the proxy is alive
    /// (collect them in a [`RetainBatch`]).
    Retain {
        /// The object's native peer, where the retain goes.
        owner: PeerId,
        /// The object.
        id: ObjectId,
        /// The peer the reference is sent to.
        for_peer: PeerId,
    },
    /// The reference goes back to its owner, which resolves it to its own
    /// object: nothing to send, no count changes.
    ToOwner,
}

/// Asks an object's owner to count references held by a third peer; the
/// content of the `Retain` wire message.
///
/// A peer sends it to `owner` when it passes proxies of `owner`'s objects to
/// `for_peer`, before the frame carrying them; the owner applies each entry
/// with [`ExportTable::retain`](crate::ExportTable::retain). Fire-and-forget,
/// like `Release`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retain {
    /// The peer the references are sent to, which will release them.
    pub for_peer: PeerId,
    /// `(object, count)` pairs.
    pub objects: Vec<(ObjectId, u64)>,
}

/// The retains to send before one frame (or a few frames sent in a row),
/// merged per owner and destination.
///
/// # Examples
///
/// ```
/// use cpy2py_proxy::{Retain, RetainBatch, Transfer};
/// use cpy2py_wire::{ObjectId, PeerId};
///
/// let (a, c) = (PeerId(1), PeerId(3));
/// let mut batch = RetainBatch::new();
/// batch.add(Transfer::Retain { owner: a, id: ObjectId(4), for_peer: c });
/// batch.add(Transfer::Retain { owner: a, id: ObjectId(4), for_peer: c });
/// batch.add(Transfer::ToOwner);
/// assert_eq!(
///     batch.take_all(),
///     vec![(a, Retain { for_peer: c, objects: vec![(ObjectId(4), 2)] })]
/// );
/// assert!(batch.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct RetainBatch {
    retains: BTreeMap<(PeerId, PeerId), BTreeMap<ObjectId, u64>>,
}

impl RetainBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one transfer; [`Transfer::ToOwner`] needs nothing.
    pub fn add(&mut self, transfer: Transfer) {
        if let Transfer::Retain {
            owner,
            id,
            for_peer,
        } = transfer
        {
            let count = self
                .retains
                .entry((owner, for_peer))
                .or_default()
                .entry(id)
                .or_default();
            *count = count.saturating_add(1);
        }
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.retains.is_empty()
    }

    /// Takes the retains to send, each with the owner to send it to.
    pub fn take_all(&mut self) -> Vec<(PeerId, Retain)> {
        std::mem::take(&mut self.retains)
            .into_iter()
            .map(|((owner, for_peer), objects)| {
                (
                    owner,
                    Retain {
                        for_peer,
                        objects: objects.into_iter().collect(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_per_owner_and_destination() {
        let (a, b, c) = (PeerId(1), PeerId(2), PeerId(3));
        let mut batch = RetainBatch::new();
        for (owner, id, for_peer) in [(a, 1, c), (b, 2, c), (a, 1, c), (a, 3, c), (a, 1, b)] {
            batch.add(Transfer::Retain {
                owner,
                id: ObjectId(id),
                for_peer,
            });
        }
        assert_eq!(
            batch.take_all(),
            vec![
                (
                    a,
                    Retain {
                        for_peer: b,
                        objects: vec![(ObjectId(1), 1)]
                    }
                ),
                (
                    a,
                    Retain {
                        for_peer: c,
                        objects: vec![(ObjectId(1), 2), (ObjectId(3), 1)]
                    }
                ),
                (
                    b,
                    Retain {
                        for_peer: c,
                        objects: vec![(ObjectId(2), 1)]
                    }
                ),
            ]
        );
        assert!(batch.take_all().is_empty());
    }
}
