//! Dropped references waiting to be sent to their owners.

use cpy2py_wire::{ObjectId, PeerId, Release};
use std::collections::BTreeMap;
use std::time::Duration;

/// Accumulates dropped references to one owner's objects until they are sent as
/// one [`Release`] message.
///
/// Releases may wait as long as the host likes: a late release only keeps an
/// object alive longer.
#[derive(Debug, Default)]
pub struct ReleaseBatch {
    counts: BTreeMap<ObjectId, u64>,
}

impl ReleaseBatch {
    /// Records that `count` references to `id` were dropped.
    pub fn add(&mut self, id: ObjectId, count: u64) {
        if count > 0 {
            let total = self.counts.entry(id).or_default();
            *total = total.saturating_add(count);
        }
    }

    /// Whether nothing is waiting to be released.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Number of objects waiting to be released.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Takes everything recorded so far as one message.
    pub fn take(&mut self) -> Release {
        Release {
            objects: std::mem::take(&mut self.counts).into_iter().collect(),
        }
    }
}

/// One [`ReleaseBatch`] per owner.
///
/// # Examples
///
/// ```
/// use cpy2py_proxy::BatchedReleases;
/// use cpy2py_wire::{ObjectId, PeerId};
///
/// let mut batches = BatchedReleases::new();
/// batches.add(PeerId(1), ObjectId(4), 2);
/// batches.add(PeerId(2), ObjectId(4), 1);
/// batches.add(PeerId(1), ObjectId(4), 1);
/// let messages = batches.take_all();
/// assert_eq!(messages.len(), 2);
/// assert_eq!(messages[0].0, PeerId(1));
/// assert_eq!(messages[0].1.objects, vec![(ObjectId(4), 3)]);
/// assert!(batches.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct BatchedReleases {
    batches: BTreeMap<PeerId, ReleaseBatch>,
}

impl BatchedReleases {
    /// No pending releases.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `count` references to object `id` of `owner` were dropped
    /// (what [`ImportTable::proxy_dropped`](crate::ImportTable::proxy_dropped)
    /// returns).
    pub fn add(&mut self, owner: PeerId, id: ObjectId, count: u64) {
        if count > 0 {
            self.batches.entry(owner).or_default().add(id, count);
        }
    }

    /// Whether nothing is waiting to be released.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes the release waiting for `owner`, if any.
    pub fn take(&mut self, owner: PeerId) -> Option<Release> {
        self.batches.remove(&owner).map(|mut batch| batch.take())
    }

    /// Takes every waiting release, each with the owner to send it to, in
    /// owner order.
    pub fn take_all(&mut self) -> Vec<(PeerId, Release)> {
        std::mem::take(&mut self.batches)
            .into_iter()
            .map(|(owner, mut batch)| (owner, batch.take()))
            .collect()
    }

    /// `owner` is gone: forgets what was waiting for it.
    pub fn owner_lost(&mut self, owner: PeerId) {
        self.batches.remove(&owner);
    }
}

/// When queued releases are sent (the one policy of every host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleasePolicy {
    /// Once this many references wait, send them at once.
    pub batch: usize,
    /// Otherwise send them before the next call, or after this long at the
    /// latest (a host with a timer; one without flushes before every call).
    pub delay: Duration,
}

impl Default for ReleasePolicy {
    /// 256 references or 20 ms: one `Release` per 256 proxies dropped in a
    /// loop, and a native object freed within 20 ms of its last proxy.
    fn default() -> Self {
        ReleasePolicy {
            batch: 256,
            delay: Duration::from_millis(20),
        }
    }
}

/// What [`ReleaseQueue::add`] asks of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The batch is full: send everything now ([`ReleaseQueue::take_all`]).
    Now,
    /// Send within this long (or before the next call, if sooner).
    Within(Duration),
}

