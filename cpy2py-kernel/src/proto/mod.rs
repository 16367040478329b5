//! The protocol core, without IO: what this process knows of its peers, the
//! requests it has in flight, the chains with a thread waiting here, and what
//! each frame from a peer means.
//!
//! No sockets, threads or clocks. The IO shell (the rest of the crate) feeds it
//! frames ([`Endpoint::handle_frame`]), ended peers ([`Endpoint::handle_closed`])
//! and its own calls ([`Endpoint::submit`]), and carries out what it asks: events
//! ([`Endpoint::poll_event`]: wake a thread, run a request, tell the handler) and
//! transmits ([`Endpoint::poll_transmit`]: frames to write). Generic over `W`, the
//! handle of a waiting thread, so that tests step endpoints against each other
//! in memory with plain numbers for threads.

mod handshake;
mod output;
mod pending;
#[cfg(test)]
mod tests;

#[cfg(feature = "proto")]
pub use handshake::HandshakeError;
pub use handshake::{check_hello, hello};
pub use output::{Event, Few, Outputs, Transmit, Violation};
pub use pending::Callback;
pub use pending::{Completed, Completion};

use crate::error::CallError;
use crate::{LocalInfo, Role};
use cpy2py_wire::{
    ChainId, Envelope, Failure, FrameDecoder, HEADER_LEN, Hello, Message, Outcome, PeerId, Reply,
    Request, RequestId, WireError, peek_route,
};
use pending::PendingTable;
use std::collections::{HashMap, VecDeque};

/// How many ended peers are remembered for error messages.
const GONE_REMEMBERED: usize = 1024;

/// A request addressed to this process, with the peer it came from.
#[derive(Debug)]
pub struct Inbound {
    /// The sending peer (where the reply goes).
    pub src: PeerId,
    /// The request.
    pub request: Request,
}

/// A frame taken from a peer's stream.
#[derive(Debug)]
pub enum Incoming {
    /// Addressed to this process.
    Local(Envelope),
    /// Addressed to another peer (master only): the whole frame, to forward
    /// undecoded.
    Forward {
        /// Claimed sender.
        src: PeerId,
        /// Destination.
        dst: PeerId,
        /// Header and body.
        frame: Vec<u8>,
    },
}

impl Incoming {
    /// The meaning of `frame`, one whole frame (header and body) read from a
    /// peer: with `forward` (the master), a frame for another peer than `me` is
    /// passed on undecoded, with only its route read; any other is decoded.
    /// `None` if `frame` is not a whole frame after all.
    pub fn read(
        frame: &[u8],
        decoder: &FrameDecoder,
        me: PeerId,
        forward: bool,
    ) -> Result<Option<Incoming>, WireError> {
        let (src, dst) = peek_route(frame.get(HEADER_LEN..).unwrap_or(&[]))?;
        if forward && dst != me {
            return Ok(Some(Incoming::Forward {
                src,
                dst,
                frame: frame.to_vec(),
            }));
        }
        Ok(decoder
            .decode(frame)?
            .map(|(envelope, _)| Incoming::Local(envelope)))
    }
}

/// The protocol state of one process.
pub struct Endpoint<W> {
    me: PeerId,
    role: Role,
    local: LocalInfo,
    master_name: String,
    decoder: FrameDecoder,
    /// Connected peers and their handshakes.
    peers: HashMap<PeerId, Hello>,
    /// How peers that are gone ended: `(twin id, reason)`.
    gone: HashMap<PeerId, (String, String)>,
    pending: PendingTable<W>,
    /// Chains with a thread waiting here: the thread and how many of its calls
    /// wait.
    chains: HashMap<ChainId, (W, usize)>,
    stopping: bool,
    events: VecDeque<Event<W>>,
    transmits: VecDeque<Transmit>,
}

