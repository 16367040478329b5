//! The protocol core stepped in memory: a star of endpoints (the master, peer
//! 0, and twins) exchanging real encoded frames over first-in first-out links,
//! with threads as plain numbers. No sockets, threads or sleeps.
//!
//! Longer than 600 lines on purpose: one harness and the scenarios it drives,
//! which read best side by side.

use super::*;
use cpy2py_wire::{ObjectId, Op, Release, Value, encode_frame};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Thread = u32;

/// A call's outcome as tests compare it.
fn result_value(result: &Result<Outcome, CallError>) -> Result<Value, String> {
    match result {
        Ok(Outcome::Ok(value)) => Ok(value.clone()),
        Ok(Outcome::Err(error)) => Err(format!("{}: {}", error.type_path, error.message)),
        Ok(Outcome::Failed(failure)) => Err(format!("unconverted failure {failure:?}")),
        Err(error) => Err(error.to_string()),
    }
}

fn op(token: i64) -> Op {
    Op::CallGlobal {
        module: "m".into(),
        qualname: "f".into(),
        args: vec![Value::Int(token)],
        kwargs: Vec::new(),
    }
}

fn local(name: &str) -> LocalInfo {
    LocalInfo {
        name: name.into(),
        interpreter: "test".into(),
        version: "1".into(),
        pickle_protocol: 5,
    }
}

/// A star of endpoints and the frames in flight between them.
struct Star {
    nodes: Vec<Endpoint<Thread>>,
    /// `(from, to)` -> frames written and not yet read, oldest first.
    links: BTreeMap<(usize, usize), VecDeque<Vec<u8>>>,
    /// Per node, the events it was asked to carry out, in order.
    events: Vec<Vec<Event<Thread>>>,
    /// Per node, the peers it closed for a violation.
    violations: Vec<Vec<(PeerId, Violation)>>,
    /// Nodes whose process ended.
    dead: Vec<bool>,
}

impl Star {
    /// The master and `twins` twins, each handshake done.
    fn new(twins: usize) -> Star {
        let mut nodes = vec![Endpoint::new(
            PeerId::MASTER,
            Role::Master,
            local("master"),
            "master".into(),
            1 << 20,
        )];
        let master_hello = hello(&local("master"), PeerId::MASTER, 100);
        for i in 1..=twins {
            let name = format!("twin{i}");
            let me = PeerId(i as u32);
            let mut twin = Endpoint::new(me, Role::Twin, local(&name), "master".into(), 1 << 20);
            // Both sides check what the other announced.
            let theirs = hello(&local(&name), me, 100 + i as u32);
            let envelope = Envelope {
                src: me,
                dst: PeerId::MASTER,
                message: Message::Hello(theirs),
            };
            let checked = check_hello(envelope, Some(me), Some(&name)).expect("twin's hello");
            nodes[0].add_peer(me, checked);
            twin.add_peer(PeerId::MASTER, master_hello.clone());
            nodes.push(twin);
        }
        let n = nodes.len();
        Star {
            nodes,
            links: BTreeMap::new(),
            events: (0..n).map(|_| Vec::new()).collect(),
            violations: (0..n).map(|_| Vec::new()).collect(),
            dead: vec![false; n],
        }
    }

    fn write(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        if self.dead[from] || self.dead[to] {
            return; // a closed socket: nothing arrives
        }
        self.links.entry((from, to)).or_default().push_back(frame);
    }

    /// Writes `envelope` from `from` on the link its endpoint would use.
    fn send(&mut self, from: usize, envelope: &Envelope) {
        let hop = if from == 0 {
            envelope.dst.0 as usize
        } else {
            0
        };
        let mut frame = Vec::new();
        encode_frame(envelope, &mut frame).expect("encodes");
        self.write(from, hop, frame);
    }

    /// Thread `thread` of `node` calls `dst` with `token`; the call's id.
    fn call(
        &mut self,
        node: usize,
        thread: Thread,
        chain: ChainId,
        dst: usize,
        token: i64,
    ) -> RequestId {
        let (hop, id) = self.nodes[node]
            .submit(PeerId(dst as u32), chain, Completion::Thread(thread))
            .expect("routable");
        assert_eq!(hop.0 as usize, if node == 0 { dst } else { 0 });
        let envelope = Envelope {
            src: PeerId(node as u32),
            dst: PeerId(dst as u32),
            message: Message::Request(Request {
                id,
                chain,
                op: op(token),
                time_left_us: None,
            }),
        };
        self.send(node, &envelope);
        id
    }

