//! The kernel: peers, the leader/follower thread pool around one mio poll, calls
//! and their replies, chains and reentrant dispatch.
//!
//! # Who reads a socket
//!
//! Each peer's socket has one *reader* at a time (its `reader` lock). Two kinds
//! of threads read:
//!
//! * A thread waiting for a reply takes the reader role of the peer the reply
//!   comes from, takes that socket out of the poll, and blocks in `poll(2)` on
//!   the socket and its own eventfd. The reply wakes it directly: no other
//!   thread is woken on the hot path.
//! * Otherwise the pool's *leader* thread, blocked in the mio poll, reads. When
//!   it reads a request on a chain nobody waits for here, it hands leadership
//!   to a follower (or a new thread) and runs the request itself, so a request
//!   runs on the thread that read it.
//!
//! A request on a chain whose thread is waiting here is handed to that thread
//! (it runs nested callbacks), which makes calls reentrant to any depth.

use crate::error::{CallError, KernelError};
use crate::handler::{Handler, RequestContext};
use crate::peer::{Incoming, Peer, ReadBuf, lock};
use crate::pending::{Callback, Completed, Completion, PendingTable};
use crate::sys;
use crate::waiter::{self, ChainGuard, Inbound, Waiter};
use cpy2py_wire::{
    ChainId, Envelope, FrameDecoder, Message, Op, Outcome, PeerId, Release, RemoteError, Reply,
    Request, RequestId, Retain, Splice, encode_frame_vectored,
};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
/// The poll token of the twin's serving-thread timer (see `ServeState`).
const SERVE_TIMER: Token = Token(usize::MAX - 1);
/// The poll token of the timer for unattended sockets (see `pass_reader_role`).
const UNATTENDED_TIMER: Token = Token(usize::MAX - 2);

/// How many ended peers are remembered for error messages.
const GONE_REMEMBERED: usize = 1024;

/// Frames up to this size fit in a socket buffer: writing one never blocks
/// for long, so a thread may write it while holding a reader role.
const SMALL_FRAME: usize = 64 * 1024;

/// How long a request may run on a twin's serving thread before the pool
/// starts serving the requests behind it (see [`Kernel::serve`]): this, or up
/// to half as long again for a request that started just after the timer was
/// set (see `look_at_serving_thread`). Until then they wait for the serving thread,
/// which runs them without waking another thread or contending for the
/// interpreter's lock.
///
/// Longer than a 250 Hz scheduler tick (4 ms) on purpose: setting a timer
/// that would be the CPU's next one reprograms its clock, which on a VM exits
/// to the hypervisor. Measured on the 2-vCPU development VM, re-setting a
/// timerfd 1 ms ahead took 275 ns at the median but 16 µs at p99, 20 ms
/// ahead 368 ns at p99; with a 1 ms grace the pinned noop's p99 was 3.5× its
/// median. (CPython's own switch interval, 5 ms, bounds how soon a pool
/// thread gets the GIL from a busy serving thread anyway.)
const SERVE_GRACE: Duration = Duration::from_millis(5);

/// Tunables of a kernel.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Largest frame body sent or accepted, in bytes.
    pub max_frame: usize,
    /// How long a twin may take from its start to the end of the handshake.
    pub handshake_timeout: Duration,
    /// Idle pool threads kept for later requests; more exit.
    pub max_idle_workers: usize,
    /// Twin only: once stopping (shutdown requested or master gone), end the
    /// whole process if it has not exited by itself after this long. `None`
    /// (the default) leaves exiting to the host.
    pub exit_after_stop: Option<Duration>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            max_frame: cpy2py_wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(30),
            max_idle_workers: 4,
            exit_after_stop: None,
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

/// What the pool's leader watches of a twin's serving thread.
///
/// A one-shot timer in the leader's poll expires `SERVE_GRACE` after the
/// serving thread last set it. The serving thread sets it when it starts a
/// request, at most once per half grace (one system call per 2.5 ms, none per
/// request), so while requests keep finishing the timer never expires and the
/// leader sleeps. (Session 2's leader looked every 1 ms instead; on one CPU
/// each look preempted a running call, the slowest 1.5% of all calls.)
struct ServeState {
    /// Requests the serving thread has started so far.
    started: AtomicU64,
    /// Whether it runs one now.
    busy: AtomicBool,
    /// `started` when the timer was last set: if the same request still runs
    /// when it expires, it has run for all the time since.
    armed_for: AtomicU64,
    watchdog: Watchdog,
    /// Requests read along with the running one, next in line on the serving
    /// thread (or the pool's, once the running one takes too long).
    backlog: Mutex<VecDeque<Inbound>>,
}

impl ServeState {
    fn new() -> io::Result<ServeState> {
        Ok(ServeState {
            started: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            armed_for: AtomicU64::new(0),
            watchdog: Watchdog::new()?,
            backlog: Mutex::new(VecDeque::new()),
        })
    }
}

/// The serving thread's timer in the leader's poll, set `SERVE_GRACE` ahead at
/// most once per half grace, so that a busy serving thread pays one system
/// call per 2.5 ms and the timer expires only once it stops setting it.
struct Watchdog {
    timer: sys::Timer,
    /// `sys::monotonic_ns` before which the timer is not set again.
    arm_after: AtomicU64,
}

impl Watchdog {
    fn new() -> io::Result<Watchdog> {
        Ok(Watchdog {
            timer: sys::Timer::new()?,
            arm_after: AtomicU64::new(0),
        })
    }

    /// Claims the next setting if half a grace has passed since the last one;
    /// the caller then calls `arm`.
    fn due(&self) -> bool {
        let now = sys::monotonic_ns();
        if now < self.arm_after.load(Ordering::Relaxed) {
            return false;
        }
        let half = (SERVE_GRACE / 2).as_nanos() as u64;
        self.arm_after.store(now + half, Ordering::Relaxed);
        true
    }

    fn arm(&self) {
        self.timer.arm(SERVE_GRACE);
    }
}

/// How long after a peer last sent a request for the pool (not a reply, not a
/// callback of a waiting thread) its socket goes straight back to the poll
/// when a thread stops reading it, rather than after up to `SERVE_GRACE`.
const UNSOLICITED_RECENT: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Pool {
    leader: bool,
    idle: usize,
    threads: usize,
    ready: VecDeque<Inbound>,
}

