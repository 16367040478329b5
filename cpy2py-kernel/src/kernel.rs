//! The kernel's handle and its shared state: the protocol core behind a lock,
//! the peers' sockets, the poll, and sending frames. The rest of the IO shell
//! is in files named for what they do: `reader.rs` (who reads a socket),
//! `pool.rs` (the leader/follower pool around the poll), `serve.rs` (a twin's
//! serving thread), `call.rs` (a calling thread's wait), `effects.rs` (carrying
//! out the core's events and transmits), `spawn.rs` and `connect.rs` (starting a
//! twin, and a twin connecting), `transport.rs` (what carries the bytes),
//! `lifecycle.rs` (closing peers, stopping twins, shutdown).

use crate::error::{CallError, KernelError};
use crate::handler::Handler;
use crate::peer::{Peer, lock};
use crate::pool::Pool;
use crate::proto::{self, Callback, Completion, Endpoint};
use crate::serve::{SERVE_TIMER, ServeState};
use crate::waiter::{self, Waiter};
use cpy2py_wire::{
    Envelope, FrameDecoder, Message, Op, Outcome, PeerId, Release, Reply, Request, RequestId,
    Retain, Splice, encode_frame_vectored,
};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

pub(crate) const WAKER: Token = Token(usize::MAX);
/// The poll token of the timer for unattended sockets (see `pass_reader_role`).
pub(crate) const UNATTENDED_TIMER: Token = Token(usize::MAX - 2);
/// The poll token of the timer for queued requests no thread takes (see
/// `Pool::stalled`).
pub(crate) const STALL_TIMER: Token = Token(usize::MAX - 3);

/// Frames up to this size fit in a socket buffer: writing one never blocks
/// for long, so a thread may write it while holding a reader role.
pub(crate) const SMALL_FRAME: usize = 64 * 1024;

/// Tunables of a kernel.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Largest frame body sent or accepted, in bytes.
    pub max_frame: usize,
    /// How long a twin may take from its start to the end of the handshake.
    pub handshake_timeout: Duration,
    /// Idle pool threads kept for later requests; more exit.
    pub max_idle_workers: usize,
    /// Pool threads started at once for requests that queue up. Beyond this
    /// many, one more starts only while queued requests wait with none taken
    /// for [`KernelConfig::stall`] (every thread blocked): a burst of
    /// thousands of requests does not start a thread each, and requests that
    /// block one another still all run.
    pub eager_workers: usize,
    /// How long queued requests wait with none taken before another pool
    /// thread starts (see [`KernelConfig::eager_workers`]).
    pub stall: Duration,
    /// Most pool threads; beyond them requests queue until a thread is free.
    /// Callbacks on a chain whose thread waits here run on that thread and
    /// need none, so call chains of any depth go on; but more than this many
    /// requests that each wait for a later one to run here wait until one of
    /// them gives up.
    pub max_workers: usize,
    /// Twin only: once stopping (shutdown requested or master gone), end the
    /// whole process if it has not exited by itself after this long. `None`
    /// (the default) leaves exiting to the host.
    pub exit_after_stop: Option<Duration>,
    /// Bytes of shared memory (address space; pages only as used) this process
    /// offers each directly connected peer for large out-of-band buffers
    /// (see [`Kernel::arena_chunk`]); 0 sends every buffer through the socket.
    pub arena_size: u64,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            max_frame: cpy2py_wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(30),
            max_idle_workers: 4,
            eager_workers: 8,
            stall: Duration::from_millis(2),
            max_workers: 64,
            exit_after_stop: None,
            arena_size: 512 << 20,
        }
    }
}

/// What this process tells peers about itself in the handshake.
#[derive(Clone, Debug)]
pub struct LocalInfo {
    /// This process's twin id (the master's own name in the master).
    pub name: String,
    /// Interpreter implementation, e.g. `"CPython"`, `"PyPy"` or `"rust"`.
    pub interpreter: String,
    /// Interpreter version.
    pub version: String,
    /// Highest pickle protocol this process reads (0: none).
    pub pickle_protocol: u8,
}

/// The role of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The root of the star, which starts twins.
    Master,
    /// A child started by a master.
    Twin,
}

