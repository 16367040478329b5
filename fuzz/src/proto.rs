//! The protocol core's harness (`kernel_peer`): [`cpy2py_kernel::proto`] given a
//! fuzzed twin, in memory.
//!
//! A star without sockets, threads or clocks: the master's [`Endpoint`], a
//! well-behaved twin (the *other*, [`OTHER`]) and the fuzzed twin ([`SELF`]), whose
//! stream is the input, the same input `kernel_shell` plays against real sockets:
//! its first frame is its handshake, the rest its frames, then end of stream.
//! Before the fuzzed twin speaks, the master has a call to it in flight from a
//! waiting thread and one with a callback, and the other twin has one, so that its
//! replies can complete them and its requests can nest into their chains.
//!
//! The harness checks invariants, not bytes:
//!
//! 1. The master reads the stream as the shell does ([`Incoming::read`]); a frame
//!    that does not decode or breaks the protocol closes the fuzzed twin and
//!    nothing else.
//! 2. Whatever the master passes to the other twin decodes there and breaks no rule
//!    there, and the other twin is never told to stop: a twin cannot end another.
//! 3. The master writes only to connected peers, and never stops.
//! 4. Every call completes exactly once, by its reply or failed once the fuzzed twin
//!    is gone; nothing stays in the pending tables.
//! 5. Afterwards the master and the other twin still call each other.
//!
//! A broken invariant panics: a crash for libFuzzer, a failure for the tests.

use crate::seeds::{Fate, OTHER, SELF, TWIN_ID};
use cpy2py_kernel::proto::{
    Completed, Completion, Endpoint, Event, Incoming, Transmit, check_hello, hello,
};
use cpy2py_kernel::{CallError, LocalInfo, Role};
use cpy2py_wire::{
    ChainId, Envelope, FrameDecoder, Message, Op, Outcome, PeerId, Reply, Request, RequestId,
    Value, encode_frame,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest frame body either side accepts: small, so that a fuzzed header cannot
/// make a run allocate the default 256 MiB.
const MAX_FRAME: usize = 1 << 20;

/// A thread, as the core sees it: a number.
type Thread = u32;

/// The master's thread with a call to the fuzzed twin.
const MASTER_THREAD: Thread = 1;
/// The other twin's thread with a call to the fuzzed twin.
const OTHER_THREAD: Thread = 7;
/// Threads of the calls made after the fuzzed twin is gone.
const LATE_MASTER_THREAD: Thread = 2;
const LATE_OTHER_THREAD: Thread = 8;

fn chain(origin: PeerId, thread: Thread) -> ChainId {
    ChainId {
        origin,
        thread: u64::from(thread),
    }
}

fn local(name: &str) -> LocalInfo {
    LocalInfo {
        name: name.into(),
        interpreter: "rust".into(),
        version: "fuzz".into(),
        pickle_protocol: 5,
    }
}

fn call(token: i64) -> Op {
    Op::CallGlobal {
        module: "m".into(),
        qualname: "f".into(),
        args: vec![Value::Int(token)],
        kwargs: vec![],
    }
}

fn frame(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(envelope, &mut out).expect("the harness's own envelopes encode");
    out
}

/// Which endpoint: the master or the other twin (the fuzzed twin has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Master,
    Other,
}

/// The star and what the harness saw it do.
struct Star {
    master: Endpoint<Thread>,
    other: Endpoint<Thread>,
    decoder: FrameDecoder,
    /// Frames in flight to an endpoint, from a peer.
    queue: VecDeque<(Node, PeerId, Vec<u8>)>,
    /// Wake-ups per thread, master and other twin (a thread waits for one call).
    wakes: Vec<(Node, Thread)>,
    /// Results delivered to the master's callback.
    callbacks: Arc<AtomicUsize>,
    /// The master closed the fuzzed twin for a broken rule (or a corrupt stream).
    closed: Option<String>,
}

impl Star {
    fn new() -> Star {
        let mut master = Endpoint::new(
            PeerId::MASTER,
            Role::Master,
            local("master"),
            "master".into(),
            MAX_FRAME,
        );
        let mut other = Endpoint::new(
            OTHER,
            Role::Twin,
            local("other"),
            "master".into(),
            MAX_FRAME,
        );
        master.add_peer(OTHER, hello(&local("other"), OTHER, 2));
        other.add_peer(PeerId::MASTER, hello(&local("master"), PeerId::MASTER, 1));
        Star {
            master,
            other,
            decoder: FrameDecoder::new(MAX_FRAME),
            queue: VecDeque::new(),
            wakes: Vec::new(),
            callbacks: Arc::new(AtomicUsize::new(0)),
            closed: None,
        }
    }

    fn endpoint(&mut self, node: Node) -> &mut Endpoint<Thread> {
        match node {
            Node::Master => &mut self.master,
            Node::Other => &mut self.other,
        }
    }

    fn id_of(node: Node) -> PeerId {
        match node {
            Node::Master => PeerId::MASTER,
            Node::Other => OTHER,
        }
    }

