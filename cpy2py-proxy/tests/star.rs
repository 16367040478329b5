//! A simulated star of four peers (the master, peer 0, and twins 1, 2, 3), each
//! with its own tables, exchanging references under random interleavings.
//!
//! Every twin → twin frame goes twin → master → twin: two first-in first-out
//! hops. Frames are delivered one at a time from a random non-empty link, so
//! links run in any order relative to each other. Proxies die at random, their
//! drop notifications arrive late, proxies are made in two steps (with
//! failures and races), release batches are flushed at random, and at most one
//! twin dies (its pending frames still reach the master, which then announces
//! the loss). Any peer may own objects, including the master.
//!
//! Invariants, checked after every step: every live proxy, every proxy being
//! made and every reference in flight to a live peer names an object its live
//! owner still exports. Retains and releases are never refused. At the end,
//! once everything is dropped and every queue drained, every table is empty and
//! every native object is freed.

use cpy2py_proxy::{
    BatchedReleases, ExportTable, ImportTable, Received, Retain, RetainBatch, Transfer,
};
use cpy2py_wire::{ObjectId, PeerId};
use proptest::prelude::*;
use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::rc::{Rc, Weak};

/// The master and three twins.
const PEERS: usize = 4;

/// A native object, held by the owner's program and by its export table.
#[derive(Debug)]
struct Native {
    /// Identity key in the export table.
    key: u64,
    /// Id of the current export (ids change when an object is freed from the
    /// table and exported again).
    id: Cell<Option<ObjectId>>,
}

/// A proxy of a remote object.
#[derive(Debug)]
struct Proxy {
    owner: PeerId,
    id: ObjectId,
}

#[derive(Clone, Debug)]
enum Msg {
    /// A value carrying references.
    Refs(Vec<(PeerId, ObjectId)>),
    /// The proposed wire `Retain`.
    Retain(Retain),
    /// The wire `Release`.
    Release(Vec<(ObjectId, u64)>),
    /// From the master: a twin is gone.
    PeerGone(usize),
}

#[derive(Debug)]
struct Frame {
    src: usize,
    dst: usize,
    msg: Msg,
}

struct Peer {
    alive: bool,
    exports: ExportTable<Rc<Native>, u64>,
    imports: ImportTable<Weak<Proxy>>,
    /// Native objects the program holds.
    natives: Vec<Rc<Native>>,
    /// Proxies the program holds: the only strong references to proxies.
    proxies: Vec<Rc<Proxy>>,
    /// `receive` said `New`; the proxy is not made yet.
    making: Vec<(PeerId, ObjectId)>,
    /// Proxies that died; their drop notification has not run yet.
    dead: Vec<(PeerId, ObjectId)>,
    releases: BatchedReleases,
    known_lost: BTreeSet<usize>,
}

impl Peer {
    fn new() -> Self {
        Peer {
            alive: true,
            exports: ExportTable::new(),
            imports: ImportTable::new(),
            natives: Vec::new(),
            proxies: Vec::new(),
            making: Vec::new(),
            dead: Vec::new(),
            releases: BatchedReleases::new(),
            known_lost: BTreeSet::new(),
        }
    }

    /// Drops a proxy the program held, noting its death if it was the last
    /// strong reference.
    fn drop_proxy(&mut self, proxy: Rc<Proxy>) {
        if Rc::strong_count(&proxy) == 1 {
            self.dead.push((proxy.owner, proxy.id));
        }
    }

    fn notify(&mut self, owner: PeerId, id: ObjectId) {
        if let Some((id, count)) = self.imports.proxy_dropped(owner, id) {
            self.releases.add(owner, id, count);
        }
    }

    fn make(&mut self, owner: PeerId, id: ObjectId, fail: bool) {
        if fail {
            if let Some((id, count)) = self.imports.abandon(owner, id) {
                self.releases.add(owner, id, count);
            }
            return;
        }
        let proxy = Rc::new(Proxy { owner, id });
        match self.imports.insert(owner, id, Rc::downgrade(&proxy)) {
            None => self.proxies.push(proxy),
            Some(existing) => {
                assert!(existing.owner == owner && existing.id == id);
                self.proxies.push(existing);
                self.drop_proxy(proxy);
            }
        }
    }

    /// Peers this one may send to.
    fn targets(&self, me: usize) -> Vec<usize> {
        (0..PEERS)
            .filter(|&q| q != me && !self.known_lost.contains(&q))
            .collect()
    }
}

struct World {
    peers: Vec<Peer>,
    /// `up[t]`: twin `t` → master. Index 0 unused.
    up: Vec<VecDeque<Frame>>,
    /// `down[t]`: master → twin `t`. Index 0 unused.
    down: Vec<VecDeque<Frame>>,
    announced: Vec<bool>,
    next_key: u64,
    all_natives: Vec<Weak<Native>>,
}