pub(crate) struct Shared {
    pub(crate) me: PeerId,
    pub(crate) role: Role,
    pub(crate) local: LocalInfo,
    /// The master's name (our own in the master).
    pub(crate) master_name: String,
    pub(crate) config: KernelConfig,
    decoder: FrameDecoder,
    registry: Registry,
    poll: Mutex<(Poll, Events)>,
    waker: Waker,
    peers: RwLock<HashMap<PeerId, Arc<Peer>>>,
    /// How peers that are gone ended, for later errors.
    gone: Mutex<HashMap<PeerId, (String, String)>>,
    pending: Mutex<PendingTable>,
    chains: Mutex<HashMap<ChainId, (Arc<Waiter>, usize)>>,
    pool: Mutex<Pool>,
    pool_cv: Condvar,
    handler: Arc<dyn Handler>,
    stopping: AtomicBool,
    /// The twin's serving thread, woken when stopping.
    serve_waiter: Mutex<Option<Arc<Waiter>>>,
    serve: ServeState,
    /// Expires `SERVE_GRACE` after a socket was left unattended (see
    /// `pass_reader_role`); set only when not already running, so that busy
    /// threads cannot postpone it.
    unattended: sys::Timer,
    unattended_set: AtomicBool,
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

/// A request sent and not yet answered. Dropping it abandons the request: a
/// reply arriving later is discarded.
#[must_use = "a call is abandoned when its PendingCall is dropped"]
pub struct PendingCall {
    kernel: Kernel,
    id: RequestId,
    route: Arc<Peer>,
    chain: ChainId,
    waiter: Arc<Waiter>,
    finished: bool,
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall")
            .field("id", &self.id)
            .field("route", &self.route.id)
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
        let unattended = sys::Timer::new().map_err(io_err("creating the unattended timer"))?;
        for (timer, token) in [
            (&serve.watchdog.timer, SERVE_TIMER),
            (&unattended, UNATTENDED_TIMER),
        ] {
            poll.registry()
                .register(&mut SourceFd(&timer.fd()), token, Interest::READABLE)
                .map_err(io_err("registering a timer"))?;
        }
        let decoder = FrameDecoder::new(config.max_frame);
        Ok(Kernel {
            shared: Arc::new(Shared {
                me,
                role,
                local,
                master_name,
                config,
                decoder,
                registry,
                poll: Mutex::new((poll, Events::with_capacity(64))),
                waker,
                peers: RwLock::new(HashMap::new()),
                gone: Mutex::new(HashMap::new()),
                pending: Mutex::new(PendingTable::default()),
                chains: Mutex::new(HashMap::new()),
                pool: Mutex::new(Pool::default()),
                pool_cv: Condvar::new(),
                handler,
                stopping: AtomicBool::new(false),
                serve_waiter: Mutex::new(None),
                serve,
                unattended,
                unattended_set: AtomicBool::new(false),
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

    /// Requests sent from here that have not been answered and waited for (a
    /// leak check for tests and hosts).
    pub fn pending_calls(&self) -> usize {
        lock(&self.shared.pending).len()
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
        self.watch(&peer, true).map_err(|source| KernelError::Io {
            context: "registering a peer with the poll",
            source,
        })
    }

    /// Ids of connected peers with their twin ids.
    pub fn peers(&self) -> Vec<(PeerId, String)> {
        let peers = self
            .shared
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<_> = peers
            .values()
            .filter(|p| !p.is_closed())
            .map(|p| (p.id, p.twin_id().to_owned()))
            .collect();
        out.sort();
        out
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

    /// The handshake of a connected peer: `(twin id, interpreter, version, pid)`.
    pub fn peer_info(&self, id: PeerId) -> Option<(String, String, String, u32)> {
        let peer = self.peer(id)?;
        let h = &peer.hello;
        Some((
            h.twin_id.clone(),
            h.interpreter.clone(),
            h.version.clone(),
            h.pid,
        ))
    }

    /// The twin id of `id` for messages: its handshake name, the master's
    /// name, or how it is remembered after it ended.
    pub fn peer_name(&self, id: PeerId) -> String {
        if let Some(peer) = self.peer(id) {
            return peer.twin_id().to_owned();
        }
        if id == PeerId::MASTER {
            return self.shared.master_name.clone();
        }
        self.peer_gone(id)
            .map(|(name, _)| name)
            .unwrap_or_else(|| id.to_string())
    }

    /// Highest pickle protocol both this process and `peer` read.
    pub fn pickle_protocol(&self, peer: PeerId) -> u8 {
        let theirs = self
            .route(peer)
            .map(|p| p.hello.pickle_protocol)
            .unwrap_or(0);
        theirs.min(self.shared.local.pickle_protocol)
    }

    /// How a peer that is gone ended, or `None` if it is connected or unknown.
    pub fn peer_gone(&self, id: PeerId) -> Option<(String, String)> {
        lock(&self.shared.gone).get(&id).cloned()
    }

    /// The peer a frame for `dst` is written to: `dst` itself in the master,
    /// the master in a twin.
    fn route(&self, dst: PeerId) -> Result<Arc<Peer>, CallError> {
        let hop = if self.shared.role == Role::Twin {
            PeerId::MASTER
        } else {
            dst
        };
        match self.peer(hop) {
            Some(peer) if !peer.is_closed() => Ok(peer),
            Some(peer) => Err(self.lost_error(&peer)),
            None => match self.peer_gone(hop) {
                Some((twin_id, reason)) => Err(CallError::PeerLost {
                    peer: hop,
                    twin_id,
                    reason,
                }),
                None => Err(CallError::UnknownPeer(dst)),
            },
        }
    }

    fn lost_error(&self, peer: &Peer) -> CallError {
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

    fn send_to(&self, peer: &Peer, envelope: &Envelope) -> Result<(), CallError> {
        self.send_to_with(peer, envelope, |_| {})
    }

    /// Encodes `envelope`, calls `before_write` with the frame's size, then
    /// writes it to `peer`.
    fn send_to_with(
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

    /// Sends `request` to `dst` and returns a handle to wait for its reply on
    /// this thread. The request continues this thread's chain.
    pub fn submit(&self, dst: PeerId, op: Op) -> Result<PendingCall, CallError> {
        self.submit_inner(dst, op, false)
    }

    /// Sends `op` to `dst` and waits up to `first_wait` for the outcome:
    /// [`Kernel::submit`] and [`PendingCall::wait`] in one step, cheaper than
    /// the two because this thread starts reading before the request leaves.
    /// The call stays pending (wait again) if the outcome is `None`.
    pub fn submit_and_wait(
        &self,
        dst: PeerId,
        op: Op,
        first_wait: Option<Duration>,
    ) -> Result<(PendingCall, Option<Result<Outcome, CallError>>), CallError> {
        let mut pending = self.submit_inner(dst, op, true)?;
        let result = pending.wait(first_wait);
        Ok((pending, result))
    }

    fn submit_inner(
        &self,
        dst: PeerId,
        op: Op,
        read_first: bool,
    ) -> Result<PendingCall, CallError> {
        let waiter = waiter::current_waiter().map_err(|_| CallError::ShuttingDown)?;
        let route = self.route(dst)?;
        let chain = waiter::current_chain(self.shared.me);
        let id = lock(&self.shared.pending).insert(dst, Completion::Thread(Arc::clone(&waiter)));
        self.enter_chain(chain, &waiter);
        let call = PendingCall {
            kernel: self.clone(),
            id,
            route: Arc::clone(&route),
            chain,
            waiter,
            finished: false,
        };
        let envelope = Envelope {
            src: self.shared.me,
            dst,
            message: Message::Request(Request { id, chain, op }),
        };
        // Reading first: take the socket from the poll before a small request
        // leaves, so that the reply (which may come back before this thread
        // runs again) wakes only this thread. `wait`, which follows at once,
        // gives it back. Large requests are written first: no socket is left
        // unwatched while a write blocks.
        let sent = self.send_to_with(&route, &envelope, |bytes| {
            if read_first && bytes <= SMALL_FRAME {
                let _ = self.watch(&route, false);
            }
        });
        if let Err(e) = sent {
            self.rewatch(&route);
            return Err(e);
        }
        if route.is_closed() {
            // Closed between the lookup and the insert: its failure sweep may
            // have missed this request.
            self.complete(id, Err(self.lost_error(&route)));
        }
        Ok(call)
    }

    /// Sends `op` to `dst`; `callback` receives the outcome on whichever thread
    /// reads the reply (keep it short; it must not block). The request is on
    /// this thread's chain.
    pub fn submit_with_callback(
        &self,
        dst: PeerId,
        op: Op,
        callback: Callback,
    ) -> Result<RequestId, CallError> {
        let route = self.route(dst)?;
        let chain = waiter::current_chain(self.shared.me);
        let id = lock(&self.shared.pending).insert(dst, Completion::Callback(callback));
        let envelope = Envelope {
            src: self.shared.me,
            dst,
            message: Message::Request(Request { id, chain, op }),
        };
        if let Err(e) = self.send_to(&route, &envelope) {
            self.complete(id, Err(e.clone()));
            return Err(e);
        }
        if route.is_closed() {
            self.complete(id, Err(self.lost_error(&route)));
        }
        Ok(id)
    }

    /// Calls `op` on `dst` and waits for the outcome (at most `timeout`).
    pub fn call(
        &self,
        dst: PeerId,
        op: Op,
        timeout: Option<Duration>,
    ) -> Result<Outcome, CallError> {
        match self.submit_and_wait(dst, op, timeout)? {
            (_, Some(result)) => result,
            (_, None) => Err(CallError::Timeout),
        }
    }

    /// Sends dropped references to `dst` (fire-and-forget).
    pub fn send_release(&self, dst: PeerId, release: Release) -> Result<(), CallError> {
        let route = self.route(dst)?;
        let envelope = Envelope {
            src: self.shared.me,
            dst,
            message: Message::Release(release),
        };
        self.send_to(&route, &envelope)
    }

    /// Tells `owner` that references to its objects are being handed on
    /// (fire-and-forget). Send it before the frame carrying them.
    pub fn send_retain(&self, owner: PeerId, retain: Retain) -> Result<(), CallError> {
        let route = self.route(owner)?;
        let envelope = Envelope {
            src: self.shared.me,
            dst: owner,
            message: Message::Retain(retain),
        };
        self.send_to(&route, &envelope)
    }

    fn reply(&self, src: PeerId, id: RequestId, outcome: Outcome) {
        self.reply_with(src, id, outcome, |_| {});
    }

    /// Sends a reply; `before_write` runs once the frame's size is known.
    fn reply_with(
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
                let outcome = Outcome::Err(RemoteError {
                    refs: Vec::new(),
                    type_path: "cpy2py.errors.CPy2PyException".into(),
                    message: format!("the reply could not be sent: {reason}"),
                    traceback: String::new(),
                    pickle: None,
                });
                let envelope = Envelope {
                    src: self.shared.me,
                    dst: src,
                    message: Message::Reply(Reply { id, outcome }),
                };
                let _ = self.send_to(&route, &envelope);
            }
            Err(e) => tracing::debug!(peer = src.0, error = %e, "reply not sent"),
        }
    }

    // ----- completing ----------------------------------------------------------

    fn complete(&self, id: RequestId, result: Result<Outcome, CallError>) {
        let done = lock(&self.shared.pending).complete(id, result);
        self.finish(done);
    }

    fn finish(&self, done: Completed) {
        match done {
            Completed::Wake(waiter) => {
                // The thread that reads its own reply needs no wake-up call.
                if !waiter::is_current(&waiter) {
                    waiter.wake();
                }
            }
            Completed::Deliver(callback, result) => {
                if catch_unwind(AssertUnwindSafe(|| callback(result))).is_err() {
                    tracing::error!("a completion callback panicked");
                }
            }
            Completed::Stale => {}
        }
    }

    fn enter_chain(&self, chain: ChainId, waiter: &Arc<Waiter>) {
        let mut chains = lock(&self.shared.chains);
        chains
            .entry(chain)
            .or_insert_with(|| (Arc::clone(waiter), 0))
            .1 += 1;
    }

    fn leave_chain(&self, chain: ChainId, waiter: &Arc<Waiter>) {
        {
            let mut chains = lock(&self.shared.chains);
            if let Some(entry) = chains.get_mut(&chain) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    chains.remove(&chain);
                }
            }
        }
        // Requests handed to this thread after its last check go to the pool.
        let mut leftovers = Vec::new();
        while let Some(inbound) = waiter.pop() {
            leftovers.push(inbound);
        }
        if !leftovers.is_empty() {
            self.enqueue(leftovers);
        }
    }

    // ----- reading and dispatch --------------------------------------------------

    /// Registers or deregisters a peer's socket with the poll.
    fn watch(&self, peer: &Peer, on: bool) -> io::Result<()> {
        let mut watched = lock(&peer.watched);
        if *watched == on || (on && peer.is_closed()) {
            return Ok(());
        }
        let fd = peer.fd();
        let token = Token(peer.id.0 as usize);
        if on {
            self.shared
                .registry
                .register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        } else {
            self.shared.registry.deregister(&mut SourceFd(&fd))?;
        }
        *watched = on;
        Ok(())
    }

    /// Gives a peer's socket back to the poll after reading it directly.
    fn rewatch(&self, peer: &Peer) {
        if let Err(e) = self.watch(peer, true) {
            tracing::debug!(peer = peer.id.0, error = %e, "re-registering failed");
            return;
        }
        if peer.missed.swap(false, Ordering::AcqRel) && !peer.is_closed() {
            // The leader skipped an edge while we held the reader role: re-arm
            // so that data still unread raises a new event.
            let fd = peer.fd();
            let _ = self.shared.registry.reregister(
                &mut SourceFd(&fd),
                Token(peer.id.0 as usize),
                Interest::READABLE,
            );
        }
    }

    /// Leaves the reader role of `peer`, just released by this thread, to a
    /// thread waiting for a reply from it (saving the poll's thread a wake-up
    /// per reply); returns whether there was one. The socket stays out of
    /// the poll: the new reader reads it directly.
    fn hand_reader_on(&self, peer: &Peer) -> bool {
        let next = {
            let mut standby = lock(&peer.standby);
            if standby.is_empty() {
                return false;
            }
            let next = standby.remove(0);
            next.hand_reader();
            next
        };
        next.wake();
        true
    }

    /// Releases the reader role of `peer` (already unlocked by this thread):
    /// to a waiting thread if there is one, else to the poll, or to nobody
    /// for a while.
    ///
    /// Giving the socket to the poll and taking it back costs an `epoll_ctl`
    /// pair (~0.7 µs here) per call and per nested callback, so the socket is
    /// left unattended, out of the poll, when the next thing to read is most
    /// likely a reply some thread will wait for: the next caller reads it
    /// without a system call. A timer gives unattended sockets to the poll
    /// within `SERVE_GRACE`, so a request or an end of stream nobody waits
    /// for is still read. Sockets of peers that recently sent requests of
    /// their own, and a twin's master socket while its serving thread is
    /// idle, go back to the poll at once.
    fn pass_reader_role(&self, peer: &Peer) {
        if self.hand_reader_on(peer) {
            return;
        }
        let unattended = match self.shared.role {
            // The serving thread reads the master's socket again when its
            // request ends; its own timer covers a long request.
            Role::Twin => {
                peer.id == PeerId::MASTER && self.shared.serve.busy.load(Ordering::SeqCst)
            }
            Role::Master => {
                let last = peer.unsolicited_at.load(Ordering::Relaxed);
                last == u64::MAX
                    || sys::monotonic_ns().saturating_sub(last)
                        >= UNSOLICITED_RECENT.as_nanos() as u64
            }
        };
        if !unattended || peer.is_closed() {
            self.rewatch(peer);
            return;
        }
        if !self.shared.unattended_set.swap(true, Ordering::AcqRel) {
            self.shared.unattended.arm(SERVE_GRACE);
        }
    }

    /// When the unattended timer expires: gives every socket that nobody
    /// reads and the poll does not watch back to the poll.
    fn watch_unattended(&self) {
        self.shared.unattended.consume();
        // Sockets left from now on set the timer again.
        self.shared.unattended_set.store(false, Ordering::Release);
        let peers: Vec<Arc<Peer>> = self
            .shared
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for peer in peers {
            if peer.is_closed() || *lock(&peer.watched) {
                continue;
            }
            // A thread reading it directly gives it back when it stops.
            if peer.reader.try_lock().is_err() {
                continue;
            }
            self.rewatch(&peer);
        }
    }

    /// Reads what `peer` has sent (once), dispatching every whole frame.
    fn read_once(
        &self,
        peer: &Arc<Peer>,
        buf: &mut ReadBuf,
        runnable: &mut Vec<Inbound>,
    ) -> ReadResult {
        match buf.read_from(&peer.stream) {
            Ok(0) => {
                self.close_peer(peer, None, false);
                return ReadResult::Gone;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadResult::Empty,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.close_peer(peer, None, false);
                return ReadResult::Gone;
            }
            Err(e) => {
                self.close_peer(peer, Some(format!("read error: {e}")), true);
                return ReadResult::Gone;
            }
        }
        let forward = self.shared.role == Role::Master;
        loop {
            match buf.next_frame(&self.shared.decoder, self.shared.me, forward) {
                Ok(None) => return ReadResult::Progress,
                Ok(Some(incoming)) => {
                    if let Err(reason) = self.dispatch(peer, incoming, runnable) {
                        tracing::error!(peer = peer.id.0, twin = peer.twin_id(), %reason,
                            "protocol violation by peer; closing it");
                        self.close_peer(peer, Some(format!("protocol error: {reason}")), true);
                        return ReadResult::Gone;
                    }
                }
                Err(e) => {
                    tracing::error!(peer = peer.id.0, twin = peer.twin_id(), error = %e,
                        "corrupt stream from peer; closing it");
                    self.close_peer(peer, Some(format!("protocol error: {e}")), true);
                    return ReadResult::Gone;
                }
            }
        }
    }

    /// Reads `peer` until it has nothing more (the leader's way).
    fn drain(&self, peer: &Arc<Peer>, runnable: &mut Vec<Inbound>) {
        let guard = match peer.reader.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Someone else reads it; make sure they re-arm the poll after.
                peer.missed.store(true, Ordering::Release);
                match peer.reader.try_lock() {
                    Ok(guard) => {
                        peer.missed.store(false, Ordering::Release);
                        guard
                    }
                    Err(_) => return,
                }
            }
        };
        let mut buf = guard;
        while let ReadResult::Progress = self.read_once(peer, &mut buf, runnable) {}
        drop(buf);
        // A thread that waits for a reply reads it sooner itself than the poll
        // does for it (the socket stays registered: the poll is this thread's).
        self.hand_reader_on(peer);
    }

    /// Handles one frame read from `from`. `Err` closes that peer.
    fn dispatch(
        &self,
        from: &Arc<Peer>,
        incoming: Incoming,
        runnable: &mut Vec<Inbound>,
    ) -> Result<(), String> {
        let envelope = match incoming {
            Incoming::Forward { src, dst, frame } => {
                if src != from.id {
                    return Err(format!(
                        "peer {} sent a frame claiming to be {}",
                        from.id, src
                    ));
                }
                // Checked before it goes on: a twin must not be able to end
                // another with a malformed frame or a control message.
                match self.shared.decoder.decode(&frame) {
                    Ok(Some((envelope, _))) => match envelope.message {
                        Message::Request(_)
                        | Message::Reply(_)
                        | Message::Release(_)
                        | Message::Retain(_) => {}
                        other => {
                            return Err(format!(
                                "peer {} sent a {} to peer {dst}",
                                from.id,
                                message_kind(&other)
                            ));
                        }
                    },
                    Ok(None) => return Err("a frame to forward was cut short".into()),
                    Err(e) => return Err(format!("a frame to forward is malformed: {e}")),
                }
                self.forward(from, dst, frame);
                return Ok(());
            }
            Incoming::Local(envelope) => envelope,
        };
        if self.shared.role == Role::Master && envelope.src != from.id {
            return Err(format!(
                "peer {} sent a frame claiming to be {}",
                from.id, envelope.src
            ));
        }
        tracing::trace!(src = envelope.src.0, "frame");
        match envelope.message {
            Message::Reply(reply) => self.complete(reply.id, Ok(reply.outcome)),
            Message::Request(request) => {
                let inbound = Inbound {
                    src: envelope.src,
                    request,
                };
                let target = lock(&self.shared.chains)
                    .get(&inbound.request.chain)
                    .map(|(waiter, _)| Arc::clone(waiter));
                match target {
                    // The reading thread itself (a nested callback): it looks
                    // at its inbox after this read.
                    Some(waiter) if waiter::is_current(&waiter) => waiter.push_quiet(inbound),
                    Some(waiter) => waiter.push(inbound),
                    None => {
                        if self.shared.role == Role::Master {
                            from.unsolicited_at
                                .store(sys::monotonic_ns(), Ordering::Relaxed);
                        }
                        runnable.push(inbound)
                    }
                }
            }
            Message::Release(release) => {
                let handler = Arc::clone(&self.shared.handler);
                if catch_unwind(AssertUnwindSafe(|| handler.release(envelope.src, release)))
                    .is_err()
                {
                    tracing::error!("the handler panicked in release");
                }
            }
            Message::Shutdown => {
                if self.shared.role == Role::Twin {
                    tracing::debug!("shutdown requested by the master");
                    self.begin_stop();
                } else {
                    return Err("a twin asked the master to shut down".into());
                }
            }
            Message::PeerGone { peer, reason } => {
                if self.shared.role == Role::Master {
                    return Err("a twin sent PeerGone".into());
                }
                let done = lock(&self.shared.pending).fail_peer(peer, || CallError::PeerLost {
                    peer,
                    twin_id: format!("{peer}"),
                    reason: reason.clone(),
                });
                for d in done {
                    self.finish(d);
                }
                // Its objects are gone too, and so is any route to it that
                // the handler keeps (a restarted twin gets a new number).
                let handler = Arc::clone(&self.shared.handler);
                if catch_unwind(AssertUnwindSafe(|| handler.peer_lost(peer, &reason))).is_err() {
                    tracing::error!("the handler panicked in peer_lost");
                }
            }
            Message::Retain(retain) => {
                let handler = Arc::clone(&self.shared.handler);
                if catch_unwind(AssertUnwindSafe(|| handler.retain(envelope.src, retain))).is_err()
                {
                    tracing::error!("the handler panicked in retain");
                }
            }
            Message::Hello(_) => return Err("unexpected Hello after the handshake".into()),
        }
        Ok(())
    }

    /// Master: passes a frame between twins without decoding its message.
    fn forward(&self, from: &Arc<Peer>, dst: PeerId, frame: Vec<u8>) {
        let target = self.peer(dst).filter(|p| !p.is_closed());
        let failure = match target {
            Some(peer) => match peer.write_all(&frame) {
                Ok(()) => return crate::peer::recycle(frame),
                Err(_) => self.lost_error(&peer),
            },
            None => match self.peer_gone(dst) {
                Some((twin_id, reason)) => CallError::PeerLost {
                    peer: dst,
                    twin_id,
                    reason,
                },
                None => CallError::UnknownPeer(dst),
            },
        };
        // If it was a request, answer it on the destination's behalf.
        let Ok(Some((envelope, _))) = self.shared.decoder.decode(&frame) else {
            return;
        };
        if let Message::Request(request) = envelope.message {
            let outcome = Outcome::Err(RemoteError {
                refs: Vec::new(),
                type_path: "cpy2py.errors.TwinterpeterTerminated".into(),
                message: failure.to_string(),
                traceback: String::new(),
                pickle: None,
            });
            let reply = Envelope {
                src: dst,
                dst: from.id,
                message: Message::Reply(Reply {
                    id: request.id,
                    outcome,
                }),
            };
            let _ = self.send_to(from, &reply);
        }
    }

    // ----- running requests --------------------------------------------------------

    /// Runs a request on this thread and sends its reply.
    pub(crate) fn run_inbound(&self, inbound: Inbound) {
        let (src, id, outcome) = self.handle_inbound(inbound);
        self.reply(src, id, outcome);
    }

    /// Runs a request on this thread; returns where its reply goes.
    fn handle_inbound(&self, inbound: Inbound) -> (PeerId, RequestId, Outcome) {
        let Inbound { src, request } = inbound;
        let Request { id, chain, op } = request;
        let _span = tracing::trace_span!(
            "request",
            src = src.0,
            id = id.index,
            chain.origin = chain.origin.0,
            chain.thread = chain.thread
        )
        .entered();
        let outcome = {
            let _chain = ChainGuard::enter(chain);
            let ctx = RequestContext {
                kernel: self,
                src,
                chain,
            };
            let handler = &self.shared.handler;
            match catch_unwind(AssertUnwindSafe(|| handler.handle(&ctx, op))) {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "handler panicked".into());
                    tracing::error!(%message, "the handler panicked");
                    Outcome::Err(RemoteError {
                        refs: Vec::new(),
                        type_path: "cpy2py.errors.CPy2PyException".into(),
                        message: format!("the cpy2py handler panicked: {message}"),
                        traceback: String::new(),
                        pickle: None,
                    })
                }
            }
        };
        (src, id, outcome)
    }