    /// Thread `thread` of `node` calls `dst`: the request goes on the wire.
    fn submit(&mut self, node: Node, thread: Thread, dst: PeerId, token: i64) -> RequestId {
        let me = Star::id_of(node);
        let chain = chain(me, thread);
        let (hop, id) = self
            .endpoint(node)
            .submit(dst, chain, Completion::Thread(thread))
            .expect("a connected peer is routable");
        let request = Envelope {
            src: me,
            dst,
            message: Message::Request(Request {
                id,
                chain,
                op: call(token),
                time_left_us: None,
            }),
        };
        self.write(node, hop, frame(&request));
        id
    }

    /// `node` writes `frame` to peer `to` (invariant 3: only to connected peers).
    fn write(&mut self, node: Node, to: PeerId, frame: Vec<u8>) {
        match (node, to) {
            (Node::Master, OTHER) => self.queue.push_back((Node::Other, PeerId::MASTER, frame)),
            (Node::Master, SELF) => assert!(
                self.master.hello(SELF).is_some(),
                "the master wrote to the fuzzed twin after closing it"
            ),
            (Node::Other, PeerId::MASTER) => self.queue.push_back((Node::Master, OTHER, frame)),
            _ => panic!("{node:?} wrote to peer {to}, which it has no connection to"),
        }
    }