#[derive(Clone, Debug)]
enum Action {
    /// `peer` exports a new or held native object to a peer.
    Export { peer: usize, pick: usize, to: usize },
    /// `peer`'s program lets go of a native object.
    DropNative { peer: usize, pick: usize },
    /// `peer` sends some of its proxies to a peer in one frame.
    Forward {
        peer: usize,
        picks: Vec<usize>,
        to: usize,
    },
    /// `peer`'s program drops a proxy.
    DropProxy { peer: usize, pick: usize },
    /// `peer` finishes (or fails) making a proxy.
    Make {
        peer: usize,
        pick: usize,
        fail: bool,
    },
    /// A late drop notification runs in `peer`.
    Notify { peer: usize, pick: usize },
    /// `peer` sends its batched releases.
    Flush { peer: usize },
    /// The head frame of a random non-empty link is delivered.
    Deliver { link: usize },
}

fn action() -> impl Strategy<Value = Action> {
    let peer = 0..PEERS;
    let pick = 0..64usize;
    prop_oneof![
        3 => (peer.clone(), pick.clone(), peer.clone())
            .prop_map(|(peer, pick, to)| Action::Export { peer, pick, to }),
        1 => (peer.clone(), pick.clone()).prop_map(|(peer, pick)| Action::DropNative { peer, pick }),
        4 => (peer.clone(), proptest::collection::vec(pick.clone(), 1..4), peer.clone())
            .prop_map(|(peer, picks, to)| Action::Forward { peer, picks, to }),
        3 => (peer.clone(), pick.clone()).prop_map(|(peer, pick)| Action::DropProxy { peer, pick }),
        3 => (peer.clone(), pick.clone(), proptest::bool::weighted(0.1))
            .prop_map(|(peer, pick, fail)| Action::Make { peer, pick, fail }),
        3 => (peer.clone(), pick.clone()).prop_map(|(peer, pick)| Action::Notify { peer, pick }),
        2 => peer.prop_map(|peer| Action::Flush { peer }),
        12 => pick.prop_map(|link| Action::Deliver { link }),
    ]
}

impl World {
    fn new() -> Self {
        World {
            peers: (0..PEERS).map(|_| Peer::new()).collect(),
            up: (0..PEERS).map(|_| VecDeque::new()).collect(),
            down: (0..PEERS).map(|_| VecDeque::new()).collect(),
            announced: vec![false; PEERS],
            next_key: 0,
            all_natives: Vec::new(),
        }
    }

    /// Puts a frame on the first link of its way.
    fn send(&mut self, src: usize, dst: usize, msg: Msg) {
        assert_ne!(src, dst);
        let frame = Frame { src, dst, msg };
        if src == 0 {
            if self.peers[dst].alive {
                self.down[dst].push_back(frame);
            }
        } else {
            self.up[src].push_back(frame);
        }
    }

    fn step(&mut self, action: &Action) {
        match *action {
            Action::Export { peer, pick, to } => {
                let p = &self.peers[peer];
                let targets = p.targets(peer);
                if !p.alive || targets.is_empty() {
                    return;
                }
                let to = targets[to % targets.len()];
                let index = pick % (p.natives.len() + 1);
                let native = if index == p.natives.len() {
                    let native = Rc::new(Native {
                        key: self.next_key,
                        id: Cell::new(None),
                    });
                    self.next_key += 1;
                    self.all_natives.push(Rc::downgrade(&native));
                    self.peers[peer].natives.push(Rc::clone(&native));
                    native
                } else {
                    Rc::clone(&p.natives[index])
                };
                let id = self.peers[peer].exports.export(
                    native.key,
                    || Rc::clone(&native),
                    PeerId(to as u32),
                );
                native.id.set(Some(id));
                self.send(peer, to, Msg::Refs(vec![(PeerId(peer as u32), id)]));
            }
            Action::DropNative { peer, pick } => {
                let p = &mut self.peers[peer];
                if !p.natives.is_empty() {
                    let index = pick % p.natives.len();
                    p.natives.swap_remove(index);
                }
            }
            Action::Forward {
                peer,
                ref picks,
                to,
            } => {
                let p = &self.peers[peer];
                let targets = p.targets(peer);
                if !p.alive || targets.is_empty() || p.proxies.is_empty() {
                    return;
                }
                let to = targets[to % targets.len()];
                let sent: Vec<Rc<Proxy>> = picks
                    .iter()
                    .map(|pick| Rc::clone(&p.proxies[pick % p.proxies.len()]))
                    .collect();
                let mut retains = RetainBatch::new();
                for proxy in &sent {
                    let transfer = p.imports.forward(proxy.owner, proxy.id, PeerId(to as u32));
                    if proxy.owner.0 as usize == to {
                        assert_eq!(transfer, Transfer::ToOwner);
                    }
                    retains.add(transfer);
                }
                // The retains go first, while the proxies are alive.
                for (owner, retain) in retains.take_all() {
                    self.send(peer, owner.0 as usize, Msg::Retain(retain));
                }
                let refs = sent.iter().map(|proxy| (proxy.owner, proxy.id)).collect();
                self.send(peer, to, Msg::Refs(refs));
            }
            Action::DropProxy { peer, pick } => {
                let p = &mut self.peers[peer];
                if !p.proxies.is_empty() {
                    let index = pick % p.proxies.len();
                    let proxy = p.proxies.swap_remove(index);
                    p.drop_proxy(proxy);
                }
            }
            Action::Make { peer, pick, fail } => {
                let p = &mut self.peers[peer];
                if !p.making.is_empty() {
                    let index = pick % p.making.len();
                    let (owner, id) = p.making.swap_remove(index);
                    p.make(owner, id, fail);
                }
            }
            Action::Notify { peer, pick } => {
                let p = &mut self.peers[peer];
                if !p.dead.is_empty() {
                    let index = pick % p.dead.len();
                    let (owner, id) = p.dead.swap_remove(index);
                    p.notify(owner, id);
                }
            }
            Action::Flush { peer } => self.flush(peer),
            Action::Deliver { link } => {
                let links = self.busy_links();
                if !links.is_empty() {
                    self.deliver(links[link % links.len()]);
                }
            }
        }
    }