    /// Hands requests to the pool.
    fn enqueue(&self, work: Vec<Inbound>) {
        if work.is_empty() {
            return;
        }
        let spawn = {
            let mut pool = lock(&self.shared.pool);
            let n = work.len();
            pool.ready.extend(work);
            for _ in 0..n.min(pool.idle) {
                self.shared.pool_cv.notify_one();
            }
            n.saturating_sub(pool.idle)
        };
        for _ in 0..spawn {
            if let Err(e) = self.spawn_pool_thread() {
                tracing::error!(error = %e, "cannot start a pool thread");
            }
        }
    }

    pub(crate) fn spawn_pool_thread(&self) -> io::Result<()> {
        lock(&self.shared.pool).threads += 1;
        let kernel = self.clone();
        let result = std::thread::Builder::new()
            .name("cpy2py-pool".into())
            .spawn(move || {
                let handler = Arc::clone(&kernel.shared.handler);
                handler.run_thread(Box::new(move || kernel.pool_loop(false)));
            });
        if let Err(e) = result {
            lock(&self.shared.pool).threads -= 1;
            return Err(e);
        }
        Ok(())
    }

    /// The life of a pool thread: run ready requests, else lead (poll), else
    /// wait to lead. `main` marks the twin's serving thread, which never
    /// retires.
    fn pool_loop(&self, main: bool) {
        loop {
            let job = {
                let mut pool = lock(&self.shared.pool);
                loop {
                    if self.is_stopping() {
                        pool.threads -= 1;
                        self.shared.pool_cv.notify_all();
                        return;
                    }
                    if let Some(job) = pool.ready.pop_front() {
                        break Some(job);
                    }
                    if !pool.leader {
                        pool.leader = true;
                        break None;
                    }
                    if !main && pool.idle >= self.shared.config.max_idle_workers {
                        pool.threads -= 1;
                        return;
                    }
                    pool.idle += 1;
                    pool = self
                        .shared
                        .pool_cv
                        .wait(pool)
                        .unwrap_or_else(|e| e.into_inner());
                    pool.idle -= 1;
                }
            };
            let job = match job {
                Some(job) => Some(job),
                None => self.lead(),
            };
            if let Some(job) = job {
                self.run_inbound(job);
            }
        }
    }