    /// The master reads one whole frame from the fuzzed twin.
    fn read_fuzzed(&mut self, frame: &[u8]) {
        let result = match Incoming::read(frame, &self.decoder, PeerId::MASTER, true) {
            Ok(Some(incoming)) => self
                .master
                .handle_frame(SELF, incoming)
                .map_err(|v| v.to_string()),
            Ok(None) => Err("a whole frame did not decode as one".into()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = result {
            self.close_fuzzed(format!("protocol error: {why}"), true);
        }
        self.carry_out(Node::Master);
        self.settle();
    }

    /// The master closes the fuzzed twin: it `broke_rule`, or its stream ended.
    fn close_fuzzed(&mut self, reason: String, broke_rule: bool) {
        if self.master.handle_closed(SELF, reason.clone()) && broke_rule {
            self.closed = Some(reason);
        }
        self.carry_out(Node::Master);
    }

    /// Delivers frames in flight until there are none.
    fn settle(&mut self) {
        while let Some((node, from, frame)) = self.queue.pop_front() {
            let me = Star::id_of(node);
            let incoming = Incoming::read(&frame, &self.decoder, me, node == Node::Master)
                .unwrap_or_else(|e| panic!("{node:?} cannot read a frame from peer {from}: {e}"))
                .unwrap_or_else(|| panic!("{node:?}: a frame from peer {from} is not whole"));
            if let Err(violation) = self.endpoint(node).handle_frame(from, incoming) {
                panic!("{node:?} closes peer {from}, which follows the rules: {violation}");
            }
            self.carry_out(node);
        }
    }

    /// Carries out what `node` asked for, as the shell would.
    fn carry_out(&mut self, node: Node) {
        let me = Star::id_of(node);
        let outputs = self.endpoint(node).take_outputs();
        for event in outputs.events {
            match event {
                Event::Deliver { waiter, inbound } => {
                    let expected = match node {
                        Node::Master => [MASTER_THREAD, LATE_MASTER_THREAD],
                        Node::Other => [OTHER_THREAD, LATE_OTHER_THREAD],
                    };
                    assert!(
                        expected.contains(&waiter),
                        "{node:?} handed a request to thread {waiter}, which waits for nothing"
                    );
                    assert_eq!(
                        inbound.request.chain,
                        chain(me, waiter),
                        "{node:?} handed a request to a thread of another chain"
                    );
                    self.answer(node, inbound.src, inbound.request.id);
                }
                Event::Run(inbound) => self.answer(node, inbound.src, inbound.request.id),
                Event::Completed(Completed::Wake(thread)) => self.wakes.push((node, thread)),
                Event::Completed(Completed::Deliver(callback, result)) => callback(result),
                Event::Completed(Completed::Stale) => {}
                Event::Release(..) | Event::Retain(..) | Event::Cancel(..) | Event::Arena(..) => {}
                Event::PeerLost { peer, .. } => {
                    assert_eq!(peer, SELF, "{node:?} lost peer {peer}, which never left")
                }
                Event::Stop => panic!("{node:?} was told to stop"),
            }
        }
        for transmit in outputs.transmits {
            match transmit {
                Transmit::Forward { to, frame, .. } => self.write(node, to, frame),
                Transmit::Message { to, envelope } => {
                    let bytes = frame(&envelope);
                    self.write(node, to, bytes)
                }
            }
        }
    }

    /// `node` answers request `id` of `src`, as its handler would.
    fn answer(&mut self, node: Node, src: PeerId, id: RequestId) {
        let me = Star::id_of(node);
        let reply = Envelope {
            src: me,
            dst: src,
            message: Message::Reply(Reply {
                id,
                outcome: Outcome::Ok(Value::None),
            }),
        };
        let hop = match node {
            Node::Master => src,
            Node::Other => PeerId::MASTER,
        };
        if node == Node::Master && src != OTHER && self.master.hello(src).is_none() {
            return; // the shell's write to a closed peer fails; the request is moot
        }
        self.write(node, hop, frame(&reply));
    }

    /// How many times `node`'s `thread` was woken.
    fn woken(&self, node: Node, thread: Thread) -> usize {
        self.wakes.iter().filter(|w| **w == (node, thread)).count()
    }
}

/// `kernel_peer`: the master's protocol core given `data` as a twin's stream.
pub fn peer(data: &[u8]) -> Fate {
    let mut star = Star::new();
    let decoder = star.decoder;

    // The handshake, as the shell does it: one whole frame, a Hello for us.
    let hello_len = match decoder.check_header(data) {
        Ok(Some(total)) if total <= data.len() => total,
        _ => return Fate::Refused,
    };
    let accepted = match Incoming::read(&data[..hello_len], &decoder, PeerId::MASTER, true) {
        Ok(Some(Incoming::Local(envelope))) => {
            check_hello(envelope, Some(SELF), Some(TWIN_ID)).ok()
        }
        _ => None,
    };
    let Some(theirs) = accepted else {
        return Fate::Refused;
    };
    star.master.add_peer(SELF, theirs);

    // Calls to the fuzzed twin in flight: a waiting thread's and a callback's in
    // the master, a waiting thread's in the other twin.
    let from_master = star.submit(Node::Master, MASTER_THREAD, SELF, 1);
    let delivered = Arc::clone(&star.callbacks);
    let (_, with_callback) = star
        .master
        .submit(
            SELF,
            chain(PeerId::MASTER, 99),
            Completion::Callback(Box::new(move |_| {
                delivered.fetch_add(1, Ordering::SeqCst);
            })),
        )
        .expect("the fuzzed twin is routable");
    let from_other = star.submit(Node::Other, OTHER_THREAD, SELF, 2);
    star.settle();
    assert_ne!(from_master, with_callback);

    // The stream, frame by frame, until it breaks a rule or ends.
    let mut rest = &data[hello_len..];
    while star.master.hello(SELF).is_some() {
        let total = match decoder.check_header(rest) {
            Ok(Some(total)) if total <= rest.len() => total,
            Ok(_) => break, // ends inside a frame
            Err(e) => {
                star.close_fuzzed(format!("protocol error: {e}"), true);
                break;
            }
        };
        let (whole, tail) = rest.split_at(total);
        star.read_fuzzed(whole);
        rest = tail;
    }
    let fate = if star.closed.is_some() {
        Fate::Closed
    } else {
        Fate::Working
    };
    star.close_fuzzed("end of stream".into(), false);
    star.settle();

    // Invariant 4: every call completed once, and nothing is left pending.
    assert_eq!(
        star.woken(Node::Master, MASTER_THREAD),
        1,
        "the master's call"
    );
    assert_eq!(
        star.callbacks.load(Ordering::SeqCst),
        1,
        "the master's callback"
    );
    assert_eq!(
        star.woken(Node::Other, OTHER_THREAD),
        1,
        "the other twin's call"
    );
    for (node, id) in [(Node::Master, from_master), (Node::Other, from_other)] {
        let endpoint = star.endpoint(node);
        match endpoint.take(id) {
            // its reply (a failure in it is the fuzzed twin's to claim), or its loss
            Some(Ok(_))
            | Some(Err(
                CallError::PeerLost { .. }
                | CallError::UnknownPeer(_)
                | CallError::Unsendable(_)
                | CallError::Panicked(_),
            )) => {}
            Some(Err(other)) => panic!("{node:?}'s call to the fuzzed twin failed with {other}"),
            None => panic!("{node:?}'s call to the fuzzed twin has no result"),
        }
        assert_eq!(endpoint.pending_len(), 0, "{node:?} has calls left pending");
    }

    // Invariant 5: the master and the other twin still call each other.
    let to_other = star.submit(Node::Master, LATE_MASTER_THREAD, OTHER, 3);
    let to_master = star.submit(Node::Other, LATE_OTHER_THREAD, PeerId::MASTER, 4);
    star.settle();
    assert_eq!(star.master.take(to_other).map(|r| r.is_ok()), Some(true));
    assert_eq!(star.other.take(to_master).map(|r| r.is_ok()), Some(true));
    fate
}

#[cfg(test)]
mod tests {
    use super::peer;
    use crate::seeds::{self, Fate};

    /// Every committed seed runs through the core, with the fate its name says.
    #[test]
    fn seeds_meet_their_fates() {
        for (target, name, bytes) in seeds::all() {
            if target == "kernel_peer" {
                assert_eq!(peer(&bytes), seeds::fate_of(&name), "seed {name}");
            }
        }
    }

    /// Truncations and byte soup: no broken invariant.
    #[test]
    fn garbage_and_truncations() {
        for (_, _, bytes) in seeds::all() {
            for cut in 0..bytes.len().min(64) {
                peer(&bytes[..cut]);
            }
            peer(&bytes[..bytes.len() / 2]);
        }
        assert_eq!(peer(&[0xff; 64]), Fate::Refused);
        assert_eq!(peer(&u32::MAX.to_le_bytes()), Fate::Refused);
    }
}