    /// `node` answers `inbound` with `value`.
    fn reply(&mut self, node: usize, inbound: &Inbound, value: Value) {
        let envelope = Envelope {
            src: PeerId(node as u32),
            dst: inbound.src,
            message: Message::Reply(Reply {
                id: inbound.request.id,
                outcome: Outcome::Ok(value),
            }),
        };
        self.send(node, &envelope);
    }

    /// Delivers the oldest frame on `from -> to`; false if there was none.
    fn step(&mut self, from: usize, to: usize) -> bool {
        let Some(frame) = self
            .links
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        let node = &mut self.nodes[to];
        let incoming = Incoming::read(&frame, &node.decoder, PeerId(to as u32), to == 0)
            .expect("decodes")
            .expect("whole");
        let peer = PeerId(from as u32);
        if let Err(violation) = node.handle_frame(peer, incoming) {
            self.violations[to].push((peer, violation.clone()));
            self.nodes[to].handle_closed(peer, format!("protocol error: {violation}"));
            self.kill(from);
        }
        self.collect(to);
        true
    }

    /// Moves `node`'s outputs: events to its log, transmits onto the links.
    fn collect(&mut self, node: usize) {
        let outputs = self.nodes[node].take_outputs();
        self.events[node].extend(outputs.events);
        for transmit in outputs.transmits {
            match transmit {
                Transmit::Forward { to, frame, .. } => self.write(node, to.0 as usize, frame),
                Transmit::Message { to, envelope } => {
                    let mut frame = Vec::new();
                    encode_frame(&envelope, &mut frame).expect("encodes");
                    self.write(node, to.0 as usize, frame);
                }
            }
        }
    }

    /// Twin `twin`'s process ends: its links go, the master notices.
    fn kill(&mut self, twin: usize) {
        self.dead[twin] = true;
        self.links.retain(|(a, b), _| *a != twin && *b != twin);
        self.nodes[0].handle_closed(PeerId(twin as u32), "killed by signal 9".into());
        self.collect(0);
    }

    /// Delivers everything in flight, link by link in id order.
    fn settle(&mut self) {
        while let Some(&(from, to)) = self
            .links
            .iter()
            .find(|(_, q)| !q.is_empty())
            .map(|(k, _)| k)
        {
            self.step(from, to);
        }
    }

    /// Takes `node`'s events (its log starts over).
    fn take_events(&mut self, node: usize) -> Vec<Event<Thread>> {
        std::mem::take(&mut self.events[node])
    }

    /// The requests `node` was asked to run or hand over, in order.
    fn requests(&mut self, node: usize) -> Vec<(Option<Thread>, Inbound)> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for event in self.take_events(node) {
            match event {
                Event::Run(inbound) => out.push((None, inbound)),
                Event::Deliver { waiter, inbound } => out.push((Some(waiter), inbound)),
                other => rest.push(other),
            }
        }
        self.events[node] = rest;
        out
    }

    /// Threads woken at `node` by completions, in order.
    fn woken(&mut self, node: usize) -> Vec<Thread> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for event in self.take_events(node) {
            match event {
                Event::Completed(Completed::Wake(thread)) => out.push(thread),
                other => rest.push(other),
            }
        }
        self.events[node] = rest;
        out
    }
}

fn chain(origin: usize, thread: u64) -> ChainId {
    ChainId {
        origin: PeerId(origin as u32),
        thread,
    }
}

fn token_of(inbound: &Inbound) -> i64 {
    match &inbound.request.op {
        Op::CallGlobal { args, .. } => match args.first() {
            Some(Value::Int(token)) => *token,
            other => panic!("no token in {other:?}"),
        },
        other => panic!("unexpected op {other:?}"),
    }
}

