//! A twin's serving thread: the thread that called [`Kernel::serve`] reads the
//! master's socket itself and runs each request it reads, so that a request
//! costs no extra thread wake-up. Between requests it blocks in `recv` itself
//! where the transport allows (a socketpair): a request then costs this side
//! a `recv` and a `sendmsg`, as a raw ping-pong does. Only while it runs one
//! does the pool's leader watch the socket, and a timer lets the pool take over
//! the requests behind one that takes long.

use crate::kernel::{Kernel, SMALL_FRAME};
use crate::peer::{Peer, ReadBuf, lock};
use crate::proto::Inbound;
use crate::reader::ReadResult;
use crate::sys;
use crate::waiter;
use cpy2py_wire::PeerId;
use mio::Token;
use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The poll token of the twin's serving-thread timer (see `ServeState`).
pub(crate) const SERVE_TIMER: Token = Token(usize::MAX - 1);

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
pub(crate) const SERVE_GRACE: Duration = Duration::from_millis(5);

/// What the pool's leader watches of a twin's serving thread.
///
/// A one-shot timer in the leader's poll expires `SERVE_GRACE` after the
/// serving thread last set it. The serving thread sets it when it starts a
/// request, at most once per half grace (one system call per 2.5 ms, none per
/// request), so while requests keep finishing the timer never expires and the
/// leader sleeps. (Session 2's leader looked every 1 ms instead; on one CPU
/// each look preempted a running call, the slowest 1.5% of all calls.)
pub(crate) struct ServeState {
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
    /// The serving thread is in (or about to enter) a read that waits for the
    /// master's next message: a stop must end that read.
    pub(crate) waiting_in_read: AtomicBool,
}

impl ServeState {
    pub(crate) fn new() -> io::Result<ServeState> {
        Ok(ServeState {
            started: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            armed_for: AtomicU64::new(0),
            watchdog: Watchdog::new()?,
            backlog: Mutex::new(VecDeque::new()),
            waiting_in_read: AtomicBool::new(false),
        })
    }

    /// The timer's fd, for the leader's poll.
    pub(crate) fn timer_fd(&self) -> BorrowedFd<'_> {
        self.watchdog.timer.fd()
    }

    /// Whether the serving thread runs a request now.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
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

impl Kernel {
    /// The leader's look at a twin's serving thread when its timer expires:
    /// if the request it was set for still runs, that request has taken
    /// longer than `SERVE_GRACE` and the pool takes over the socket and the
    /// backlog. A later request, started within half a grace of the setting,
    /// has run 2.5 to 5 ms by then and gets another half grace first.
    pub(crate) fn look_at_serving_thread(&self) {
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
        let can_wait = master.transport.can_wait_in_read();
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
                        if can_wait {
                            // Block in the read itself: polling first costs
                            // a system call per request. Only a stop needs to
                            // wake this thread, and it ends the wait. Measured
                            // here: unpinned 5-10 µs less per call (about 50
                            // against 56-60 µs), but 1-2 µs more with both
                            // processes pinned to one CPU, where a wake-up
                            // from `recv` hands over more slowly than one
                            // from `ppoll`.
                            let waiting = Some(&self.shared.serve.waiting_in_read);
                            if let ReadResult::Gone =
                                self.read_once(&master, &mut buf, &mut runnable, waiting)
                            {
                                break;
                            }
                            continue;
                        }
                        waiter.clear();
                        match sys::poll2(master.fd(), Some(waiter.fd()), false, None) {
                            Ok(ready) if ready.first => {
                                if ready.second {
                                    waiter.consume();
                                }
                                if let ReadResult::Gone =
                                    self.read_once(&master, &mut buf, &mut runnable, None)
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
                    pool.take()
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
}
