//! The receiver's side: references to objects native to other peers, each with
//! its live proxy (held weakly) and the references received for it.

use crate::transfer::Transfer;
use cpy2py_wire::{ObjectId, PeerId};
use std::collections::{HashMap, HashSet};

/// A weak handle to a proxy, as stored by an [`ImportTable`].
///
/// The table holds proxies weakly so that it never keeps one alive: a proxy
/// lives as long as the host's program uses it, and the table only preserves
/// identity (the same remote object arriving twice gives the same proxy while
/// that proxy lives). The Python bindings implement it for a wrapper around a
/// `weakref.ref`; it is implemented here for the standard library's weak
/// pointers.
pub trait WeakProxy {
    /// The strong handle a live proxy upgrades to.
    type Strong;

    /// The proxy, if it is still alive.
    fn upgrade(&self) -> Option<Self::Strong>;
}

impl<T: ?Sized> WeakProxy for std::rc::Weak<T> {
    type Strong = std::rc::Rc<T>;

    fn upgrade(&self) -> Option<Self::Strong> {
        std::rc::Weak::upgrade(self)
    }
}

impl<T: ?Sized> WeakProxy for std::sync::Weak<T> {
    type Strong = std::sync::Arc<T>;

    fn upgrade(&self) -> Option<Self::Strong> {
        std::sync::Weak::upgrade(self)
    }
}

/// What [`ImportTable::receive`] found for a reference that arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received<S> {
    /// The object already has a live proxy here: use it.
    Existing(S),
    /// No live proxy: make one and [`insert`](ImportTable::insert) it (or
    /// [`abandon`](ImportTable::abandon) the reference if that fails).
    New,
}

/// References received from other peers: for each `(owner, ObjectId)`, the
/// live proxy (weak) and the number of references received since the last
/// release.
///
/// Receiving a proxy is two steps so that the host can make the proxy without
/// holding the lock around this table: [`receive`](Self::receive) counts the
/// reference and says whether a live proxy exists; if not, the host makes one
/// and [`insert`](Self::insert)s it. If two threads race to make a proxy for
/// the same object, `insert` keeps the first and hands it to the second.
///
/// When a proxy dies the host calls [`proxy_dropped`](Self::proxy_dropped),
/// which forgets the entry and returns the references to release to the
/// owner. Notifications that are stale (the object got a new proxy meanwhile,
/// or one is being made) release nothing; the last proxy's notification
/// releases everything received.
///
/// # Examples
///
/// ```
/// use cpy2py_proxy::{ImportTable, Received};
/// use cpy2py_wire::{ObjectId, PeerId};
/// use std::rc::Rc;
///
/// let (owner, id) = (PeerId(1), ObjectId(5));
/// let mut table = ImportTable::new();
/// assert_eq!(table.receive(owner, id), Received::New);
/// let proxy = Rc::new("proxy");
/// assert_eq!(table.insert(owner, id, Rc::downgrade(&proxy)), None);
///
/// // The same object again: the same proxy.
/// assert_eq!(table.receive(owner, id), Received::Existing(Rc::clone(&proxy)));
///
/// drop(proxy);
/// assert_eq!(table.proxy_dropped(owner, id), Some((id, 2)));
/// assert!(table.is_empty());
/// ```
#[derive(Debug)]
pub struct ImportTable<W> {
    entries: HashMap<(PeerId, ObjectId), Imported<W>>,
    lost: HashSet<PeerId>,
}

/// One received object.
#[derive(Debug)]
struct Imported<W> {
    /// The proxy, once inserted.
    proxy: Option<W>,
    /// References received since the last release.
    received: u64,
    /// `receive` calls that returned `New` and were neither inserted nor
    /// abandoned yet.
    making: u32,
}

impl<W> Default for ImportTable<W> {
    fn default() -> Self {
        ImportTable {
            entries: HashMap::new(),
            lost: HashSet::new(),
        }
    }
}