#[test]
fn the_handshake_makes_each_side_known_to_the_other() {
    let star = Star::new(2);
    assert_eq!(
        star.nodes[0].peers(),
        vec![(PeerId(1), "twin1".into()), (PeerId(2), "twin2".into())]
    );
    assert_eq!(star.nodes[1].peer_name(PeerId::MASTER), "master");
    assert_eq!(star.nodes[0].hello(PeerId(2)).map(|h| h.pid), Some(102));
    // A twin reaches every peer through the master; the master directly.
    assert!(matches!(star.nodes[1].route(PeerId(2)), Ok(PeerId::MASTER)));
    assert!(matches!(star.nodes[0].route(PeerId(2)), Ok(PeerId(2))));
    assert!(matches!(
        star.nodes[0].route(PeerId(9)),
        Err(CallError::UnknownPeer(PeerId(9)))
    ));
    assert_eq!(star.nodes[0].pickle_protocol(PeerId(1)), 5);
}

#[test]
fn a_call_gets_its_reply_and_leaves_nothing_behind() {
    let mut star = Star::new(1);
    let id = star.call(0, 1, chain(0, 1), 1, 42);
    star.settle();
    let requests = star.requests(1);
    assert_eq!(requests.len(), 1);
    let (thread, inbound) = &requests[0];
    assert_eq!(
        (*thread, inbound.src, token_of(inbound)),
        (None, PeerId::MASTER, 42)
    );
    star.reply(1, inbound, Value::Int(43));
    star.settle();
    assert_eq!(star.woken(0), vec![1]);
    let result = star.nodes[0].take(id).expect("the result is there");
    assert_eq!(result_value(&result), Ok(Value::Int(43)));
    star.nodes[0].leave_chain(chain(0, 1));
    assert_eq!(star.nodes[0].pending_len(), 0);
    assert!(star.nodes[0].chains.is_empty());
}

#[test]
fn a_nested_callback_goes_to_the_thread_waiting_on_its_chain_at_any_depth() {
    let mut star = Star::new(1);
    let c = chain(0, 1);
    // master thread 1 -> twin
    let outer = star.call(0, 1, c, 1, 1);
    star.settle();
    let (none, first) = star.requests(1).pop().expect("request");
    assert_eq!(
        none, None,
        "nobody waits on the chain in the twin yet: the pool runs it"
    );
    // the twin's thread 7 runs it and calls back into the master on the same chain
    let back = star.call(1, 7, first.request.chain, 0, 2);
    star.settle();
    let (waiter, second) = star.requests(0).pop().expect("callback");
    assert_eq!(
        waiter,
        Some(1),
        "the callback goes to the master thread waiting on the chain"
    );
    assert_eq!(second.request.chain, c);
    // ... which calls the twin again: the twin's waiting thread 7 gets it
    let inner = star.call(0, 1, c, 1, 3);
    star.settle();
    let (waiter, third) = star.requests(1).pop().expect("nested");
    assert_eq!(waiter, Some(7));
    // unwind: each reply wakes the right thread
    star.reply(1, &third, Value::Int(30));
    star.settle();
    assert_eq!(star.woken(0), vec![1]);
    assert_eq!(
        result_value(&star.nodes[0].take(inner).expect("inner")),
        Ok(Value::Int(30))
    );
    star.nodes[0].leave_chain(c);
    star.reply(0, &second, Value::Int(20));
    star.settle();
    assert_eq!(star.woken(1), vec![7]);
    assert_eq!(
        result_value(&star.nodes[1].take(back).expect("back")),
        Ok(Value::Int(20))
    );
    star.nodes[1].leave_chain(c);
    star.reply(1, &first, Value::Int(10));
    star.settle();
    assert_eq!(star.woken(0), vec![1]);
    assert_eq!(
        result_value(&star.nodes[0].take(outer).expect("outer")),
        Ok(Value::Int(10))
    );
    star.nodes[0].leave_chain(c);
    for node in &star.nodes {
        assert_eq!(node.pending_len(), 0);
        assert!(node.chains.is_empty());
    }
}