    /// Polls as the pool's leader until there is a request to run, which is
    /// returned after leadership has passed on.
    fn lead(&self) -> Option<Inbound> {
        let mut guard = lock(&self.shared.poll);
        let (poll, events) = &mut *guard;
        let mut runnable = Vec::new();
        loop {
            if self.is_stopping() {
                drop(guard);
                self.step_down(Vec::new());
                return None;
            }
            if let Err(e) = poll.poll(events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                if event.token() == SERVE_TIMER {
                    self.look_at_serving_thread();
                    continue;
                }
                if event.token() == UNATTENDED_TIMER {
                    self.watch_unattended();
                    continue;
                }
                let id = PeerId(event.token().0 as u32);
                if let Some(peer) = self.peer(id) {
                    self.drain(&peer, &mut runnable);
                }
            }
            if !runnable.is_empty() {
                drop(guard);
                let first = runnable.remove(0);
                self.step_down(runnable);
                return Some(first);
            }
        }
    }

    /// The leader's look at a twin's serving thread when its timer expires:
    /// if the request it was set for still runs, that request has taken
    /// longer than `SERVE_GRACE` and the pool takes over the socket and the
    /// backlog. A later request, started within half a grace of the setting,
    /// has run 2.5 to 5 ms by then and gets another half grace first.
    fn look_at_serving_thread(&self) {
        let serve = &self.shared.serve;
        serve.watchdog.timer.consume();
        if !serve.busy.load(Ordering::SeqCst) {
            return;
        }
        let started = serve.started.load(Ordering::SeqCst);
        if serve.armed_for.swap(started, Ordering::SeqCst) != started {
            serve.watchdog.timer.arm(SERVE_GRACE / 2);
            return;
        }
        if let Some(master) = self.peer(PeerId::MASTER) {
            self.rewatch(&master);
        }
        let backlog: Vec<Inbound> = lock(&serve.backlog).drain(..).collect();
        self.enqueue(backlog);
    }

