//! A calling thread: submitting a request and waiting for its reply, reading
//! the reply's socket itself and running nested callbacks of its own chain
//! meanwhile.

use crate::error::CallError;
use crate::kernel::{Kernel, Registered, SMALL_FRAME};
use crate::peer::{Peer, lock};
use crate::proto::Completion;
use crate::reader::{HeldReader, ReadResult, ReaderDuty};
use crate::sys;
use crate::waiter::{self, Waiter};
use cpy2py_wire::{ChainId, Op, Outcome, PeerId, RequestId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request sent and not yet answered. Dropping it abandons the request: a
/// reply arriving later is discarded.
#[must_use = "a call is abandoned when its PendingCall is dropped"]
pub struct PendingCall {
    kernel: Kernel,
    id: RequestId,
    route: Arc<Peer>,
    chain: ChainId,
    waiter: Arc<Waiter>,
    /// When the requester stops waiting (its own or an inherited deadline).
    deadline: Option<Instant>,
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

impl Kernel {
    /// Sends `request` to `dst` and returns a handle to wait for its reply on
    /// this thread. The request continues this thread's chain and inherits
    /// the deadline of the request this thread runs, if any.
    pub fn submit(&self, dst: PeerId, op: Op) -> Result<PendingCall, CallError> {
        self.submit_inner(dst, op, None, false)
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
        self.submit_and_wait_until(dst, op, None, first_wait)
    }

    /// [`Kernel::submit_and_wait`] for a request due by `deadline`, which
    /// travels with it: requests `dst` makes on its behalf inherit it. Waiting
    /// never goes past it (see [`PendingCall::deadline`]).
    pub fn submit_and_wait_until(
        &self,
        dst: PeerId,
        op: Op,
        deadline: Option<Instant>,
        first_wait: Option<Duration>,
    ) -> Result<(PendingCall, Option<Result<Outcome, CallError>>), CallError> {
        let mut pending = self.submit_inner(dst, op, deadline, true)?;
        let result = pending.wait(first_wait);
        Ok((pending, result))
    }

    fn submit_inner(
        &self,
        dst: PeerId,
        op: Op,
        deadline: Option<Instant>,
        read_first: bool,
    ) -> Result<PendingCall, CallError> {
        let waiter = waiter::current_waiter().map_err(|_| CallError::ShuttingDown)?;
        let chain = waiter::current_chain(self.shared.me);
        let registered = self.register(
            dst,
            chain,
            op,
            deadline,
            Completion::Thread(Arc::clone(&waiter)),
        )?;
        let Registered {
            route,
            id,
            envelope,
            deadline,
        } = registered;
        let call = PendingCall {
            kernel: self.clone(),
            id,
            route: Arc::clone(&route),
            chain,
            waiter,
            deadline,
            finished: false,
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
        Ok(call)
    }

    /// Calls `op` on `dst` and waits for the outcome (at most `timeout`,
    /// which travels with the request as its deadline).
    pub fn call(
        &self,
        dst: PeerId,
        op: Op,
        timeout: Option<Duration>,
    ) -> Result<Outcome, CallError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match self.submit_and_wait_until(dst, op, deadline, timeout)? {
            (_, Some(result)) => result,
            (_, None) => Err(CallError::Timeout),
        }
    }

    /// This thread stopped waiting on `chain` for one of its calls.
    fn leave_chain(&self, chain: ChainId, waiter: &Arc<Waiter>) {
        self.proto().leave_chain(chain);
        // Requests handed to this thread after its last check go to the pool.
        let mut leftovers = Vec::new();
        while let Some(inbound) = waiter.pop() {
            leftovers.push(inbound);
        }
        if !leftovers.is_empty() {
            self.enqueue(leftovers);
        }
    }
}

impl PendingCall {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// When its requester stops waiting: the deadline it was submitted with or
    /// the one it inherited, whichever is sooner. [`PendingCall::wait`] never
    /// waits past it.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Waits up to `timeout` (forever if `None`, never past
    /// [`PendingCall::deadline`]) for the outcome. Returns `None` on timeout;
    /// the call stays pending and can be waited for again.
    ///
    /// While waiting, this thread reads the socket the reply comes from and
    /// runs requests of its own chain (nested callbacks) that arrive meanwhile.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<Result<Outcome, CallError>> {
        if self.finished {
            return Some(Err(CallError::Timeout));
        }
        let own = timeout.and_then(|t| Instant::now().checked_add(t));
        let deadline = waiter::sooner(own, self.deadline);
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
            let taken = kernel.proto().take(self.id);
            if let Some(result) = taken {
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
            if kernel.proto().has_result(self.id) {
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
                if !kernel.proto().has_result(self.id) {
                    kernel.proto().abandon(self.id);
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
                    // Until woken for something else, timed out, or done. The
                    // time left shrinks as frames for others keep coming.
                    loop {
                        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                        if left.is_some_and(|l| l.is_zero()) {
                            break;
                        }
                        let Ok(ready) =
                            sys::poll2(self.route.fd(), Some(self.waiter.fd()), false, left)
                        else {
                            break;
                        };
                        if ready.second {
                            self.waiter.consume();
                        }
                        if !ready.first {
                            break;
                        }
                        let result = kernel.read_once(&self.route, &mut buf, &mut runnable, None);
                        if !runnable.is_empty() {
                            kernel.enqueue(std::mem::take(&mut runnable));
                        }
                        if matches!(result, ReadResult::Gone)
                            || ready.second
                            || self.waiter.has_inbound()
                            || kernel.proto().has_result(self.id)
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
            self.kernel.proto().abandon(self.id);
            self.finish();
        }
    }
}