#[test]
fn twin_to_twin_frames_pass_the_master_unchanged() {
    let mut star = Star::new(2);
    let id = star.call(1, 5, chain(1, 5), 2, 77);
    let sent = star.links[&(1, 0)][0].clone();
    assert!(star.step(1, 0));
    assert!(star.requests(0).is_empty(), "the master runs nothing of it");
    assert_eq!(star.links[&(0, 2)][0], sent, "forwarded byte for byte");
    star.settle();
    let (_, inbound) = star.requests(2).pop().expect("request");
    assert_eq!((inbound.src, token_of(&inbound)), (PeerId(1), 77));
    star.reply(2, &inbound, Value::Int(78));
    star.settle();
    assert_eq!(star.woken(1), vec![5]);
    assert_eq!(
        result_value(&star.nodes[1].take(id).expect("reply")),
        Ok(Value::Int(78))
    );
}

/// A frame from `from` with envelope fields of its choosing.
fn raw(star: &mut Star, from: usize, src: u32, dst: u32, message: Message) {
    let envelope = Envelope {
        src: PeerId(src),
        dst: PeerId(dst),
        message,
    };
    let mut frame = Vec::new();
    encode_frame(&envelope, &mut frame).expect("encodes");
    star.write(from, 0, frame);
}

#[test]
fn a_twin_that_breaks_the_rules_is_closed_and_only_it() {
    let cases: Vec<(u32, u32, Message, Violation)> = vec![
        (
            2,
            3,
            Message::Shutdown,
            Violation::Impersonation {
                from: PeerId(1),
                claimed: PeerId(2),
            },
        ),
        (
            2,
            0,
            Message::Shutdown,
            Violation::Impersonation {
                from: PeerId(1),
                claimed: PeerId(2),
            },
        ),
        (
            1,
            3,
            Message::Shutdown,
            Violation::ForbiddenForward {
                from: PeerId(1),
                dst: PeerId(3),
                kind: "Shutdown",
            },
        ),
        (
            1,
            2,
            Message::PeerGone {
                peer: PeerId(3),
                reason: "lies".into(),
            },
            Violation::ForbiddenForward {
                from: PeerId(1),
                dst: PeerId(2),
                kind: "PeerGone",
            },
        ),
        (1, 0, Message::Shutdown, Violation::ShutdownToMaster),
        (
            1,
            0,
            Message::PeerGone {
                peer: PeerId(3),
                reason: "lies".into(),
            },
            Violation::PeerGoneFromTwin,
        ),
        (
            1,
            0,
            Message::Hello(hello(&local("twin1"), PeerId(1), 1)),
            Violation::HelloAfterHandshake,
        ),
    ];
    for (src, dst, message, expected) in cases {
        let mut star = Star::new(3);
        // twin 2 has a call in flight to the offender: it must fail, not hang
        let id = star.call(2, 9, chain(2, 9), 1, 5);
        assert!(star.step(2, 0));
        raw(&mut star, 1, src, dst, message);
        star.settle();
        assert_eq!(
            star.violations[0],
            vec![(PeerId(1), expected.clone())],
            "{expected}"
        );
        assert!(!star.nodes[0].is_connected(PeerId(1)));
        let (_, reason) = star.nodes[0].gone(PeerId(1)).expect("remembered").clone();
        assert!(reason.contains(&expected.to_string()), "{reason}");
        // the others carry on, and learn of the loss
        for twin in [2, 3] {
            assert!(star.nodes[0].is_connected(PeerId(twin)));
            assert!(star.violations[twin as usize].is_empty());
            assert!(star.take_events(twin as usize).iter().any(|e| matches!(
                e,
                Event::PeerLost {
                    peer: PeerId(1),
                    ..
                }
            )));
        }
        assert!(
            star.nodes[2].has_result(id),
            "twin 2's call to the offender failed"
        );
        let failed = result_value(&star.nodes[2].take(id).expect("failed"));
        assert!(
            failed.as_ref().is_err_and(|e| e.contains("protocol error")),
            "{failed:?}"
        );
    }
}