    fn flush(&mut self, peer: usize) {
        if !self.peers[peer].alive {
            return;
        }
        for (owner, release) in self.peers[peer].releases.take_all() {
            assert!(
                !self.peers[peer].known_lost.contains(&(owner.0 as usize)),
                "peer#{peer} releases to {owner}, which it knows is gone"
            );
            self.send(peer, owner.0 as usize, Msg::Release(release.objects));
        }
    }

    /// Non-empty links: `(twin, true)` is twin → master, `(twin, false)` is
    /// master → twin.
    fn busy_links(&self) -> Vec<(usize, bool)> {
        let mut links = Vec::new();
        for twin in 1..PEERS {
            if !self.up[twin].is_empty() {
                links.push((twin, true));
            }
            if !self.down[twin].is_empty() {
                links.push((twin, false));
            }
        }
        links
    }

    fn deliver(&mut self, (twin, up): (usize, bool)) {
        if up {
            let Some(frame) = self.up[twin].pop_front() else {
                return;
            };
            if frame.dst == 0 {
                self.process(0, frame);
            } else if self.peers[frame.dst].alive {
                self.down[frame.dst].push_back(frame);
            }
            if !self.peers[twin].alive && self.up[twin].is_empty() {
                self.announce(twin);
            }
        } else if let Some(frame) = self.down[twin].pop_front() {
            self.process(twin, frame);
        }
    }

    /// A twin dies: whatever it wrote still reaches the master, which then
    /// announces the loss.
    fn kill(&mut self, twin: usize) {
        if !self.peers[twin].alive {
            return;
        }
        let dead = &mut self.peers[twin];
        dead.alive = false;
        dead.natives.clear();
        dead.proxies.clear();
        dead.making.clear();
        dead.dead.clear();
        drop(dead.exports.clear());
        self.down[twin].clear();
        if self.up[twin].is_empty() {
            self.announce(twin);
        }
    }

    fn announce(&mut self, twin: usize) {
        if self.announced[twin] {
            return;
        }
        self.announced[twin] = true;
        self.peer_gone(0, twin);
        for other in 1..PEERS {
            if other != twin && self.peers[other].alive {
                self.send(0, other, Msg::PeerGone(twin));
            }
        }
    }

    fn peer_gone(&mut self, at: usize, lost: usize) {
        let p = &mut self.peers[at];
        p.known_lost.insert(lost);
        let lost = PeerId(lost as u32);
        drop(p.exports.peer_lost(lost));
        p.imports.owner_lost(lost);
        p.releases.owner_lost(lost);
    }