    /// Marks the start of a request on the twin's serving thread, setting the
    /// leader's timer unless it was set less than half a grace ago.
    fn serve_started(&self) {
        let serve = &self.shared.serve;
        let n = serve.started.fetch_add(1, Ordering::SeqCst) + 1;
        serve.busy.store(true, Ordering::SeqCst);
        if serve.watchdog.due() {
            serve.armed_for.store(n, Ordering::SeqCst);
            serve.watchdog.arm();
        }
    }

    /// Gives up leadership (a follower or a new thread takes it) and queues
    /// `extra` requests for other threads.
    fn step_down(&self, extra: Vec<Inbound>) {
        let needed = {
            let mut pool = lock(&self.shared.pool);
            pool.leader = false;
            let n = extra.len() + 1;
            pool.ready.extend(extra);
            for _ in 0..n.min(pool.idle) {
                self.shared.pool_cv.notify_one();
            }
            if self.is_stopping() {
                0
            } else {
                n.saturating_sub(pool.idle)
            }
        };
        for _ in 0..needed {
            if let Err(e) = self.spawn_pool_thread() {
                tracing::error!(error = %e, "cannot start a pool thread");
            }
        }
    }

    /// Twin: serves requests on the calling thread until the master shuts this
    /// twin down or goes away.
    ///
    /// This thread reads the master's socket directly and runs each request
    /// it reads; only while it runs one does the pool's leader watch the socket
    /// (so a request costs no extra thread wake-up). Returns once stopping.
    pub fn serve(&self) {
        let Some(master) = self.peer(PeerId::MASTER) else {
            return;
        };
        let Ok(waiter) = waiter::current_waiter() else {
            return;
        };
        *lock(&self.shared.serve_waiter) = Some(Arc::clone(&waiter));
        if let Err(e) = self.spawn_pool_thread() {
            tracing::error!(error = %e, "cannot start the twin's pool thread");
        }
        // The reader role, when this thread took it back before answering.
        let mut held = None;
        while !self.is_stopping() {
            let next = lock(&self.shared.serve.backlog).pop_front();
            if let Some(job) = next {
                // The socket stays out of the poll while it runs, as below.
                if held.take().is_some() {
                    self.hand_reader_on(&master);
                }
                self.serve_one(&master, job, &mut held);
                continue;
            }
            let reading = match held.take() {
                Some(guard) => Some(guard),
                None => master.reader.try_lock().ok(),
            };
            let job = match reading {
                Some(mut buf) => {
                    let _ = self.watch(&master, false);
                    let mut runnable = Vec::new();
                    while runnable.is_empty() && !self.is_stopping() && !master.is_closed() {
                        waiter.clear();
                        match sys::poll2(master.fd(), Some(waiter.fd()), false, None) {
                            Ok(ready) if ready.first => {
                                if ready.second {
                                    waiter.consume();
                                }
                                if let ReadResult::Gone =
                                    self.read_once(&master, &mut buf, &mut runnable)
                                {
                                    break;
                                }
                            }
                            Ok(ready) => {
                                if ready.second {
                                    waiter.consume();
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "poll failed");
                                break;
                            }
                        }
                    }
                    drop(buf);
                    if runnable.is_empty() {
                        self.pass_reader_role(&master);
                        None
                    } else {
                        self.hand_reader_on(&master);
                        // The socket stays out of the poll while this thread
                        // runs the requests: the next ones wait for it, unless
                        // one takes longer than SERVE_GRACE (then the pool's
                        // leader gives the socket and the backlog to the pool).
                        let first = runnable.remove(0);
                        lock(&self.shared.serve.backlog).extend(runnable);
                        Some(first)
                    }
                }
                // Another thread waits for a reply and reads meanwhile; it
                // queues other requests for the pool. Help the pool, and try
                // to read again soon.
                None => {
                    let mut pool = lock(&self.shared.pool);
                    if pool.ready.is_empty() {
                        pool = self
                            .shared
                            .pool_cv
                            .wait_timeout(pool, Duration::from_millis(20))
                            .map(|(guard, _)| guard)
                            .unwrap_or_else(|e| e.into_inner().0);
                    }
                    pool.ready.pop_front()
                }
            };
            if let Some(job) = job {
                self.serve_one(&master, job, &mut held);
            }
        }
        *lock(&self.shared.serve_waiter) = None;
        // Whatever is left goes to the pool, which fails or drops it.
        let backlog: Vec<Inbound> = lock(&self.shared.serve.backlog).drain(..).collect();
        self.enqueue(backlog);
    }