#[test]
fn a_lost_twin_fails_every_call_to_it_and_nothing_else() {
    let mut star = Star::new(3);
    let to_dead = star.call(0, 1, chain(0, 1), 1, 1);
    let to_live = star.call(0, 2, chain(0, 2), 3, 2);
    let via_master = star.call(2, 4, chain(2, 4), 1, 3);
    let to_master = star.call(2, 5, chain(2, 5), 0, 4);
    assert!(star.step(2, 0)); // the forwarded request reaches the master...
    star.kill(1); // ...and twin 1 dies with it queued for it
    star.settle();
    assert_eq!(star.woken(0), vec![1]);
    let lost = result_value(&star.nodes[0].take(to_dead).expect("failed"));
    assert_eq!(
        lost,
        Err(CallError::PeerLost {
            peer: PeerId(1),
            twin_id: "twin1".into(),
            reason: "killed by signal 9".into()
        }
        .to_string())
    );
    assert!(!star.nodes[0].has_result(to_live));
    // twin 2 learns through PeerGone: its call to twin 1 fails, its call to
    // the master still waits
    assert_eq!(star.woken(2), vec![4]);
    assert!(result_value(&star.nodes[2].take(via_master).expect("failed")).is_err());
    assert!(!star.nodes[2].has_result(to_master));
    // a request to the dead twin written before the news arrived is answered
    // by the master on its behalf
    let late = star.call(2, 6, chain(2, 6), 1, 5);
    star.settle();
    // (a typed failure on the wire, a PeerLost error here: no host's names)
    let answered = star.nodes[2].take(late).expect("answered");
    assert!(
        matches!(&answered, Err(CallError::PeerLost { peer: PeerId(1), twin_id, reason })
            if twin_id == "twin1" && reason == "killed by signal 9"),
        "{answered:?}"
    );
    // and from then on the route says how it ended
    assert!(matches!(
        star.nodes[0].route(PeerId(1)),
        Err(CallError::PeerLost { .. })
    ));
    assert_eq!(star.nodes[0].peer_name(PeerId(1)), "twin1");
}

#[test]
fn a_late_reply_after_a_timeout_is_dropped_and_cannot_complete_a_newer_call() {
    let mut star = Star::new(1);
    let old = star.call(0, 1, chain(0, 1), 1, 1);
    star.settle();
    let (_, first) = star.requests(1).pop().expect("request");
    star.nodes[0].abandon(old); // the caller timed out
    star.nodes[0].leave_chain(chain(0, 1));
    let new = star.call(0, 1, chain(0, 1), 1, 2);
    assert_eq!(new.index, old.index, "the slot is reused");
    star.reply(1, &first, Value::Int(100)); // the old reply arrives late
    star.settle();
    assert!(star.woken(0).is_empty(), "the late reply wakes nobody");
    assert!(!star.nodes[0].has_result(new));
    let (_, second) = star.requests(1).pop().expect("request");
    star.reply(1, &second, Value::Int(200));
    star.settle();
    assert_eq!(
        result_value(&star.nodes[0].take(new).expect("reply")),
        Ok(Value::Int(200))
    );
}

#[test]
fn a_twin_stops_when_told_or_when_the_master_goes() {
    let mut star = Star::new(1);
    let id = star.call(1, 3, chain(1, 3), 0, 1);
    let shutdown = Envelope {
        src: PeerId::MASTER,
        dst: PeerId(1),
        message: Message::Shutdown,
    };
    star.send(0, &shutdown);
    assert!(star.step(0, 1));
    let events = star.take_events(1);
    assert!(matches!(events.last(), Some(Event::Stop)));
    assert!(star.nodes[1].is_stopping());
    assert!(matches!(
        star.nodes[1].take(id),
        Some(Err(CallError::ShuttingDown))
    ));
    assert!(matches!(
        star.nodes[1].submit(PeerId::MASTER, chain(1, 3), Completion::Thread(3)),
        Err(CallError::ShuttingDown)
    ));

    let mut star = Star::new(1);
    let id = star.call(1, 3, chain(1, 3), 0, 1);
    assert!(star.nodes[1].handle_closed(PeerId::MASTER, "connection closed".into()));
    assert!(
        !star.nodes[1].handle_closed(PeerId::MASTER, "again".into()),
        "once only"
    );
    star.collect(1);
    let events = star.take_events(1);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PeerLost {
            peer: PeerId::MASTER,
            ..
        }
    )));
    assert!(matches!(events.last(), Some(Event::Stop)));
    assert!(matches!(
        star.nodes[1].take(id),
        Some(Err(CallError::PeerLost { .. }))
    ));
}

