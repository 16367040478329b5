//! Misbehaving peers: retains and releases with ids that were never exported or
//! are already freed, counts that go negative or overflow, from any peer, lost
//! or not. The tables refuse them with typed errors, never panic, and stay
//! exactly as a simple model says they should.

use cpy2py_proxy::{ExportError, ExportTable, ImportTable, Received};
use cpy2py_wire::{ObjectId, PeerId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};

/// Handles are the identity key itself, so a freed handle names its object.
type Table = ExportTable<u8, u8>;

#[test]
fn unknown_id_or_too_large_count_is_refused_and_harmless() {
    let (b, c) = (PeerId(2), PeerId(3));
    let mut table = Table::new();
    let id = table.export(1, || 1, b);
    table.export(1, || 1, b);
    table.retain(id, c, 1).unwrap();
    let other = table.export(2, || 2, c);

    let unknown = ObjectId(1000);
    assert_eq!(
        table.release(b, unknown, 1),
        Err(ExportError::UnknownObject { id: unknown })
    );
    assert_eq!(
        table.retain(unknown, c, 1),
        Err(ExportError::UnknownObject { id: unknown })
    );
    let error = table.release(b, id, 3).unwrap_err();
    assert_eq!(
        error,
        ExportError::OverRelease {
            id,
            peer: b,
            held: 2,
            released: 3
        }
    );
    assert!(error.to_string().contains("holds 2"), "{error}");
    assert!(table.release(PeerId(9), id, 1).is_err());
    assert!(table.release(c, id, u64::MAX).is_err());
    assert_eq!(
        table.retain(id, c, u64::MAX),
        Err(ExportError::CountOverflow { id, peer: c })
    );

    // Nothing changed: the counts are intact and release normally.
    assert_eq!(table.len(), 2);
    assert_eq!((table.held_by(id, b), table.held_by(id, c)), (2, 1));
    assert_eq!(table.held_by(other, c), 1);
    assert_eq!(table.release(b, id, 2), Ok(None));
    assert_eq!(table.release(c, id, 1), Ok(Some(1)));
    assert_eq!(table.release(c, other, 1), Ok(Some(2)));
    assert!(table.is_empty());
    // A freed id stays unknown, even if its object is exported again.
    assert_eq!(
        table.release(c, id, 1),
        Err(ExportError::UnknownObject { id })
    );
    assert_ne!(table.export(1, || 1, b), id);
    assert_eq!(
        table.release(b, id, 1),
        Err(ExportError::UnknownObject { id })
    );
}

#[derive(Clone, Debug)]
enum Op {
    Export { key: u8, to: u32 },
    Retain { id: u64, peer: u32, count: u64 },
    Release { from: u32, id: u64, count: u64 },
    ReleaseAll { from: u32, objects: Vec<(u64, u64)> },
    PeerLost { peer: u32 },
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..4u64, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0..5u32;
    let id = 0..12u64;
    prop_oneof![
        4 => (0..6u8, peer.clone()).prop_map(|(key, to)| Op::Export { key, to }),
        2 => (id.clone(), peer.clone(), count())
            .prop_map(|(id, peer, count)| Op::Retain { id, peer, count }),
        4 => (peer.clone(), id.clone(), count())
            .prop_map(|(from, id, count)| Op::Release { from, id, count }),
        1 => (peer.clone(), proptest::collection::vec((id, count()), 0..4))
            .prop_map(|(from, objects)| Op::ReleaseAll { from, objects }),
        1 => peer.prop_map(|peer| Op::PeerLost { peer }),
    ]
}

/// What an export table should hold.
#[derive(Default)]
struct Model {
    objects: BTreeMap<ObjectId, (u8, BTreeMap<PeerId, u64>)>,
    by_key: BTreeMap<u8, ObjectId>,
    next: u64,
    lost: BTreeSet<PeerId>,
}

impl Model {
    fn export(&mut self, key: u8, to: PeerId) -> ObjectId {
        let lost = self.lost.contains(&to);
        if let Some(&id) = self.by_key.get(&key) {
            if !lost {
                let held = self.objects.get_mut(&id).unwrap().1.entry(to).or_default();
                *held = held.saturating_add(1);
            }
            return id;
        }
        let id = ObjectId(self.next);
        self.next += 1;
        if !lost {
            self.by_key.insert(key, id);
            self.objects.insert(id, (key, BTreeMap::from([(to, 1)])));
        }
        id
    }

    fn retain(&mut self, id: ObjectId, peer: PeerId, count: u64) -> Result<(), ExportError> {
        let (_, holders) = self
            .objects
            .get_mut(&id)
            .ok_or(ExportError::UnknownObject { id })?;
        if count == 0 || self.lost.contains(&peer) {
            return Ok(());
        }
        let held = holders.get(&peer).copied().unwrap_or(0);
        let total = held
            .checked_add(count)
            .ok_or(ExportError::CountOverflow { id, peer })?;
        holders.insert(peer, total);
        Ok(())
    }