/// Dropped references waiting for their owners, with the policy that says
/// when they go: [`BatchedReleases`] plus a count.
///
/// # Examples
///
/// ```
/// use cpy2py_proxy::{Due, ReleasePolicy, ReleaseQueue};
/// use cpy2py_wire::{ObjectId, PeerId};
/// use std::time::Duration;
///
/// let policy = ReleasePolicy { batch: 2, delay: Duration::from_millis(20) };
/// let mut queue = ReleaseQueue::new(policy);
/// assert_eq!(queue.add(PeerId(1), ObjectId(4), 1), Due::Within(policy.delay));
/// assert_eq!(queue.add(PeerId(2), ObjectId(5), 1), Due::Now);
/// assert_eq!(queue.take_all().len(), 2);
/// assert!(queue.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct ReleaseQueue {
    batches: BatchedReleases,
    queued: usize,
    policy: ReleasePolicy,
}

impl ReleaseQueue {
    /// An empty queue sending by `policy`.
    pub fn new(policy: ReleasePolicy) -> Self {
        ReleaseQueue {
            batches: BatchedReleases::new(),
            queued: 0,
            policy,
        }
    }

    /// The policy it sends by.
    pub fn policy(&self) -> ReleasePolicy {
        self.policy
    }

    /// Queues `count` dropped references to `owner`'s object `id`; says when
    /// to send.
    pub fn add(&mut self, owner: PeerId, id: ObjectId, count: u64) -> Due {
        if count > 0 {
            self.batches.add(owner, id, count);
            self.queued = self
                .queued
                .saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
        }
        if self.queued >= self.policy.batch {
            Due::Now
        } else {
            Due::Within(self.policy.delay)
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes everything waiting, one release per owner, in owner order.
    pub fn take_all(&mut self) -> Vec<(PeerId, Release)> {
        self.queued = 0;
        self.batches.take_all()
    }

    /// `owner` is gone: forgets what waited for it.
    pub fn owner_lost(&mut self, owner: PeerId) {
        self.batches.owner_lost(owner);
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
        batch.add(ObjectId(9), 0);
        assert_eq!(batch.len(), 2);
        let release = batch.take();
        assert_eq!(release.objects, vec![(ObjectId(3), 2), (ObjectId(7), 5)]);
        assert!(batch.is_empty());
    }

    #[test]
    fn batches_per_owner() {
        let (a, b) = (PeerId(1), PeerId(2));
        let mut batches = BatchedReleases::new();
        batches.add(b, ObjectId(1), 1);
        batches.add(a, ObjectId(2), 1);
        batches.add(a, ObjectId(1), 0);
        assert_eq!(
            batches.take(a).map(|release| release.objects),
            Some(vec![(ObjectId(2), 1)])
        );
        assert_eq!(batches.take(a), None);
        batches.add(a, ObjectId(3), 2);
        let all = batches.take_all();
        assert_eq!(
            all.iter().map(|(owner, _)| *owner).collect::<Vec<_>>(),
            vec![a, b]
        );
        assert!(batches.is_empty());
    }

    #[test]
    fn lost_owner_is_forgotten() {
        let mut batches = BatchedReleases::new();
        batches.add(PeerId(1), ObjectId(1), 1);
        batches.owner_lost(PeerId(1));
        assert!(batches.is_empty());
    }

    #[test]
    fn a_queue_says_now_when_the_batch_is_full_and_starts_over_when_taken() {
        let policy = ReleasePolicy {
            batch: 3,
            delay: Duration::from_millis(5),
        };
        let mut queue = ReleaseQueue::new(policy);
        assert_eq!(
            queue.add(PeerId(1), ObjectId(1), 1),
            Due::Within(policy.delay)
        );
        assert_eq!(
            queue.add(PeerId(1), ObjectId(1), 0),
            Due::Within(policy.delay)
        );
        assert_eq!(
            queue.add(PeerId(2), ObjectId(1), 2),
            Due::Now,
            "3 references"
        );
        let all = queue.take_all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1.objects, vec![(ObjectId(1), 1)]);
        assert_eq!(
            queue.add(PeerId(1), ObjectId(9), 1),
            Due::Within(policy.delay)
        );
        queue.owner_lost(PeerId(1));
        assert!(queue.is_empty());
        assert_eq!(ReleaseQueue::default().policy(), ReleasePolicy::default());
    }
}