#[test]
fn releases_and_retains_reach_the_handler_with_their_sender() {
    let mut star = Star::new(2);
    let release = Release {
        objects: vec![(ObjectId(4), 2)],
    };
    let envelope = Envelope {
        src: PeerId(1),
        dst: PeerId(2),
        message: Message::Release(release.clone()),
    };
    star.send(1, &envelope);
    star.settle();
    let events = star.take_events(2);
    assert!(matches!(&events[..], [Event::Release(PeerId(1), r)] if *r == release));
}

#[test]
fn a_cancel_reaches_the_callee_through_the_master_and_the_call_stays_pending() {
    let mut star = Star::new(2);
    let id = star.call(1, 5, chain(1, 5), 2, 7);
    star.settle();
    let (_, inbound) = star.requests(2).pop().expect("request");
    let cancel = |dst: u32| Envelope {
        src: PeerId(1),
        dst: PeerId(dst),
        message: Message::Cancel { id },
    };
    star.send(1, &cancel(2));
    star.settle();
    let events = star.take_events(2);
    assert!(matches!(&events[..], [Event::Cancel(PeerId(1), c)] if *c == id));
    // Addressed to the master, it is the master's to act on.
    star.send(1, &cancel(0));
    star.settle();
    let events = star.take_events(0);
    assert!(matches!(&events[..], [Event::Cancel(PeerId(1), c)] if *c == id));
    // The caller still gets the callee's reply: the cancel completed nothing.
    assert!(!star.nodes[1].has_result(id));
    star.reply(2, &inbound, Value::Int(8));
    star.settle();
    assert_eq!(
        result_value(&star.nodes[1].take(id).expect("reply")),
        Ok(Value::Int(8))
    );
}

// ----- random interleavings ---------------------------------------------------------

/// One call of a random workload: `node` calls `dst`; the callee first makes
/// `nested` callbacks to the caller on the same chain, each answered at once.
#[derive(Clone, Debug)]
struct Plan {
    node: usize,
    dst: usize,
    nested: usize,
}

fn plans(peers: usize) -> impl Strategy<Value = Vec<Plan>> {
    prop::collection::vec(
        (0..peers, 1..peers, 0..3usize).prop_map(move |(node, offset, nested)| Plan {
            node,
            dst: (node + offset) % peers,
            nested,
        }),
        1..12,
    )
}