    fn release(
        &mut self,
        from: PeerId,
        id: ObjectId,
        count: u64,
    ) -> Result<Option<u8>, ExportError> {
        let (key, holders) = self
            .objects
            .get_mut(&id)
            .ok_or(ExportError::UnknownObject { id })?;
        let held = holders.get(&from).copied().unwrap_or(0);
        if count > held {
            return Err(ExportError::OverRelease {
                id,
                peer: from,
                held,
                released: count,
            });
        }
        if count == 0 {
            return Ok(None);
        }
        if held == count {
            holders.remove(&from);
        } else {
            holders.insert(from, held - count);
        }
        if !holders.is_empty() {
            return Ok(None);
        }
        let key = *key;
        self.objects.remove(&id);
        self.by_key.remove(&key);
        Ok(Some(key))
    }

    fn peer_lost(&mut self, peer: PeerId) -> Vec<u8> {
        self.lost.insert(peer);
        let mut freed = Vec::new();
        for (holders_key, holders) in self.objects.values_mut() {
            holders.remove(&peer);
            if holders.is_empty() {
                freed.push(*holders_key);
            }
        }
        self.objects.retain(|_, (_, holders)| !holders.is_empty());
        for key in &freed {
            self.by_key.remove(key);
        }
        freed
    }

    /// Panics unless `table` holds exactly what the model does.
    fn check(&self, table: &Table) {
        assert_eq!(table.len(), self.objects.len());
        assert_eq!(table.is_empty(), self.objects.is_empty());
        for raw in 0..self.next + 2 {
            let id = ObjectId(raw);
            let expected = self.objects.get(&id);
            assert_eq!(table.get(id), expected.map(|(key, _)| key));
            for peer in (0..5).map(PeerId) {
                let held = expected.and_then(|(_, holders)| holders.get(&peer).copied());
                assert_eq!(table.held_by(id, peer), held.unwrap_or(0));
            }
        }
        for key in 0..6 {
            assert_eq!(table.id_of(&key), self.by_key.get(&key).copied());
        }
        for peer in (0..5).map(PeerId) {
            assert_eq!(table.is_lost(peer), self.lost.contains(&peer));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn export_table_matches_its_model(ops in proptest::collection::vec(op(), 0..120)) {
        let mut table = Table::new();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Export { key, to } => {
                    let to = PeerId(to);
                    prop_assert_eq!(table.export(key, || key, to), model.export(key, to));
                }
                Op::Retain { id, peer, count } => {
                    let (id, peer) = (ObjectId(id), PeerId(peer));
                    prop_assert_eq!(table.retain(id, peer, count), model.retain(id, peer, count));
                }
                Op::Release { from, id, count } => {
                    let (from, id) = (PeerId(from), ObjectId(id));
                    prop_assert_eq!(table.release(from, id, count), model.release(from, id, count));
                }
                Op::ReleaseAll { from, objects } => {
                    let from = PeerId(from);
                    let objects: Vec<(ObjectId, u64)> =
                        objects.into_iter().map(|(id, count)| (ObjectId(id), count)).collect();
                    let released = table.release_all(from, &objects);
                    let mut freed = Vec::new();
                    let mut errors = Vec::new();
                    for &(id, count) in &objects {
                        match model.release(from, id, count) {
                            Ok(Some(key)) => freed.push(key),
                            Ok(None) => {}
                            Err(error) => errors.push(error),
                        }
                    }
                    prop_assert_eq!(released.freed, freed);
                    prop_assert_eq!(released.errors, errors);
                }
                Op::PeerLost { peer } => {
                    let mut freed = table.peer_lost(PeerId(peer));
                    let mut expected = model.peer_lost(PeerId(peer));
                    freed.sort_unstable();
                    expected.sort_unstable();
                    prop_assert_eq!(freed, expected);
                }
            }
            model.check(&table);
        }
    }

    /// Any sequence of calls, even ones a correct host would not make, leaves
    /// the import table without a panic, and it never releases more than it
    /// received.
    #[test]
    fn import_table_never_panics(calls in proptest::collection::vec((0..6u8, 0..3u32, 0..3u64), 0..200)) {
        let mut table: ImportTable<Weak<u8>> = ImportTable::new();
        let mut proxies: Vec<Rc<u8>> = Vec::new();
        let mut received = 0u64;
        let mut released = 0u64;
        for (call, owner, id) in calls {
            let (owner, id) = (PeerId(owner), ObjectId(id));
            match call {
                0 => {
                    if !table.is_lost(owner) {
                        received += 1;
                    }
                    if let Received::Existing(proxy) = table.receive(owner, id) {
                        proxies.push(proxy);
                    }
                }
                1 => {
                    let proxy = Rc::new(0);
                    table.insert(owner, id, Rc::downgrade(&proxy));
                    proxies.push(proxy);
                }
                2 => released += table.abandon(owner, id).map_or(0, |(_, count)| count),
                3 => released += table.proxy_dropped(owner, id).map_or(0, |(_, count)| count),
                4 => {
                    proxies.pop();
                }
                _ => {
                    received -= table.owner_lost(owner);
                }
            }
            prop_assert!(released <= received);
        }
    }
}