    fn process(&mut self, at: usize, frame: Frame) {
        assert!(self.peers[at].alive);
        let me = PeerId(at as u32);
        let src = PeerId(frame.src as u32);
        let p = &mut self.peers[at];
        match frame.msg {
            Msg::Refs(refs) => {
                for (owner, id) in refs {
                    if owner == me {
                        let native = p.exports.get(id).unwrap_or_else(|| {
                            panic!("{me} got back object {id:?} after freeing it")
                        });
                        p.natives.push(Rc::clone(native));
                        continue;
                    }
                    let held = p
                        .proxies
                        .iter()
                        .find(|proxy| proxy.owner == owner && proxy.id == id)
                        .cloned();
                    match p.imports.receive(owner, id) {
                        Received::Existing(proxy) => {
                            let held = held.expect("a live proxy the program does not hold");
                            assert!(Rc::ptr_eq(&proxy, &held), "two proxies for one object");
                            p.proxies.push(proxy);
                        }
                        Received::New => {
                            assert!(held.is_none(), "a second proxy for a live one");
                            p.making.push((owner, id));
                        }
                    }
                }
            }
            Msg::Retain(retain) => {
                for (id, count) in retain.objects {
                    if let Err(error) = p.exports.retain(id, retain.for_peer, count) {
                        panic!("{me} refused a retain from {src}: {error}");
                    }
                }
            }
            Msg::Release(objects) => {
                let released = p.exports.release_all(src, &objects);
                assert!(
                    released.errors.is_empty(),
                    "{me} refused releases from {src}: {:?}",
                    released.errors
                );
                drop(released.freed);
            }
            Msg::PeerGone(lost) => self.peer_gone(at, lost),
        }
    }

    /// Every reference that a live peer holds, is making, or will receive
    /// names an object its live owner still exports.
    fn check(&self) {
        let exported = |owner: PeerId, id: ObjectId, what: &str| {
            let o = &self.peers[owner.0 as usize];
            if o.alive {
                assert!(
                    o.exports.get(id).is_some(),
                    "{owner} freed object {id:?} while {what}"
                );
            }
        };
        for (index, p) in self.peers.iter().enumerate() {
            if !p.alive {
                continue;
            }
            for proxy in &p.proxies {
                exported(
                    proxy.owner,
                    proxy.id,
                    &format!("peer#{index} holds a live proxy"),
                );
            }
            for &(owner, id) in &p.making {
                exported(owner, id, &format!("peer#{index} is making a proxy"));
            }
        }
        for frame in self.up.iter().chain(&self.down).flatten() {
            if let Msg::Refs(refs) = &frame.msg {
                if self.peers[frame.dst].alive {
                    for &(owner, id) in refs {
                        exported(owner, id, "a reference to it is in flight");
                    }
                }
            }
        }
    }

    /// Drops everything, runs every notification, flushes and delivers
    /// everything, until nothing moves.
    fn drain(&mut self) {
        for _round in 0..100 {
            for peer in 0..PEERS {
                let p = &mut self.peers[peer];
                if !p.alive {
                    continue;
                }
                while let Some((owner, id)) = p.making.pop() {
                    p.make(owner, id, false);
                }
                while let Some(proxy) = p.proxies.pop() {
                    p.drop_proxy(proxy);
                }
                while let Some((owner, id)) = p.dead.pop() {
                    p.notify(owner, id);
                }
                p.natives.clear();
                self.flush(peer);
                self.check();
            }
            while let Some(&link) = self.busy_links().first() {
                self.deliver(link);
                self.check();
            }
            let quiet = self.peers.iter().all(|p| {
                !p.alive
                    || (p.making.is_empty()
                        && p.proxies.is_empty()
                        && p.dead.is_empty()
                        && p.releases.is_empty())
            });
            if quiet {
                return;
            }
        }
        panic!("the simulation did not settle");
    }
}

fn run(actions: &[Action], kill: Option<(usize, usize)>) {
    let mut world = World::new();
    for (step, action) in actions.iter().enumerate() {
        if let Some((at, twin)) = kill {
            if at == step {
                world.kill(twin);
            }
        }
        world.step(action);
        world.check();
    }
    world.drain();
    for (index, p) in world.peers.iter().enumerate() {
        if p.alive {
            assert!(
                p.exports.is_empty(),
                "peer#{index} still exports {} objects",
                p.exports.len()
            );
            assert!(
                p.imports.is_empty(),
                "peer#{index} still imports {} objects",
                p.imports.len()
            );
        }
    }
    drop(world.peers);
    assert!(
        world
            .all_natives
            .iter()
            .all(|native| native.upgrade().is_none()),
        "a native object leaked"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn references_survive_any_interleaving(
        actions in proptest::collection::vec(action(), 1..300),
        kill in proptest::option::weighted(0.3, (0..300usize, 1..PEERS)),
    ) {
        run(&actions, kill);
    }
}

#[test]
fn a_to_b_to_c_with_b_releasing_at_once() {
    use Action::*;
    // Twin 1 exports to twin 2, which forwards to twin 3, drops its proxy and
    // flushes before anything reaches the owner.
    run(
        &[
            Export {
                peer: 1,
                pick: 0,
                to: 1,
            },
            Deliver { link: 0 },
            Deliver { link: 0 },
            Make {
                peer: 2,
                pick: 0,
                fail: false,
            },
            Forward {
                peer: 2,
                picks: vec![0],
                to: 2,
            },
            DropProxy { peer: 2, pick: 0 },
            Notify { peer: 2, pick: 0 },
            Flush { peer: 2 },
        ],
        None,
    );
}
