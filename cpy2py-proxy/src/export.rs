//! The owner's side: native objects exported to other peers, by id, with the
//! references each peer holds.

use cpy2py_wire::{ObjectId, PeerId};
use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::fmt;
use std::hash::Hash;

/// Native objects that other peers hold references to.
///
/// Each object gets an [`ObjectId`] the first time it is exported; ids are
/// allocated in increasing order and never reused, so a stale id can only miss,
/// never hit another object. The table finds an object again by an identity
/// key `K` chosen by the host (for Python, the object's address, which is
/// stable while the table keeps the object alive), so the same object exported
/// twice keeps its id.
///
/// For every object the table counts, per peer, the references sent to that
/// peer (by [`export`](Self::export), at send time, or on its behalf by
/// [`retain`](Self::retain)) and not yet [`release`](Self::release)d. The table
/// holds the host's handle `H` (a strong reference) while any peer holds any
/// reference, and gives it back when the last is released so that the host
/// drops it where it may (for Python, with the GIL held).
///
/// Input from peers is validated: an unknown id or a count that would go
/// negative or overflow is an [`ExportError`], and the table is left as it was.
///
/// # Examples
///
/// ```
/// use cpy2py_proxy::ExportTable;
/// use cpy2py_wire::PeerId;
///
/// let mut table: ExportTable<String, u32> = ExportTable::new();
/// let first = table.export(7, || "seven".to_owned(), PeerId(1));
/// let again = table.export(7, || unreachable!("already exported"), PeerId(2));
/// assert_eq!(first, again);
/// assert_eq!(table.held_by(first, PeerId(1)), 1);
///
/// assert_eq!(table.release(PeerId(1), first, 1), Ok(None));
/// assert_eq!(table.release(PeerId(2), first, 1), Ok(Some("seven".to_owned())));
/// assert!(table.is_empty());
/// assert!(table.release(PeerId(2), first, 1).is_err());
/// ```
#[derive(Debug)]
pub struct ExportTable<H, K> {
    objects: HashMap<ObjectId, Exported<H, K>>,
    by_key: HashMap<K, ObjectId>,
    next_id: u64,
    lost: HashSet<PeerId>,
}

/// One exported object.
#[derive(Debug)]
struct Exported<H, K> {
    handle: H,
    key: K,
    /// Peers holding references, each with a positive count; never empty.
    holders: Vec<(PeerId, u64)>,
}

impl<H, K> Exported<H, K> {
    fn held_by(&self, peer: PeerId) -> u64 {
        self.holders
            .iter()
            .find(|(holder, _)| *holder == peer)
            .map_or(0, |(_, count)| *count)
    }

    fn slot(&mut self, peer: PeerId) -> &mut u64 {
        let index = match self.holders.iter().position(|(holder, _)| *holder == peer) {
            Some(index) => index,
            None => {
                self.holders.push((peer, 0));
                self.holders.len() - 1
            }
        };
        &mut self.holders[index].1
    }
}

/// What [`ExportTable::release_all`] did with one `Release` message.
#[derive(Debug)]
pub struct Released<H> {
    /// Handles of the objects no peer references any more; the host drops them.
    pub freed: Vec<H>,
    /// The entries that were refused, in message order; the others were applied.
    pub errors: Vec<ExportError>,
}

/// A peer's retain or release that the [`ExportTable`] refused; the table is
/// unchanged by it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportError {
    /// No exported object has this id: it was never exported or is already freed.
    UnknownObject {
        /// The id asked for.
        id: ObjectId,
    },
    /// A peer released more references than it holds.
    OverRelease {
        /// The object.
        id: ObjectId,
        /// The releasing peer.
        peer: PeerId,
        /// References the peer holds.
        held: u64,
        /// References it tried to release.
        released: u64,
    },
    /// A retain would make a reference count overflow.
    CountOverflow {
        /// The object.
        id: ObjectId,
        /// The peer the references were retained for.
        peer: PeerId,
    },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::UnknownObject { id } => write!(f, "no exported object has id {}", id.0),
            ExportError::OverRelease {
                id,
                peer,
                held,
                released,
            } => write!(
                f,
                "{peer} released {released} references to object {} but holds {held}",
                id.0
            ),
            ExportError::CountOverflow { id, peer } => write!(
                f,
                "retaining references to object {} for {peer} overflows its count",
                id.0
            ),
        }
    }
}