/// A connected peer's handshake, as [`Kernel::peer_info`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its twin id.
    pub twin_id: String,
    /// Its interpreter implementation (`"CPython"`, `"PyPy"`, `"rust"`).
    pub interpreter: String,
    /// Its interpreter's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
}

pub(crate) struct Shared {
    pub(crate) me: PeerId,
    pub(crate) role: Role,
    pub(crate) local: LocalInfo,
    /// The master's name (our own in the master).
    pub(crate) master_name: String,
    pub(crate) config: KernelConfig,
    /// The protocol core: peers' states, requests in flight, chains.
    pub(crate) proto: Mutex<Endpoint<Arc<Waiter>>>,
    pub(crate) decoder: FrameDecoder,
    pub(crate) registry: Registry,
    pub(crate) poll: Mutex<(Poll, Events)>,
    pub(crate) waker: Waker,
    /// The peers' sockets: connected peers, and closed ones not yet removed.
    pub(crate) peers: RwLock<HashMap<PeerId, Arc<Peer>>>,
    pub(crate) pool: Mutex<Pool>,
    pub(crate) pool_cv: Condvar,
    pub(crate) handler: Arc<dyn Handler>,
    /// Mirrors the core's stopping flag for the loops that check it often.
    pub(crate) stopping: AtomicBool,
    /// The twin's serving thread, woken when stopping.
    pub(crate) serve_waiter: Mutex<Option<Arc<Waiter>>>,
    pub(crate) serve: ServeState,
    /// Expires `SERVE_GRACE` after a socket was left unattended (see
    /// `pass_reader_role`); set only when not already running, so that busy
    /// threads cannot postpone it.
    pub(crate) unattended: crate::sys::Timer,
    pub(crate) unattended_set: AtomicBool,
    /// Expires `config.stall` after requests queued with no thread to take
    /// them (see `Pool::stalled`).
    pub(crate) stall_timer: crate::sys::Timer,
    pub(crate) next_peer: AtomicU32,
    pub(crate) spawner: Mutex<Option<std::sync::mpsc::Sender<crate::spawn::SpawnJob>>>,
}

/// A cpy2py kernel: one per process in normal use, owning every peer socket.
///
/// Cheap to clone (all clones are the same kernel). Thread-safe: any number of
/// threads may call at once, each waiting only for its own reply.
#[derive(Clone)]
pub struct Kernel {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("me", &self.shared.me)
            .field("role", &self.shared.role)
            .field("name", &self.shared.local.name)
            .finish()
    }
}