    /// Runs one request on the twin's serving thread and replies.
    fn serve_one<'a>(
        &self,
        master: &'a Arc<Peer>,
        job: Inbound,
        held: &mut Option<std::sync::MutexGuard<'a, ReadBuf>>,
    ) {
        self.serve_started();
        let (src, id, outcome) = self.handle_inbound(job);
        self.shared.serve.busy.store(false, Ordering::SeqCst);
        // Take the reader role back before the reply leaves: the next request
        // often follows it at once, and should find this thread reading rather
        // than wake the pool. Large replies are written first, so that this
        // thread never blocks writing while it is the only reader.
        self.reply_with(src, id, outcome, |bytes| {
            if bytes <= SMALL_FRAME {
                if let Ok(guard) = master.reader.try_lock() {
                    let _ = self.watch(master, false);
                    *held = Some(guard);
                }
            }
        });
    }

    /// Starts stopping: wakes every thread so that pool threads exit and
    /// pending calls fail.
    pub(crate) fn begin_stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let done = lock(&self.shared.pending).fail_all(|| CallError::ShuttingDown);
        for d in done {
            self.finish(d);
        }
        for (_, (waiter, _)) in lock(&self.shared.chains).iter() {
            waiter.wake();
        }
        if let Some(waiter) = &*lock(&self.shared.serve_waiter) {
            waiter.wake();
        }
        let _ = self.shared.waker.wake();
        self.shared.pool_cv.notify_all();
        if let (Role::Twin, Some(grace)) = (self.shared.role, self.shared.config.exit_after_stop) {
            let spawned = std::thread::Builder::new()
                .name("cpy2py-exit".into())
                .spawn(move || {
                    std::thread::sleep(grace);
                    tracing::debug!("twin did not exit after stopping; exiting now");
                    sys::exit_now(0);
                });
            if spawned.is_err() {
                sys::exit_now(0);
            }
        }
    }

    /// Closes a peer: fails every call pending on it, reaps its process (master)
    /// and tells the handler. `reason` overrides the exit status in messages;
    /// `kill` kills the twin's process first (protocol errors).
    pub(crate) fn close_peer(&self, peer: &Arc<Peer>, reason: Option<String>, kill: bool) {
        if peer.is_closed() {
            return;
        }
        let _ = self.watch(peer, false);
        let _ = peer.stream.shutdown(std::net::Shutdown::Both);
        let status = {
            let mut child = lock(&peer.child);
            match child.as_mut() {
                Some(child) => {
                    if kill {
                        let _ = child.kill();
                    }
                    Some(crate::spawn::reap(child, Duration::from_millis(500)))
                }
                None => None,
            }
        };
        let reason = match (reason, status) {
            (Some(r), Some(s)) => format!("{r}; the process {s}"),
            (Some(r), None) => r,
            (None, Some(s)) => s,
            (None, None) => "connection closed".into(),
        };
        if peer.closed.set(reason.clone()).is_err() {
            return;
        }
        tracing::debug!(peer = peer.id.0, twin = peer.twin_id(), %reason, "peer lost");
        {
            let mut gone = lock(&self.shared.gone);
            gone.insert(peer.id, (peer.twin_id().to_owned(), reason.clone()));
            // Peer ids only grow: forget the oldest beyond a bound, so that a
            // long-lived master restarting twins does not grow without end.
            while gone.len() > GONE_REMEMBERED {
                let Some(oldest) = gone.keys().min().copied() else {
                    break;
                };
                gone.remove(&oldest);
            }
        }
        {
            let mut peers = self
                .shared
                .peers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if peers.get(&peer.id).is_some_and(|p| Arc::ptr_eq(p, peer)) {
                peers.remove(&peer.id);
            }
        }
        let lost = || CallError::PeerLost {
            peer: peer.id,
            twin_id: peer.twin_id().to_owned(),
            reason: reason.clone(),
        };
        let done = if self.shared.role == Role::Twin {
            lock(&self.shared.pending).fail_all(lost)
        } else {
            lock(&self.shared.pending).fail_peer(peer.id, lost)
        };
        for d in done {
            self.finish(d);
        }
        if self.shared.role == Role::Master {
            let gone = Message::PeerGone {
                peer: peer.id,
                reason: reason.clone(),
            };
            let others: Vec<Arc<Peer>> = self
                .shared
                .peers
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            for other in others {
                let envelope = Envelope {
                    src: self.shared.me,
                    dst: other.id,
                    message: gone.clone(),
                };
                let _ = self.send_to(&other, &envelope);
            }
        }
        let handler = Arc::clone(&self.shared.handler);
        let _ = catch_unwind(AssertUnwindSafe(|| handler.peer_lost(peer.id, &reason)));
        if self.shared.role == Role::Twin {
            self.begin_stop();
        }
    }

    /// Twin: whether the master is still connected.
    pub fn master_alive(&self) -> bool {
        self.peer(PeerId::MASTER).is_some_and(|p| !p.is_closed())
    }

    /// Whether peer `id` is connected: known and not closed. Unlike
    /// [`Kernel::is_alive`] it makes no system call; a twin that died is closed
    /// as soon as its socket's end-of-file is read.
    pub fn is_connected(&self, id: PeerId) -> bool {
        self.peer(id).is_some_and(|peer| !peer.is_closed())
    }

    /// Master: whether twin `id` is connected and its process runs.
    pub fn is_alive(&self, id: PeerId) -> bool {
        let Some(peer) = self.peer(id) else {
            return false;
        };
        if peer.is_closed() {
            return false;
        }
        let exited = lock(&peer.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited {
            self.close_peer(&peer, None, false);
            return false;
        }
        true
    }

    /// Master: stops twin `id`: asks it to shut down, kills it after `grace`,
    /// reaps it and fails every call pending on it. Returns how it ended.
    pub fn stop_twin(&self, id: PeerId, grace: Duration) -> Result<String, KernelError> {
        let Some(peer) = self.peer(id) else {
            return match self.peer_gone(id) {
                Some((_, reason)) => Ok(reason),
                None => Err(KernelError::UnknownPeer(id)),
            };
        };
        tracing::debug!(peer = id.0, twin = peer.twin_id(), "stopping twin");
        let envelope = Envelope {
            src: self.shared.me,
            dst: id,
            message: Message::Shutdown,
        };
        let _ = self.send_to(&peer, &envelope);
        // Wait out the grace period (then kill); `close_peer` reports the
        // status it left.
        if let Some(child) = lock(&peer.child).as_mut() {
            crate::spawn::reap(child, grace);
        }
        self.close_peer(&peer, Some("stopped".into()), false);
        Ok(self
            .peer_gone(id)
            .map_or_else(|| "stopped".into(), |(_, r)| r))
    }

    /// Stops every twin (master) and the pool threads. Calls pending anywhere
    /// fail with [`CallError::ShuttingDown`].
    pub fn shutdown(&self, grace: Duration) {
        if self.shared.role == Role::Master {
            for (id, _) in self.peers() {
                let _ = self.stop_twin(id, grace);
            }
        }
        self.begin_stop();
    }
}