/// Runs the plans with frames delivered from random links: every call
/// completes once, with its own answer, unless `victim` died and it involved
/// the victim; then it fails with `PeerLost`. Nothing stays pending.
fn run_plans(
    plans: &[Plan],
    picks: &[usize],
    victim: Option<(usize, usize)>,
) -> Result<(), TestCaseError> {
    let peers = 4;
    let mut star = Star::new(peers - 1);
    // (node, id) -> (plan index, expected token)
    let mut calls: BTreeMap<(usize, u64), (usize, i64)> = BTreeMap::new();
    // callee work: (node, inbound, callbacks left to make)
    let mut outstanding: Vec<(usize, Inbound, usize)> = Vec::new();
    let mut done: Vec<Option<Result<Value, String>>> = vec![None; plans.len()];
    let key = |id: RequestId| ((id.generation as u64) << 32) | id.index as u64;
    for (i, plan) in plans.iter().enumerate() {
        let thread = i as Thread;
        let id = star.call(
            plan.node,
            thread,
            chain(plan.node, i as u64),
            plan.dst,
            i as i64,
        );
        calls.insert((plan.node, key(id)), (i, i as i64));
    }
    let mut picks = picks.iter().cycle();
    let mut steps = 0;
    loop {
        steps += 1;
        prop_assert!(steps < 10_000, "the workload does not settle");
        if let Some((at, twin)) = victim {
            if steps == at && !star.dead[twin] {
                star.kill(twin);
            }
        }
        // answer work whose callbacks are done (and make the next callback)
        let mut progressed = false;
        for node in 0..peers {
            for (_, inbound) in star.requests(node) {
                let token = token_of(&inbound);
                if token >= 1000 {
                    // a callback: answer at once
                    star.reply(node, &inbound, Value::Int(token));
                } else {
                    let plan = &plans[token as usize];
                    outstanding.push((node, inbound, plan.nested));
                }
                progressed = true;
            }
            for event in star.take_events(node) {
                if let Event::Completed(Completed::Wake(thread)) = event {
                    let plan_index = thread as usize % 1000;
                    let ids: Vec<_> = calls
                        .iter()
                        .filter(|((n, _), (p, _))| *n == node && *p == plan_index)
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    for ((n, k), (p, expect)) in ids {
                        let id = RequestId {
                            index: (k & 0xffff_ffff) as u32,
                            generation: (k >> 32) as u32,
                        };
                        if let Some(result) = star.nodes[n].take(id) {
                            calls.remove(&(n, k));
                            if expect < 1000 {
                                prop_assert!(done[p].is_none(), "call {p} completed twice");
                                done[p] = Some(result_value(&result));
                            }
                            star.nodes[n].leave_chain(chain(plans[p].node, p as u64));
                        }
                    }
                }
                progressed = true;
            }
        }
        // the callee of each outstanding call makes its callbacks one at a time
        let mut still = Vec::new();
        for (node, inbound, left) in std::mem::take(&mut outstanding) {
            let p = token_of(&inbound) as usize;
            let waiting = calls
                .iter()
                .any(|((n, _), (q, t))| *n == node && *q == p && *t >= 1000);
            if waiting || star.dead[node] {
                still.push((node, inbound, left));
            } else if left > 0 && !star.dead[inbound.src.0 as usize] {
                let token = 1000 * left as i64 + p as i64;
                let thread = 1000 + p as Thread;
                match star.nodes[node].submit(
                    inbound.src,
                    inbound.request.chain,
                    Completion::Thread(thread),
                ) {
                    Ok((_, id)) => {
                        let envelope = Envelope {
                            src: PeerId(node as u32),
                            dst: inbound.src,
                            message: Message::Request(Request {
                                id,
                                chain: inbound.request.chain,
                                op: op(token),
                                time_left_us: None,
                            }),
                        };
                        star.send(node, &envelope);
                        calls.insert((node, key(id)), (p, token));
                        still.push((node, inbound, left - 1));
                    }
                    Err(_) => still.push((node, inbound, 0)),
                }
                progressed = true;
            } else {
                star.reply(node, &inbound, Value::Int(p as i64 + 1));
                progressed = true;
            }
        }
        outstanding = still;
        let live: Vec<(usize, usize)> = star
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if live.is_empty() {
            if !progressed {
                break;
            }
            continue;
        }
        let pick = live[*picks.next().unwrap_or(&0) % live.len()];
        star.step(pick.0, pick.1);
    }
    for (p, plan) in plans.iter().enumerate() {
        let involved = victim.is_some_and(|(_, v)| plan.node == v || plan.dst == v);
        match (&done[p], involved) {
            (Some(Ok(value)), _) => prop_assert_eq!(value, &Value::Int(p as i64 + 1)),
            (Some(Err(error)), true) => prop_assert!(
                error.contains("terminated") || error.contains("Terminated"),
                "call {} failed with {}",
                p,
                error
            ),
            (None, true) if victim.is_some_and(|(_, v)| plan.node == v) => {}
            (other, _) => prop_assert!(false, "call {} ({:?}) ended as {:?}", p, plan, other),
        }
    }
    for (node, endpoint) in star.nodes.iter().enumerate() {
        if !star.dead[node] {
            prop_assert_eq!(endpoint.pending_len(), 0, "node {} keeps requests", node);
            prop_assert!(endpoint.chains.is_empty(), "node {} keeps chains", node);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_call_completes_once_under_any_interleaving(
        plans in plans(4),
        picks in prop::collection::vec(0..64usize, 1..64),
    ) {
        run_plans(&plans, &picks, None)?;
    }

    #[test]
    fn a_twin_dying_mid_flight_fails_only_the_calls_it_is_part_of(
        plans in plans(4),
        picks in prop::collection::vec(0..64usize, 1..64),
        at in 1..40usize,
        victim in 1..4usize,
    ) {
        run_plans(&plans, &picks, Some((at, victim)))?;
    }
}
