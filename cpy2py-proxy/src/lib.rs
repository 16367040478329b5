//! Identity tables of cpy2py: objects exported by their native peer, references
//! received from other peers, and the batched releases between them.
//!
//! This crate does no IO and knows nothing of Python; it is generic over the
//! handle types its host stores. The tables arrive with the TwinObjects work;
//! for now the crate holds only the release batching that the kernel's
//! protocol already carries.

use cpy2py_wire::{ObjectId, Release};
use std::collections::BTreeMap;

/// Accumulates dropped references per object until they are sent as one
/// [`Release`] message.
#[derive(Debug, Default)]
pub struct ReleaseBatch {
    counts: BTreeMap<ObjectId, u64>,
}

impl ReleaseBatch {
    /// Records that `count` references to `id` were dropped.
    pub fn add(&mut self, id: ObjectId, count: u64) {
        *self.counts.entry(id).or_default() += count;
    }

    /// Whether nothing is waiting to be released.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Takes everything recorded so far as one message.
    pub fn take(&mut self) -> Release {
        Release {
            objects: std::mem::take(&mut self.counts).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_merges_counts_per_object() {
        let mut batch = ReleaseBatch::default();
        batch.add(ObjectId(7), 1);
        batch.add(ObjectId(3), 2);
        batch.add(ObjectId(7), 4);
        let release = batch.take();
        assert_eq!(release.objects, vec![(ObjectId(3), 2), (ObjectId(7), 5)]);
        assert!(batch.is_empty());
    }
}