impl<W: Clone> Endpoint<W> {
    /// The state of process `me` in `role`; `master_name` is the master's id
    /// (this process's own in the master).
    pub fn new(
        me: PeerId,
        role: Role,
        local: LocalInfo,
        master_name: String,
        max_frame: usize,
    ) -> Self {
        Endpoint {
            me,
            role,
            local,
            master_name,
            decoder: FrameDecoder::new(max_frame),
            peers: HashMap::new(),
            gone: HashMap::new(),
            pending: PendingTable::default(),
            chains: HashMap::new(),
            stopping: false,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    // ----- peers -------------------------------------------------------------------

    /// A peer completed the handshake.
    pub fn add_peer(&mut self, id: PeerId, hello: Hello) {
        self.gone.remove(&id);
        self.peers.insert(id, hello);
    }

    /// The handshake of connected peer `id`.
    pub fn hello(&self, id: PeerId) -> Option<&Hello> {
        self.peers.get(&id)
    }

    /// Whether peer `id` is connected. (The shell asks its sockets instead,
    /// without taking the core's lock.)
    #[cfg(test)]
    pub fn is_connected(&self, id: PeerId) -> bool {
        self.peers.contains_key(&id)
    }

    /// Connected peers with their twin ids, in id order.
    pub fn peers(&self) -> Vec<(PeerId, String)> {
        let mut out: Vec<_> = self
            .peers
            .iter()
            .map(|(id, hello)| (*id, hello.twin_id.clone()))
            .collect();
        out.sort();
        out
    }

    /// How peer `id` ended, if it is gone.
    pub fn gone(&self, id: PeerId) -> Option<&(String, String)> {
        self.gone.get(&id)
    }

    /// The twin id of `id` for messages: its handshake name, the master's name,
    /// or how it is remembered after it ended.
    pub fn peer_name(&self, id: PeerId) -> String {
        if let Some(hello) = self.peers.get(&id) {
            return hello.twin_id.clone();
        }
        if id == PeerId::MASTER {
            return self.master_name.clone();
        }
        self.gone
            .get(&id)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// The peer a frame for `dst` is written to: `dst` itself in the master, the
    /// master in a twin; an error when that peer is not connected.
    pub fn route(&self, dst: PeerId) -> Result<PeerId, CallError> {
        let hop = hop(self.role, dst);
        if self.peers.contains_key(&hop) {
            return Ok(hop);
        }
        Err(self.unreachable(hop, dst))
    }

    fn unreachable(&self, hop: PeerId, dst: PeerId) -> CallError {
        match self.gone.get(&hop) {
            Some((twin_id, reason)) => CallError::PeerLost {
                peer: hop,
                twin_id: twin_id.clone(),
                reason: reason.clone(),
            },
            None => CallError::UnknownPeer(dst),
        }
    }

    /// Highest pickle protocol both this process and `peer` (or the hop to it)
    /// read.
    pub fn pickle_protocol(&self, peer: PeerId) -> u8 {
        let theirs = self
            .route(peer)
            .ok()
            .and_then(|hop| self.peers.get(&hop))
            .map_or(0, |hello| hello.pickle_protocol);
        theirs.min(self.local.pickle_protocol)
    }

    // ----- calls -------------------------------------------------------------------

    /// Registers a request to `dst` on `chain`: returns the peer to write it to
    /// and the request to write. With `Completion::Thread(w)`, thread `w` waits
    /// on `chain` until [`Endpoint::finish`]: requests of that chain are handed
    /// to it.
    pub fn submit(
        &mut self,
        dst: PeerId,
        chain: ChainId,
        completion: Completion<W>,
    ) -> Result<(PeerId, RequestId), CallError> {
        if self.stopping {
            return Err(CallError::ShuttingDown);
        }
        let hop = self.route(dst)?;
        if let Completion::Thread(waiter) = &completion {
            self.chains
                .entry(chain)
                .or_insert_with(|| (waiter.clone(), 0))
                .1 += 1;
        }
        let id = self.pending.insert(dst, completion);
        Ok((hop, id))
    }

    /// Completes request `id` (its reply, or a failure the shell saw).
    pub fn complete(&mut self, id: RequestId, result: Result<Outcome, CallError>) -> Completed<W> {
        self.pending.complete(id, result)
    }

    /// Takes the result of request `id` if it is there.
    pub fn take(&mut self, id: RequestId) -> Option<Result<Outcome, CallError>> {
        self.pending.take(id)
    }

    /// Whether the result of request `id` is there.
    pub fn has_result(&self, id: RequestId) -> bool {
        self.pending.has_result(id)
    }

    /// Forgets request `id`: a reply arriving later is discarded.
    pub fn abandon(&mut self, id: RequestId) {
        self.pending.abandon(id);
    }

    /// Requests in flight or with an untaken result.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// A thread stopped waiting on `chain` for one of its calls.
    pub fn leave_chain(&mut self, chain: ChainId) {
        if let Some(entry) = self.chains.get_mut(&chain) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.chains.remove(&chain);
            }
        }
    }

    /// The threads waiting on chains here (woken when stopping).
    pub fn chain_waiters(&self) -> Vec<W> {
        self.chains.values().map(|(w, _)| w.clone()).collect()
    }

    // ----- input -------------------------------------------------------------------

    /// Handles one frame read from `from`. An error means `from` broke the
    /// protocol: close it ([`Endpoint::handle_closed`]).
    pub fn handle_frame(&mut self, from: PeerId, incoming: Incoming) -> Result<(), Violation> {
        let envelope = match incoming {
            Incoming::Forward { src, dst, frame } => {
                return self.handle_forward(from, src, dst, frame);
            }
            Incoming::Local(envelope) => envelope,
        };
        if self.role == Role::Master && envelope.src != from {
            return Err(Violation::Impersonation {
                from,
                claimed: envelope.src,
            });
        }
        match envelope.message {
            Message::Reply(reply) => {
                let result = match reply.outcome {
                    Outcome::Failed(failure) => Err(CallError::from(failure)),
                    outcome => Ok(outcome),
                };
                let done = self.pending.complete(reply.id, result);
                self.completed(done);
            }
            Message::Request(request) => {
                let inbound = Inbound {
                    src: envelope.src,
                    request,
                };
                let event = match self.chains.get(&inbound.request.chain) {
                    Some((waiter, _)) => Event::Deliver {
                        waiter: waiter.clone(),
                        inbound,
                    },
                    None => Event::Run(inbound),
                };
                self.events.push_back(event);
            }
            Message::Release(release) => {
                self.events.push_back(Event::Release(envelope.src, release))
            }
            Message::Retain(retain) => self.events.push_back(Event::Retain(envelope.src, retain)),
            Message::Cancel { id } => self.events.push_back(Event::Cancel(envelope.src, id)),
            Message::Shutdown => match self.role {
                Role::Twin => self.begin_stop(),
                Role::Master => return Err(Violation::ShutdownToMaster),
            },
            Message::PeerGone { peer, reason } => {
                if self.role == Role::Master {
                    return Err(Violation::PeerGoneFromTwin);
                }
                let lost = || CallError::PeerLost {
                    peer,
                    twin_id: format!("{peer}"),
                    reason: reason.clone(),
                };
                for done in self.pending.fail_peer(peer, lost) {
                    self.completed(done);
                }
                self.events.push_back(Event::PeerLost { peer, reason });
            }
            Message::Hello(_) => return Err(Violation::HelloAfterHandshake),
            message @ (Message::ArenaOffer { .. }
            | Message::ArenaAnswer { .. }
            | Message::ArenaFree { .. }) => {
                if envelope.src != from {
                    return Err(Violation::ArenaNotDirect {
                        from,
                        src: envelope.src,
                    });
                }
                self.events.push_back(Event::Arena(from, message));
            }
        }
        Ok(())
    }

    /// Master: a frame from `from` for `dst`, checked before it goes on: a twin
    /// must not be able to end another with a malformed frame or a control
    /// message.
    fn handle_forward(
        &mut self,
        from: PeerId,
        src: PeerId,
        dst: PeerId,
        frame: Vec<u8>,
    ) -> Result<(), Violation> {
        if src != from {
            return Err(Violation::Impersonation { from, claimed: src });
        }
        match self.decoder.decode(&frame) {
            Ok(Some((envelope, _))) => match envelope.message {
                Message::Request(_)
                | Message::Reply(_)
                | Message::Release(_)
                | Message::Retain(_)
                | Message::Cancel { .. } => {}
                other => {
                    return Err(Violation::ForbiddenForward {
                        from,
                        dst,
                        kind: message_kind(&other),
                    });
                }
            },
            Ok(None) => return Err(Violation::TruncatedForward),
            Err(e) => return Err(Violation::MalformedForward(e.to_string())),
        }
        if self.peers.contains_key(&dst) {
            self.transmits.push_back(Transmit::Forward {
                to: dst,
                from,
                frame,
            });
        } else {
            let failure = self.unreachable(dst, dst);
            self.answer_for(from, dst, &frame, &failure);
        }
        Ok(())
    }

    /// A forwarded frame from `from` could not be written to `dst`.
    pub fn forward_failed(&mut self, from: PeerId, dst: PeerId, frame: &[u8], failure: &CallError) {
        self.answer_for(from, dst, frame, failure);
    }

    /// If `frame` is a request from `from` to `dst`, answers it on `dst`'s
    /// behalf with `failure`.
    fn answer_for(&mut self, from: PeerId, dst: PeerId, frame: &[u8], failure: &CallError) {
        let Ok(Some((envelope, _))) = self.decoder.decode(frame) else {
            return;
        };
        if let Message::Request(request) = envelope.message {
            let outcome = Outcome::Failed(failure.to_failure());
            let envelope = Envelope {
                src: dst,
                dst: from,
                message: Message::Reply(Reply {
                    id: request.id,
                    outcome,
                }),
            };
            self.transmits.push_back(Transmit::Message {
                to: from,
                envelope: Box::new(envelope),
            });
        }
    }

    /// Peer `peer` is gone (`reason` says how): fails every call pending on it
    /// (in a twin, whose every call goes through the master: every call), and
    /// in the master tells the other twins. Returns false if it was not
    /// connected (already handled).
    pub fn handle_closed(&mut self, peer: PeerId, reason: String) -> bool {
        let Some(hello) = self.peers.remove(&peer) else {
            return false;
        };
        self.gone
            .insert(peer, (hello.twin_id.clone(), reason.clone()));
        // Peer ids only grow: forget the oldest beyond a bound, so that a
        // long-lived master restarting twins does not grow without end.
        while self.gone.len() > GONE_REMEMBERED {
            let Some(oldest) = self.gone.keys().min().copied() else {
                break;
            };
            self.gone.remove(&oldest);
        }
        let lost = || CallError::PeerLost {
            peer,
            twin_id: hello.twin_id.clone(),
            reason: reason.clone(),
        };
        let done = match self.role {
            Role::Twin => self.pending.fail_all(lost),
            Role::Master => self.pending.fail_peer(peer, lost),
        };
        for d in done {
            self.completed(d);
        }
        if self.role == Role::Master {
            let mut others: Vec<PeerId> = self.peers.keys().copied().collect();
            others.sort();
            for other in others {
                let envelope = Envelope {
                    src: self.me,
                    dst: other,
                    message: Message::PeerGone {
                        peer,
                        reason: reason.clone(),
                    },
                };
                self.transmits.push_back(Transmit::Message {
                    to: other,
                    envelope: Box::new(envelope),
                });
            }
        }
        self.events.push_back(Event::PeerLost { peer, reason });
        if self.role == Role::Twin {
            self.begin_stop();
        }
        true
    }

    /// Starts stopping: every pending call fails with
    /// [`CallError::ShuttingDown`], and [`Event::Stop`] asks the shell to wake
    /// its threads. Does nothing the second time.
    pub fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for done in self.pending.fail_all(|| CallError::ShuttingDown) {
            self.completed(done);
        }
        self.events.push_back(Event::Stop);
    }