/// The name of a message's kind, for errors.
fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Hello(_) => "Hello",
        Message::Request(_) => "Request",
        Message::Reply(_) => "Reply",
        Message::Release(_) => "Release",
        Message::Shutdown => "Shutdown",
        Message::PeerGone { .. } => "PeerGone",
        Message::Retain(_) => "Retain",
    }
}

/// What one read of a peer's socket gave.
enum ReadResult {
    /// Bytes arrived (and whole frames were dispatched).
    Progress,
    /// Nothing to read now.
    Empty,
    /// The peer is gone (end of stream, error or protocol violation).
    Gone,
}

/// A reader role a waiting thread took back early (see [`PendingCall::wait`]),
/// passed on if the thread leaves without reading.
struct HeldReader<'a> {
    kernel: &'a Kernel,
    peer: &'a Arc<Peer>,
    guard: Option<std::sync::MutexGuard<'a, ReadBuf>>,
}

impl HeldReader<'_> {
    /// Gives the role up: to a waiting thread, else to the poll.
    fn release(&mut self) {
        if let Some(guard) = self.guard.take() {
            drop(guard);
            self.kernel.pass_reader_role(self.peer);
        }
    }
}

impl Drop for HeldReader<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A reader role left to a waiting thread, passed on if that thread returns
/// without reading (its reply came another way, or it gave up).
struct ReaderDuty<'a> {
    kernel: &'a Kernel,
    peer: Arc<Peer>,
    owed: bool,
}