impl Error for ExportError {}

impl<H, K> Default for ExportTable<H, K> {
    fn default() -> Self {
        ExportTable {
            objects: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            lost: HashSet::new(),
        }
    }
}

impl<H, K: Eq + Hash + Clone> ExportTable<H, K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one reference to the object identified by `key` as held by `to`,
    /// and returns the object's id. Call it before writing the frame that carries
    /// the reference, so that references in flight are counted.
    ///
    /// The first export of an object allocates a new id and stores the handle
    /// made by `make_handle`; later exports of the same `key` (while the object
    /// is exported) return the same id and do not call it.
    ///
    /// If `to` was reported lost ([`peer_lost`](Self::peer_lost)) nothing is
    /// counted: an object already exported keeps its id, and a new object gets a
    /// fresh id that resolves to nothing (the frame will not be delivered
    /// anyway), without `make_handle` being called.
    pub fn export(&mut self, key: K, make_handle: impl FnOnce() -> H, to: PeerId) -> ObjectId {
        let lost = self.lost.contains(&to);
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(entry) = self.objects.get_mut(&id) {
                if !lost {
                    let slot = entry.slot(to);
                    *slot = slot.saturating_add(1);
                }
                return id;
            }
        }
        let id = ObjectId(self.next_id);
        self.next_id += 1;
        if !lost {
            self.by_key.insert(key.clone(), id);
            self.objects.insert(
                id,
                Exported {
                    handle: make_handle(),
                    key,
                    holders: vec![(to, 1)],
                },
            );
        }
        id
    }

    /// Counts `count` more references to `id` as held by `for_peer`: another peer
    /// is passing its proxy on to `for_peer` (see the crate docs). Retains for a
    /// peer reported lost are ignored.
    ///
    /// # Errors
    ///
    /// [`ExportError::UnknownObject`] if `id` is not exported,
    /// [`ExportError::CountOverflow`] if the count would overflow; the table is
    /// unchanged.
    pub fn retain(
        &mut self,
        id: ObjectId,
        for_peer: PeerId,
        count: u64,
    ) -> Result<(), ExportError> {
        let entry = self
            .objects
            .get_mut(&id)
            .ok_or(ExportError::UnknownObject { id })?;
        if count == 0 || self.lost.contains(&for_peer) {
            return Ok(());
        }
        let held = entry.held_by(for_peer);
        let total = held
            .checked_add(count)
            .ok_or(ExportError::CountOverflow { id, peer: for_peer })?;
        *entry.slot(for_peer) = total;
        Ok(())
    }

    /// `from` dropped `count` references to `id`. Returns the object's handle
    /// when no peer holds any reference any more; the object is then forgotten
    /// (its id is never used again) and the host drops the handle.
    ///
    /// # Errors
    ///
    /// [`ExportError::UnknownObject`] if `id` is not exported,
    /// [`ExportError::OverRelease`] if `from` holds fewer than `count`
    /// references; the table is unchanged.
    pub fn release(
        &mut self,
        from: PeerId,
        id: ObjectId,
        count: u64,
    ) -> Result<Option<H>, ExportError> {
        let entry = self
            .objects
            .get_mut(&id)
            .ok_or(ExportError::UnknownObject { id })?;
        if count == 0 {
            return Ok(None);
        }
        let Some(index) = entry.holders.iter().position(|(peer, _)| *peer == from) else {
            return Err(ExportError::OverRelease {
                id,
                peer: from,
                held: 0,
                released: count,
            });
        };
        let held = entry.holders[index].1;
        if count > held {
            return Err(ExportError::OverRelease {
                id,
                peer: from,
                held,
                released: count,
            });
        }
        if count < held {
            entry.holders[index].1 = held - count;
            return Ok(None);
        }
        entry.holders.swap_remove(index);
        if !entry.holders.is_empty() {
            return Ok(None);
        }
        Ok(self.forget(id))
    }

    /// Applies every `(id, count)` of one `Release` message from `from`. A bad
    /// entry does not stop the others.
    pub fn release_all(&mut self, from: PeerId, objects: &[(ObjectId, u64)]) -> Released<H> {
        let mut released = Released {
            freed: Vec::new(),
            errors: Vec::new(),
        };
        for &(id, count) in objects {
            match self.release(from, id, count) {
                Ok(Some(handle)) => released.freed.push(handle),
                Ok(None) => {}
                Err(error) => released.errors.push(error),
            }
        }
        released
    }

    /// `peer` is gone: drops every reference it held and returns the handles of
    /// the objects no peer references any more. From now on exports and retains
    /// for `peer` count nothing.
    pub fn peer_lost(&mut self, peer: PeerId) -> Vec<H> {
        self.lost.insert(peer);
        let mut unreferenced = Vec::new();
        for (id, entry) in &mut self.objects {
            entry.holders.retain(|(holder, _)| *holder != peer);
            if entry.holders.is_empty() {
                unreferenced.push(*id);
            }
        }
        unreferenced.sort_unstable();
        unreferenced
            .into_iter()
            .filter_map(|id| self.forget(id))
            .collect()
    }

    /// Forgets every object and returns their handles, for shutdown.
    pub fn clear(&mut self) -> Vec<H> {
        self.by_key.clear();
        self.objects
            .drain()
            .map(|(_, entry)| entry.handle)
            .collect()
    }

    /// The handle of the object exported as `id`: how the owner resolves a
    /// reference to its own object that comes back to it.
    pub fn get(&self, id: ObjectId) -> Option<&H> {
        self.objects.get(&id).map(|entry| &entry.handle)
    }

    /// The id of the object with identity `key`, if it is exported.
    pub fn id_of(&self, key: &K) -> Option<ObjectId> {
        self.by_key.get(key).copied()
    }

    /// References to `id` that `peer` holds (0 if none or `id` is unknown).
    pub fn held_by(&self, id: ObjectId, peer: PeerId) -> u64 {
        self.objects.get(&id).map_or(0, |entry| entry.held_by(peer))
    }

    /// Whether `peer` was reported lost.
    pub fn is_lost(&self, peer: PeerId) -> bool {
        self.lost.contains(&peer)
    }

    /// Number of exported objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is exported.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    fn forget(&mut self, id: ObjectId) -> Option<H> {
        let entry = self.objects.remove(&id)?;
        self.by_key.remove(&entry.key);
        Some(entry.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: PeerId = PeerId(2);
    const C: PeerId = PeerId(3);

    fn table() -> ExportTable<&'static str, u32> {
        ExportTable::new()
    }

    #[test]
    fn same_key_same_id_and_counts_per_send() {
        let mut table = table();
        let id = table.export(1, || "one", B);
        assert_eq!(table.export(1, || panic!("made twice"), B), id);
        assert_eq!(table.export(1, || panic!("made twice"), C), id);
        assert_eq!(table.held_by(id, B), 2);
        assert_eq!(table.held_by(id, C), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.id_of(&1), Some(id));
        assert_eq!(table.get(id), Some(&"one"));
    }

    #[test]
    fn ids_increase_and_are_never_reused() {
        let mut table = table();
        let first = table.export(1, || "one", B);
        assert_eq!(table.release(B, first, 1), Ok(Some("one")));
        let second = table.export(1, || "one again", B);
        let third = table.export(2, || "two", B);
        assert!(first < second && second < third);
        assert_eq!(table.get(first), None);
        assert_eq!(table.get(second), Some(&"one again"));
    }

    #[test]
    fn freed_only_when_every_peer_released() {
        let mut table = table();
        let id = table.export(1, || "one", B);
        table.export(1, || "one", C);
        table.export(1, || "one", B);
        assert_eq!(table.release(B, id, 1), Ok(None));
        assert_eq!(table.release(C, id, 1), Ok(None));
        assert_eq!(table.release(B, id, 1), Ok(Some("one")));
        assert!(table.is_empty());
        assert_eq!(table.id_of(&1), None);
    }

    #[test]
    fn retain_counts_for_a_third_peer() {
        let mut table = table();
        let id = table.export(1, || "one", B);
        table.retain(id, C, 2).unwrap();
        assert_eq!(table.release(B, id, 1), Ok(None));
        assert_eq!(table.release(C, id, 1), Ok(None));
        assert_eq!(table.release(C, id, 1), Ok(Some("one")));
        assert_eq!(
            table.retain(id, C, 1),
            Err(ExportError::UnknownObject { id })
        );
    }

    #[test]
    fn bad_releases_are_refused_and_change_nothing() {
        let mut table = table();
        let id = table.export(1, || "one", B);
        table.export(1, || "one", B);
        let unknown = ObjectId(99);
        assert_eq!(
            table.release(B, unknown, 1),
            Err(ExportError::UnknownObject { id: unknown })
        );
        assert_eq!(
            table.release(B, id, 3),
            Err(ExportError::OverRelease {
                id,
                peer: B,
                held: 2,
                released: 3
            })
        );
        assert_eq!(
            table.release(C, id, 1),
            Err(ExportError::OverRelease {
                id,
                peer: C,
                held: 0,
                released: 1
            })
        );
        assert_eq!(table.held_by(id, B), 2);
        assert_eq!(table.release(B, id, 0), Ok(None));
        assert_eq!(table.release(B, id, 2), Ok(Some("one")));
    }

    #[test]
    fn retain_overflow_is_refused() {
        let mut table = table();
        let id = table.export(1, || "one", B);
        table.retain(id, C, u64::MAX).unwrap();
        assert_eq!(
            table.retain(id, C, 1),
            Err(ExportError::CountOverflow { id, peer: C })
        );
        assert_eq!(table.held_by(id, C), u64::MAX);
    }

    #[test]
    fn release_all_applies_the_good_entries() {
        let mut table = table();
        let one = table.export(1, || "one", B);
        let two = table.export(2, || "two", B);
        table.export(2, || "two", B);
        let released = table.release_all(B, &[(one, 1), (ObjectId(50), 1), (two, 1), (two, 5)]);
        assert_eq!(released.freed, vec!["one"]);
        assert_eq!(released.errors.len(), 2);
        assert_eq!(table.held_by(two, B), 1);
    }

    #[test]
    fn peer_lost_drops_its_references_and_later_ones() {
        let mut table = table();
        let shared = table.export(1, || "shared", B);
        table.export(1, || "shared", C);
        let only_c = table.export(2, || "only C", C);
        assert_eq!(table.peer_lost(C), vec!["only C"]);
        assert!(table.is_lost(C));
        assert_eq!(table.get(only_c), None);
        assert_eq!(table.held_by(shared, C), 0);
        // A retain for C that crossed the loss, and exports to C, count nothing.
        table.retain(shared, C, 1).unwrap();
        assert_eq!(table.held_by(shared, C), 0);
        assert_eq!(table.export(1, || "shared", C), shared);
        let ghost = table.export(3, || panic!("not stored"), C);
        assert_eq!(table.get(ghost), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.release(B, shared, 1), Ok(Some("shared")));
    }

    #[test]
    fn clear_returns_every_handle() {
        let mut table = table();
        table.export(1, || "one", B);
        table.export(2, || "two", C);
        let mut handles = table.clear();
        handles.sort_unstable();
        assert_eq!(handles, vec!["one", "two"]);
        assert!(table.is_empty());
        assert_eq!(table.id_of(&1), None);
    }
}