    /// Whether stopping has begun. (The shell keeps a flag of its own that
    /// its loops read without taking the core's lock.)
    #[cfg(test)]
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    fn completed(&mut self, done: Completed<W>) {
        if !matches!(done, Completed::Stale) {
            self.events.push_back(Event::Completed(done));
        }
    }

    // ----- output ------------------------------------------------------------------

    /// The next thing to do, oldest first.
    pub fn poll_event(&mut self) -> Option<Event<W>> {
        self.events.pop_front()
    }

    /// The next frame to write, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Everything queued, for the thread that caused it to carry out in order
    /// once it has let go of the endpoint. Allocates nothing for the common
    /// input that asks for at most one event and one transmit.
    pub fn take_outputs(&mut self) -> Outputs<W> {
        let first_event = self.poll_event();
        let first_transmit = self.poll_transmit();
        Outputs {
            events: Few::new(first_event, &mut self.events),
            transmits: Few::new(first_transmit, &mut self.transmits),
        }
    }
}

/// The peer a process in `role` writes a frame for `dst` to: `dst` itself in
/// the master, the master in a twin (the star's one rule of routing).
pub fn hop(role: Role, dst: PeerId) -> PeerId {
    match role {
        Role::Twin => PeerId::MASTER,
        Role::Master => dst,
    }
}

/// The reply to send when an outcome could not be encoded (`reason`).
pub fn unsendable_reply(reason: &str) -> Outcome {
    Outcome::Failed(Failure::Unsendable {
        reason: reason.to_owned(),
    })
}

/// The name of a message's kind, for errors.
pub fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Hello(_) => "Hello",
        Message::Request(_) => "Request",
        Message::Reply(_) => "Reply",
        Message::Release(_) => "Release",
        Message::Shutdown => "Shutdown",
        Message::PeerGone { .. } => "PeerGone",
        Message::Retain(_) => "Retain",
        Message::Cancel { .. } => "Cancel",
        Message::ArenaOffer { .. } => "ArenaOffer",
        Message::ArenaAnswer { .. } => "ArenaAnswer",
        Message::ArenaFree { .. } => "ArenaFree",
    }
}