impl Drop for ReaderDuty<'_> {
    fn drop(&mut self) {
        if self.owed {
            self.kernel.pass_reader_role(&self.peer);
        }
    }
}

impl PendingCall {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Waits up to `timeout` (forever if `None`) for the outcome. Returns
    /// `None` on timeout; the call stays pending and can be waited for again.
    ///
    /// While waiting, this thread reads the socket the reply comes from and
    /// runs requests of its own chain (nested callbacks) that arrive meanwhile.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<Result<Outcome, CallError>> {
        if self.finished {
            return Some(Err(CallError::Timeout));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let kernel = self.kernel.clone();
        let route = Arc::clone(&self.route);
        // Passes on a reader role left to this thread that it does not use.
        let mut duty = ReaderDuty {
            kernel: &kernel,
            peer: Arc::clone(&route),
            owed: false,
        };
        // The reader role, taken back before a nested request's reply left.
        let mut held = HeldReader {
            kernel: &kernel,
            peer: &route,
            guard: None,
        };
        loop {
            if let Some(result) = lock(&kernel.shared.pending).take(self.id) {
                drop(held);
                self.finish();
                return Some(result);
            }
            if let Some(inbound) = self.waiter.pop() {
                held.release();
                // A nested callback: run it, and take the reader role back
                // before its reply leaves, as the twin's serving thread does:
                // the next frame often follows at once, and should find this
                // thread reading rather than wake the pool.
                let (src, id, outcome) = kernel.handle_inbound(inbound);
                let same_socket = kernel.route(src).is_ok_and(|r| Arc::ptr_eq(&r, &route));
                kernel.reply_with(src, id, outcome, |bytes| {
                    if same_socket && bytes <= SMALL_FRAME {
                        if let Ok(guard) = route.reader.try_lock() {
                            let _ = kernel.watch(&route, false);
                            held.guard = Some(guard);
                        }
                    }
                });
                continue;
            }
            let remaining = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    Some(d - now)
                }
            };
            self.waiter.clear();
            if lock(&kernel.shared.pending).has_result(self.id) {
                continue;
            }
            if self.route.is_closed() || kernel.is_stopping() {
                // The failure sweep completes every slot; wait for it briefly.
                let _ = sys::poll2(
                    self.waiter.fd(),
                    None,
                    false,
                    Some(Duration::from_millis(5)),
                );
                if !lock(&kernel.shared.pending).has_result(self.id) {
                    lock(&kernel.shared.pending).abandon(self.id);
                    self.finish();
                    let err = if self.route.is_closed() {
                        kernel.lost_error(&self.route)
                    } else {
                        CallError::ShuttingDown
                    };
                    return Some(Err(err));
                }
                continue;
            }
            let reading = match held.guard.take() {
                Some(guard) => Some(guard),
                None => match route.reader.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(_) => {
                        // Another thread reads the socket and will hand our
                        // reply over, or its reader role when it stops reading.
                        lock(&route.standby).push(Arc::clone(&self.waiter));
                        // It may have stopped before we enlisted.
                        let retry = route.reader.try_lock().ok();
                        if retry.is_some() {
                            self.leave_standby();
                        }
                        retry
                    }
                },
            };
            match reading {
                Some(mut buf) => {
                    duty.owed = false;
                    let _ = kernel.watch(&self.route, false);
                    let mut runnable = Vec::new();
                    // Until woken for something else, timed out, or done.
                    while let Ok(ready) =
                        sys::poll2(self.route.fd(), Some(self.waiter.fd()), false, remaining)
                    {
                        if ready.second {
                            self.waiter.consume();
                        }
                        if !ready.first {
                            break;
                        }
                        let result = kernel.read_once(&self.route, &mut buf, &mut runnable);
                        if !runnable.is_empty() {
                            kernel.enqueue(std::mem::take(&mut runnable));
                        }
                        if matches!(result, ReadResult::Gone)
                            || ready.second
                            || self.waiter.has_inbound()
                            || lock(&kernel.shared.pending).has_result(self.id)
                        {
                            break;
                        }
                    }
                    drop(buf);
                    kernel.pass_reader_role(&self.route);
                    kernel.enqueue(runnable);
                }
                None => {
                    // Someone else is the reader now, and passes the role on.
                    duty.owed = false;
                    if sys::poll2(self.waiter.fd(), None, false, remaining).is_ok_and(|r| r.first) {
                        self.waiter.consume();
                    }
                    if self.leave_standby() {
                        duty.owed = true;
                    }
                }
            }
        }
    }

    /// Leaves the reply's peer's standby list; returns whether its reader
    /// role was left to this thread meanwhile (it must then read or pass the
    /// role on).
    fn leave_standby(&self) -> bool {
        let mut standby = lock(&self.route.standby);
        standby.retain(|w| !Arc::ptr_eq(w, &self.waiter));
        // Read under the lock the role is handed under.
        self.waiter.take_reader()
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.kernel.leave_chain(self.chain, &self.waiter);
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.kernel.shared.pending).abandon(self.id);
            self.finish();
        }
    }
}