impl<W: WeakProxy> ImportTable<W> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reference to object `id` of `owner` arrived: counts it, and returns the
    /// live proxy if there is one, or [`Received::New`] if the host must make
    /// one. The reference is counted even if the previous proxy died and its
    /// drop was not reported yet.
    ///
    /// References to objects of an owner reported lost are not counted (there
    /// is nobody to release them to) but still get proxies with identity.
    pub fn receive(&mut self, owner: PeerId, id: ObjectId) -> Received<W::Strong> {
        let counted = !self.lost.contains(&owner);
        let entry = self.entries.entry((owner, id)).or_insert_with(|| Imported {
            proxy: None,
            received: 0,
            making: 0,
        });
        if counted {
            entry.received = entry.received.saturating_add(1);
        }
        if let Some(strong) = entry.proxy.as_ref().and_then(W::upgrade) {
            return Received::Existing(strong);
        }
        entry.making = entry.making.saturating_add(1);
        Received::New
    }

    /// Records the proxy the host made after [`Received::New`].
    ///
    /// Returns `None` if `proxy` is now the object's proxy. Returns the live
    /// proxy if another one was inserted meanwhile: the host uses that one and
    /// discards its own (whose drop notification will then be stale and
    /// harmless).
    pub fn insert(&mut self, owner: PeerId, id: ObjectId, proxy: W) -> Option<W::Strong> {
        let entry = self.entries.entry((owner, id)).or_insert_with(|| Imported {
            proxy: None,
            received: 0,
            making: 1,
        });
        entry.making = entry.making.saturating_sub(1);
        if let Some(strong) = entry.proxy.as_ref().and_then(W::upgrade) {
            return Some(strong);
        }
        entry.proxy = Some(proxy);
        None
    }

    /// The host could not make the proxy it was asked for by
    /// [`Received::New`]. Returns the references to release if no proxy is
    /// alive or being made for the object any more, as
    /// [`proxy_dropped`](Self::proxy_dropped) does.
    pub fn abandon(&mut self, owner: PeerId, id: ObjectId) -> Option<(ObjectId, u64)> {
        let entry = self.entries.get_mut(&(owner, id))?;
        entry.making = entry.making.saturating_sub(1);
        self.settle(owner, id)
    }

    /// A proxy of object `id` of `owner` died. If the object has no live proxy
    /// and none is being made, forgets it and returns `(id, count)`: the
    /// references received since the last release, to add to the owner's
    /// [`ReleaseBatch`](crate::ReleaseBatch). Otherwise (a stale notification,
    /// or an owner that is lost, or nothing received) returns `None`.
    ///
    /// Call it only once the proxy's weak handle no longer upgrades.
    pub fn proxy_dropped(&mut self, owner: PeerId, id: ObjectId) -> Option<(ObjectId, u64)> {
        self.settle(owner, id)
    }

    /// Describes what sending the live proxy of object `id` of `owner` to peer
    /// `to` requires; see [`Transfer`]. Nothing is counted here: the owner
    /// counts the new holder when it gets the [`Retain`](crate::Retain).
    pub fn forward(&self, owner: PeerId, id: ObjectId, to: PeerId) -> Transfer {
        if to == owner {
            Transfer::ToOwner
        } else {
            Transfer::Retain {
                owner,
                id,
                for_peer: to,
            }
        }
    }

    /// `owner` is gone: nothing received from it will be released (its proxies
    /// release nothing when they die) and nothing is counted for it from now
    /// on. Its proxies keep their identity. Returns the number of references
    /// forgotten.
    pub fn owner_lost(&mut self, owner: PeerId) -> u64 {
        self.lost.insert(owner);
        let mut forgotten = 0u64;
        for ((holder, _), entry) in &mut self.entries {
            if *holder == owner {
                forgotten = forgotten.saturating_add(std::mem::take(&mut entry.received));
            }
        }
        forgotten
    }

    /// The live proxy of object `id` of `owner`, if any.
    pub fn get(&self, owner: PeerId, id: ObjectId) -> Option<W::Strong> {
        self.entries
            .get(&(owner, id))
            .and_then(|entry| entry.proxy.as_ref())
            .and_then(W::upgrade)
    }

    /// References to object `id` of `owner` received since the last release.
    pub fn received(&self, owner: PeerId, id: ObjectId) -> u64 {
        self.entries
            .get(&(owner, id))
            .map_or(0, |entry| entry.received)
    }

    /// Whether `owner` was reported lost.
    pub fn is_lost(&self, owner: PeerId) -> bool {
        self.lost.contains(&owner)
    }

    /// Number of objects with an entry (a live proxy, one being made, or a dead
    /// proxy whose drop was not reported yet).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets the entry and returns what to release, unless a proxy is alive or
    /// being made.
    fn settle(&mut self, owner: PeerId, id: ObjectId) -> Option<(ObjectId, u64)> {
        let entry = self.entries.get(&(owner, id))?;
        if entry.making > 0 || entry.proxy.as_ref().and_then(W::upgrade).is_some() {
            return None;
        }
        let entry = self.entries.remove(&(owner, id))?;
        (entry.received > 0).then_some((id, entry.received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::{Rc, Weak};

    const A: PeerId = PeerId(1);
    const C: PeerId = PeerId(3);
    const ID: ObjectId = ObjectId(4);

    type Table = ImportTable<Weak<str>>;

    fn make(table: &mut Table, name: &'static str) -> Rc<str> {
        match table.receive(A, ID) {
            Received::Existing(proxy) => proxy,
            Received::New => {
                let proxy = Rc::from(name);
                assert_eq!(table.insert(A, ID, Rc::downgrade(&proxy)), None);
                proxy
            }
        }
    }

    #[test]
    fn same_object_same_proxy_while_it_lives() {
        let mut table = Table::new();
        let first = make(&mut table, "first");
        let second = make(&mut table, "second");
        assert!(Rc::ptr_eq(&first, &second));
        assert_eq!(table.received(A, ID), 2);
        assert!(Rc::ptr_eq(&table.get(A, ID).unwrap(), &first));
        drop(first);
        // A live proxy remains: a notification now would be stale.
        assert_eq!(table.proxy_dropped(A, ID), None);
        drop(second);
        assert_eq!(table.proxy_dropped(A, ID), Some((ID, 2)));
        assert!(table.is_empty());
        assert_eq!(table.proxy_dropped(A, ID), None);
    }

    #[test]
    fn reference_after_death_before_notification() {
        let mut table = Table::new();
        drop(make(&mut table, "old"));
        // The old proxy died; its notification is late. A new reference comes.
        let new = make(&mut table, "new");
        assert_eq!(&*new, "new");
        assert_eq!(table.received(A, ID), 2);
        // The old proxy's notification is stale while the new one lives.
        assert_eq!(table.proxy_dropped(A, ID), None);
        drop(new);
        assert_eq!(table.proxy_dropped(A, ID), Some((ID, 2)));
    }

    #[test]
    fn both_dead_first_notification_releases_all() {
        let mut table = Table::new();
        drop(make(&mut table, "old"));
        drop(make(&mut table, "new"));
        assert_eq!(table.proxy_dropped(A, ID), Some((ID, 2)));
        assert_eq!(table.proxy_dropped(A, ID), None);
    }

    #[test]
    fn notification_while_a_proxy_is_being_made_is_stale() {
        let mut table = Table::new();
        drop(make(&mut table, "old"));
        assert_eq!(table.receive(A, ID), Received::New);
        assert_eq!(table.proxy_dropped(A, ID), None);
        let proxy = Rc::from("new");
        assert_eq!(table.insert(A, ID, Rc::downgrade(&proxy)), None);
        drop(proxy);
        assert_eq!(table.proxy_dropped(A, ID), Some((ID, 2)));
    }

    #[test]
    fn racing_inserts_keep_the_first_proxy() {
        let mut table = Table::new();
        assert_eq!(table.receive(A, ID), Received::New);
        assert_eq!(table.receive(A, ID), Received::New);
        let first = Rc::from("first");
        let second = Rc::from("second");
        assert_eq!(table.insert(A, ID, Rc::downgrade(&first)), None);
        let winner = table.insert(A, ID, Rc::downgrade(&second)).unwrap();
        assert!(Rc::ptr_eq(&winner, &first));
        drop(second);
        assert_eq!(table.proxy_dropped(A, ID), None);
        drop((first, winner));
        assert_eq!(table.proxy_dropped(A, ID), Some((ID, 2)));
    }

    #[test]
    fn abandoned_proxy_releases_when_nothing_else_holds() {
        let mut table = Table::new();
        assert_eq!(table.receive(A, ID), Received::New);
        assert_eq!(table.abandon(A, ID), Some((ID, 1)));
        assert!(table.is_empty());

        // Two threads were asked for a proxy; one made it, the other failed.
        assert_eq!(table.receive(A, ID), Received::New);
        assert_eq!(table.receive(A, ID), Received::New);
        let proxy = Rc::from("made");
        assert_eq!(table.insert(A, ID, Rc::downgrade(&proxy)), None);
        assert_eq!(table.abandon(A, ID), None);
        drop(proxy);
        assert_eq!(table.proxy_dropped(A, ID), Some((ID, 2)));
    }

    #[test]
    fn lost_owner_releases_nothing() {
        let mut table = Table::new();
        let proxy = make(&mut table, "orphan");
        make(&mut table, "orphan");
        assert_eq!(table.owner_lost(A), 2);
        assert!(table.is_lost(A));
        // Identity still holds for references that arrive late.
        let late = make(&mut table, "late");
        assert!(Rc::ptr_eq(&late, &proxy));
        assert_eq!(table.received(A, ID), 0);
        drop((proxy, late));
        assert_eq!(table.proxy_dropped(A, ID), None);
        assert!(table.is_empty());
    }

    #[test]
    fn forward_retains_unless_going_home() {
        let table = Table::new();
        assert_eq!(
            table.forward(A, ID, C),
            Transfer::Retain {
                owner: A,
                id: ID,
                for_peer: C
            }
        );
        assert_eq!(table.forward(A, ID, A), Transfer::ToOwner);
    }
}