thread_local! {
    /// Each thread's frame buffer and the large byte strings left out of it.
    static ENCODE_BUF: RefCell<(Vec<u8>, Vec<Splice>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl Kernel {
    pub(crate) fn build(
        me: PeerId,
        role: Role,
        local: LocalInfo,
        master_name: String,
        config: KernelConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Kernel, KernelError> {
        let io_err = |context| move |source| KernelError::Io { context, source };
        let poll = Poll::new().map_err(io_err("creating the poll"))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(io_err("cloning the poll registry"))?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(io_err("creating the waker"))?;
        let serve = ServeState::new().map_err(io_err("creating the serving thread's timer"))?;
        let unattended =
            crate::sys::Timer::new().map_err(io_err("creating the unattended timer"))?;
        let stall_timer = crate::sys::Timer::new().map_err(io_err("creating the stall timer"))?;
        for (timer, token) in [
            (serve.timer_fd().as_raw_fd(), SERVE_TIMER),
            (unattended.fd().as_raw_fd(), UNATTENDED_TIMER),
            (stall_timer.fd().as_raw_fd(), STALL_TIMER),
        ] {
            poll.registry()
                .register(&mut SourceFd(&timer), token, Interest::READABLE)
                .map_err(io_err("registering a timer"))?;
        }
        let proto = Endpoint::new(
            me,
            role,
            local.clone(),
            master_name.clone(),
            config.max_frame,
        );
        Ok(Kernel {
            shared: Arc::new(Shared {
                me,
                role,
                local,
                master_name,
                decoder: FrameDecoder::new(config.max_frame),
                config,
                proto: Mutex::new(proto),
                registry,
                poll: Mutex::new((poll, Events::with_capacity(64))),
                waker,
                peers: RwLock::new(HashMap::new()),
                pool: Mutex::new(Pool::default()),
                pool_cv: Condvar::new(),
                handler,
                stopping: AtomicBool::new(false),
                serve_waiter: Mutex::new(None),
                serve,
                unattended,
                unattended_set: AtomicBool::new(false),
                stall_timer,
                next_peer: AtomicU32::new(1),
                spawner: Mutex::new(None),
            }),
        })
    }

    /// Starts a master kernel (peer 0) serving `handler`, with one pool thread
    /// watching for peers' input.
    pub fn start_master(
        local: LocalInfo,
        config: KernelConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Kernel, KernelError> {
        let master_name = local.name.clone();
        let kernel = Kernel::build(
            PeerId::MASTER,
            Role::Master,
            local,
            master_name,
            config,
            handler,
        )?;
        kernel
            .spawn_pool_thread()
            .map_err(|source| KernelError::Io {
                context: "starting the kernel's pool thread",
                source,
            })?;
        tracing::debug!(name = %kernel.shared.local.name, "master kernel started");
        Ok(kernel)
    }

    /// This process's peer id.
    pub fn me(&self) -> PeerId {
        self.shared.me
    }

    /// Whether this kernel is the master or a twin.
    pub fn role(&self) -> Role {
        self.shared.role
    }

    /// This process's name (twin id; the master's id in the master).
    pub fn name(&self) -> &str {
        &self.shared.local.name
    }

    /// The master's name, as it announced it.
    pub fn master_name(&self) -> &str {
        &self.shared.master_name
    }

    /// The configuration.
    pub fn config(&self) -> &KernelConfig {
        &self.shared.config
    }

    pub(crate) fn proto(&self) -> MutexGuard<'_, Endpoint<Arc<Waiter>>> {
        lock(&self.shared.proto)
    }

    /// Requests sent from here that have not been answered and waited for (a
    /// leak check for tests and hosts).
    pub fn pending_calls(&self) -> usize {
        self.proto().pending_len()
    }

    /// Whether the kernel is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn peer(&self, id: PeerId) -> Option<Arc<Peer>> {
        self.shared
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    pub(crate) fn insert_peer(&self, peer: Arc<Peer>) -> Result<(), KernelError> {
        {
            let mut peers = self
                .shared
                .peers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            peers.insert(peer.id, Arc::clone(&peer));
        }
        // Known to the core only once its socket is in the table: whatever the
        // core routes to, the shell can write to.
        self.proto().add_peer(peer.id, peer.hello.clone());
        self.watch(&peer, true).map_err(|source| KernelError::Io {
            context: "registering a peer with the poll",
            source,
        })
    }

    /// Ids of connected peers with their twin ids.
    pub fn peers(&self) -> Vec<(PeerId, String)> {
        self.proto().peers()
    }

    /// The connected peer whose twin id is `twin_id`.
    pub fn peer_by_name(&self, twin_id: &str) -> Option<PeerId> {
        if self.shared.role == Role::Twin && twin_id == self.shared.master_name {
            return Some(PeerId::MASTER);
        }
        self.peers()
            .into_iter()
            .find(|(_, name)| name == twin_id)
            .map(|(id, _)| id)
    }

    /// The handshake of a connected peer.
    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let proto = self.proto();
        let h = proto.hello(id)?;
        Some(PeerInfo {
            twin_id: h.twin_id.clone(),
            interpreter: h.interpreter.clone(),
            version: h.version.clone(),
            pid: h.pid,
        })
    }

    /// The twin id of `id` for messages: its handshake name, the master's
    /// name, or how it is remembered after it ended.
    pub fn peer_name(&self, id: PeerId) -> String {
        self.proto().peer_name(id)
    }

    /// Highest pickle protocol both this process and `peer` read.
    pub fn pickle_protocol(&self, peer: PeerId) -> u8 {
        self.proto().pickle_protocol(peer)
    }

    /// How a peer that is gone ended, or `None` if it is connected or unknown.
    pub fn peer_gone(&self, id: PeerId) -> Option<(String, String)> {
        self.proto().gone(id).cloned()
    }

    /// The socket a frame for `dst` is written to: `dst` itself in the
    /// master, the master in a twin. Without taking the core's lock (a reply
    /// takes this path): a socket that is in the table and not closed belongs
    /// to a peer the core knows, since the shell marks it closed before it
    /// tells the core.
    pub(crate) fn route(&self, dst: PeerId) -> Result<Arc<Peer>, CallError> {
        self.open_peer(proto::hop(self.shared.role, dst))
    }

    /// The socket of `hop`, which the core just said is connected.
    fn open_peer(&self, hop: PeerId) -> Result<Arc<Peer>, CallError> {
        match self.peer(hop) {
            Some(peer) if !peer.is_closed() => Ok(peer),
            Some(peer) => Err(self.lost_error(&peer)),
            None => Err(self.unreachable(hop)),
        }
    }

    /// Why `peer`, whose socket is gone from the table, cannot be written to:
    /// how the core remembers it ended, or that it is unknown.
    pub(crate) fn unreachable(&self, peer: PeerId) -> CallError {
        self.proto()
            .route(peer)
            .err()
            .unwrap_or(CallError::UnknownPeer(peer))
    }

    pub(crate) fn lost_error(&self, peer: &Peer) -> CallError {
        CallError::PeerLost {
            peer: peer.id,
            twin_id: peer.twin_id().to_owned(),
            reason: peer
                .closed
                .get()
                .cloned()
                .unwrap_or_else(|| "connection closed".into()),
        }
    }

    // ----- sending -------------------------------------------------------------

    pub(crate) fn send_to(&self, peer: &Peer, envelope: &Envelope) -> Result<(), CallError> {
        self.send_to_with(peer, envelope, |_| {})
    }

    /// Encodes `envelope`, calls `before_write` with the frame's size, then
    /// writes it to `peer`.
    pub(crate) fn send_to_with(
        &self,
        peer: &Peer,
        envelope: &Envelope,
        before_write: impl FnOnce(usize),
    ) -> Result<(), CallError> {
        ENCODE_BUF.with(|cell| {
            let mut guard = cell.try_borrow_mut();
            let mut fresh = (Vec::new(), Vec::new());
            // A nested send on this thread (not expected) gets its own buffer.
            let (buf, splices) = match guard.as_deref_mut() {
                Ok((buf, splices)) => (buf, splices),
                Err(_) => (&mut fresh.0, &mut fresh.1),
            };
            buf.clear();
            splices.clear();
            let total = encode_frame_vectored(envelope, buf, splices)
                .map_err(|e| CallError::Encode(e.to_string()))?;
            let body = total - cpy2py_wire::HEADER_LEN;
            if body > self.shared.config.max_frame {
                let err = CallError::Encode(format!(
                    "the message is {body} bytes, over the frame limit of {} bytes",
                    self.shared.config.max_frame
                ));
                buf.clear();
                buf.shrink_to(1 << 20);
                splices.clear();
                return Err(err);
            }
            tracing::trace!(dst = envelope.dst.0, bytes = total, "send frame");
            before_write(total);
            let result = if splices.is_empty() {
                peer.write_all(buf)
            } else {
                peer.write_spliced(buf, splices)
            };
            // The spliced strings may be the caller's objects: let them go now.
            splices.clear();
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            result.map_err(|e| {
                tracing::debug!(peer = peer.id.0, error = %e, "write failed");
                self.lost_error(peer)
            })
        })
    }

    /// Registers a request to `dst` on `chain` with the core, due by
    /// `deadline` or by the deadline of the request this thread runs,
    /// whichever is sooner. Fails with [`CallError::Timeout`] if that has
    /// passed: the request would be discarded on arrival.
    pub(crate) fn register(
        &self,
        dst: PeerId,
        chain: cpy2py_wire::ChainId,
        op: Op,
        deadline: Option<Instant>,
        completion: Completion<Arc<Waiter>>,
    ) -> Result<Registered, CallError> {
        let deadline = waiter::sooner(deadline, waiter::current_deadline());
        let time_left_us = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CallError::Timeout);
                }
                Some(u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1))
            }
        };
        let waits = matches!(completion, Completion::Thread(_));
        let (hop, id) = self.proto().submit(dst, chain, completion)?;
        let envelope = Envelope {
            src: self.shared.me,
            dst,
            message: Message::Request(Request {
                id,
                chain,
                op,
                time_left_us,
            }),
        };
        match self.open_peer(hop) {
            Ok(route) => Ok(Registered {
                route,
                id,
                envelope,
                deadline,
            }),
            Err(e) => {
                // Closed between the two lookups: the core's sweep failed the
                // request, or the request never leaves.
                let mut proto = self.proto();
                proto.abandon(id);
                if waits {
                    proto.leave_chain(chain);
                }
                Err(e)
            }
        }
    }

    /// Sends `op` to `dst`; `callback` receives the outcome on whichever thread
    /// reads the reply (keep it short; it must not block), or here if sending
    /// fails. No thread waits for the call, so it gets a chain of its own:
    /// requests `dst` makes back on it run on this kernel's pool.
    ///
    /// `Ok`: `callback` runs exactly once. `Err`: the request was not made and
    /// `callback` never runs.
    ///
    /// `deadline` travels with the request (nested calls made on its behalf
    /// inherit it), as does the deadline of the request this thread runs, if
    /// sooner; the callback still waits for the reply. [`Kernel::cancel`]
    /// with `dst` and the id returned cancels the request.
    pub fn submit_with_callback(
        &self,
        dst: PeerId,
        op: Op,
        deadline: Option<Instant>,
        callback: Callback,
    ) -> Result<RequestId, CallError> {
        let chain = waiter::detached_chain(self.shared.me);
        let registered = self.register(dst, chain, op, deadline, Completion::Callback(callback))?;
        let id = registered.id;
        if let Err(e) = self.send_to(&registered.route, &registered.envelope) {
            // Registered: the callback learns of it (from here, or from the
            // sweep of the lost peer if that came first).
            self.complete(id, Err(e));
        }
        Ok(id)
    }

    /// Tells `dst` that this process no longer waits for its request `id`
    /// (fire-and-forget): `dst` interrupts it if it still runs (see
    /// [`Handler::cancel`]). The request stays pending here until its reply
    /// (or its peer's loss) completes it, so a callback still runs once.
    /// Cancelling a request that has finished does nothing.
    pub fn cancel(&self, dst: PeerId, id: RequestId) -> Result<(), CallError> {
        self.send_message(dst, Message::Cancel { id })
    }

    /// Sends dropped references to `dst` (fire-and-forget).
    pub fn send_release(&self, dst: PeerId, release: Release) -> Result<(), CallError> {
        self.send_message(dst, Message::Release(release))
    }

    /// Tells `owner` that references to its objects are being handed on
    /// (fire-and-forget). Send it before the frame carrying them.
    pub fn send_retain(&self, owner: PeerId, retain: Retain) -> Result<(), CallError> {
        self.send_message(owner, Message::Retain(retain))
    }

    fn send_message(&self, dst: PeerId, message: Message) -> Result<(), CallError> {
        let route = self.route(dst)?;
        let envelope = Envelope {
            src: self.shared.me,
            dst,
            message,
        };
        self.send_to(&route, &envelope)
    }

    pub(crate) fn reply(&self, src: PeerId, id: RequestId, outcome: Outcome) {
        self.reply_with(src, id, outcome, |_| {});
    }

    /// Sends a reply; `before_write` runs once the frame's size is known.
    pub(crate) fn reply_with(
        &self,
        src: PeerId,
        id: RequestId,
        outcome: Outcome,
        before_write: impl FnOnce(usize),
    ) {
        let Ok(route) = self.route(src) else {
            tracing::debug!(peer = src.0, "reply dropped: requester is gone");
            return;
        };
        let envelope = Envelope {
            src: self.shared.me,
            dst: src,
            message: Message::Reply(Reply { id, outcome }),
        };
        match self.send_to_with(&route, &envelope, before_write) {
            Ok(()) => {}
            Err(CallError::Encode(reason)) => {
                // The outcome itself cannot travel: tell the requester why.
                let envelope = Envelope {
                    src: self.shared.me,
                    dst: src,
                    message: Message::Reply(Reply {
                        id,
                        outcome: proto::unsendable_reply(&reason),
                    }),
                };
                let _ = self.send_to(&route, &envelope);
            }
            Err(e) => tracing::debug!(peer = src.0, error = %e, "reply not sent"),
        }
    }
}

/// A request registered with the core and ready to write.
pub(crate) struct Registered {
    /// The socket it is written to.
    pub(crate) route: Arc<Peer>,
    pub(crate) id: RequestId,
    pub(crate) envelope: Envelope,
    /// When its requester stops waiting, if ever.
    pub(crate) deadline: Option<Instant>,
}
