//! The leader/follower pool around the one mio poll: the leader polls and
//! reads; when it reads a request nobody waits for, it hands leadership to a
//! follower (or a new thread) and runs the request itself, so that a request
//! runs on the thread that read it.

use crate::handler::RequestContext;
use crate::kernel::{Kernel, STALL_TIMER, UNATTENDED_TIMER, WAKER};
use crate::peer::lock;
use crate::proto::Inbound;
use crate::serve::SERVE_TIMER;
use crate::waiter::ChainGuard;
use cpy2py_wire::{Failure, Outcome, PeerId, Request, RequestId};
use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who does what in the pool.
#[derive(Default)]
pub(crate) struct Pool {
    /// Whether a thread leads (polls).
    pub(crate) leader: bool,
    /// Threads waiting to lead or for a ready request.
    pub(crate) idle: usize,
    /// Threads in the pool.
    pub(crate) threads: usize,
    /// Requests read and not yet taken by a thread.
    pub(crate) ready: VecDeque<Inbound>,
    /// Requests taken from `ready` so far.
    pub(crate) taken: u64,
    /// `taken` when the stall timer was set, if it is: queued requests have
    /// stalled if none was taken by the time it expires.
    pub(crate) stalled: Option<u64>,
}

impl Pool {
    /// The next queued request, counted as taken.
    pub(crate) fn take(&mut self) -> Option<Inbound> {
        let job = self.ready.pop_front();
        self.taken += u64::from(job.is_some());
        job
    }

    /// Threads to start for `wanted` more threads' worth of work: all of them
    /// while the pool has fewer than `eager` threads, else none (the stall
    /// timer starts them one by one if the work does not move).
    fn allowance(&self, wanted: usize, eager: usize) -> usize {
        wanted.min(eager.saturating_sub(self.threads))
    }
}

impl Kernel {
    /// Runs a request on this thread and sends its reply.
    pub(crate) fn run_inbound(&self, inbound: Inbound) {
        let (src, id, outcome) = self.handle_inbound(inbound);
        self.reply(src, id, outcome);
    }

    /// Runs a request on this thread; returns where its reply goes.
    pub(crate) fn handle_inbound(&self, inbound: Inbound) -> (PeerId, RequestId, Outcome) {
        let Inbound { src, request } = inbound;
        let Request {
            id,
            chain,
            op,
            time_left_us,
        } = request;
        // From when it runs: time spent queued here is not counted.
        let deadline =
            time_left_us.and_then(|us| Instant::now().checked_add(Duration::from_micros(us)));
        let _span = tracing::trace_span!(
            "request",
            src = src.0,
            id = id.index,
            chain.origin = chain.origin.0,
            chain.thread = chain.thread
        )
        .entered();
        let outcome = {
            let _chain = ChainGuard::enter(chain, deadline);
            let ctx = RequestContext {
                kernel: self,
                src,
                chain,
                id,
                deadline,
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
                    Outcome::Failed(Failure::Panicked { message })
                }
            }
        };
        (src, id, outcome)
    }

    /// Hands requests to the pool.
    pub(crate) fn enqueue(&self, work: Vec<Inbound>) {
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
            let wanted = n.saturating_sub(pool.idle);
            let spawn = pool.allowance(wanted, self.shared.config.eager_workers);
            if spawn < wanted {
                self.watch_for_stall(&mut pool);
            }
            spawn
        };
        for _ in 0..spawn {
            if let Err(e) = self.spawn_pool_thread() {
                tracing::error!(error = %e, "cannot start a pool thread");
            }
        }
    }

    /// Sets the stall timer unless it is set: when it expires, a thread
    /// starts if no queued request was taken meanwhile.
    fn watch_for_stall(&self, pool: &mut Pool) {
        if pool.stalled.is_none() {
            pool.stalled = Some(pool.taken);
            self.shared.stall_timer.arm(self.shared.config.stall);
        }
    }

    /// The stall timer expired (the leader's poll): one more thread if the
    /// queue did not move, and the timer again while requests wait.
    fn look_at_stall(&self) {
        self.shared.stall_timer.consume();
        let spawn = {
            let mut pool = lock(&self.shared.pool);
            let Some(armed_at) = pool.stalled.take() else {
                return;
            };
            if pool.ready.is_empty() || self.is_stopping() {
                return;
            }
            let stuck = pool.taken == armed_at
                && pool.idle == 0
                && pool.threads < self.shared.config.max_workers;
            self.watch_for_stall(&mut pool);
            stuck
        };
        if spawn {
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
    pub(crate) fn pool_loop(&self, main: bool) {
        loop {
            let job = {
                let mut pool = lock(&self.shared.pool);
                loop {
                    if self.is_stopping() {
                        pool.threads -= 1;
                        self.shared.pool_cv.notify_all();
                        return;
                    }
                    // Someone must read (and watch the stall timer) while
                    // the others run what was read.
                    if !pool.leader {
                        pool.leader = true;
                        // What waits is for the others: wake one if any is
                        // idle, else watch that it does not stall.
                        let waiting = pool.ready.len();
                        for _ in 0..waiting.min(pool.idle) {
                            self.shared.pool_cv.notify_one();
                        }
                        if waiting > pool.idle {
                            self.watch_for_stall(&mut pool);
                        }
                        break None;
                    }
                    if let Some(job) = pool.take() {
                        break Some(job);
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
                if event.token() == STALL_TIMER {
                    self.look_at_stall();
                    continue;
                }
                let id = PeerId(event.token().0 as u32);
                if let Some(peer) = self.peer(id) {
                    self.drain(&peer, &mut runnable);
                }
            }
            if !runnable.is_empty() {
                if self.may_step_down() {
                    drop(guard);
                    let first = runnable.remove(0);
                    self.step_down(runnable);
                    return Some(first);
                }
                // Every thread is busy and the pool at its eager size: keep
                // reading, and leave the requests to the threads that finish
                // first (or to the stall timer).
                self.enqueue(std::mem::take(&mut runnable));
            }
        }
    }

    /// Whether the leader may run a request itself: another thread can lead
    /// (an idle one, or a new one within the eager size).
    fn may_step_down(&self) -> bool {
        let pool = lock(&self.shared.pool);
        pool.idle > 0 || pool.threads < self.shared.config.eager_workers
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
                // A new leader always; workers for the rest within bounds.
                let wanted = n.saturating_sub(pool.idle);
                let leader = usize::from(pool.idle == 0);
                let workers = pool.allowance(
                    wanted - leader.min(wanted),
                    self.shared.config.eager_workers,
                );
                if leader + workers < wanted {
                    self.watch_for_stall(&mut pool);
                }
                leader + workers
            }
        };
        for _ in 0..needed {
            if let Err(e) = self.spawn_pool_thread() {
                tracing::error!(error = %e, "cannot start a pool thread");
            }
        }
    }
}
