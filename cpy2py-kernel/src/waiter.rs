//! Per-thread state: the eventfd that wakes a thread blocked in the kernel, the
//! requests handed to it (reentrant callbacks), and the chain it is on.

use crate::proto::Inbound;
use crate::sys;
use cpy2py_wire::{ChainId, PeerId};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// What a thread blocked in the kernel can be woken for.
pub(crate) struct Waiter {
    efd: OwnedFd,
    /// Whether the eventfd holds an unconsumed wake-up, so that neither side
    /// makes a syscall when there is nothing to signal or to clear.
    signaled: AtomicBool,
    /// Set (under the peer's `standby` lock) when a thread that stopped
    /// reading a peer's socket left its reader role to this one.
    reader_handoff: AtomicBool,
    inbox: Mutex<VecDeque<Inbound>>,
}

impl Waiter {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Waiter {
            efd: sys::eventfd()?,
            signaled: AtomicBool::new(false),
            reader_handoff: AtomicBool::new(false),
            inbox: Mutex::new(VecDeque::new()),
        })
    }

    /// Wakes the thread (if it is blocked) so that it looks at its state again.
    pub(crate) fn wake(&self) {
        // Write first, flag second: `clear` drains only after seeing the flag,
        // so it can never reset the flag and leave the fd readable for good.
        sys::eventfd_signal(&self.efd);
        self.signaled.store(true, Ordering::Release);
    }

    /// Clears pending wake-ups; call before re-checking state, then block.
    pub(crate) fn clear(&self) {
        if self.signaled.swap(false, Ordering::AcqRel) {
            sys::eventfd_drain(&self.efd);
        }
    }

    /// Drains the eventfd after `poll` saw it readable. Unlike [`clear`], this
    /// does not trust the flag: a waker between its write and its flag store
    /// would otherwise leave the fd readable and this thread spinning on it
    /// until the waker runs again (a whole scheduler tick when it is
    /// preempted on a busy machine).
    ///
    /// [`clear`]: Waiter::clear
    pub(crate) fn consume(&self) {
        self.signaled.store(false, Ordering::Release);
        sys::eventfd_drain(&self.efd);
    }

    /// Leaves a reader role to this thread (see `Kernel::hand_reader_on`).
    pub(crate) fn hand_reader(&self) {
        self.reader_handoff.store(true, Ordering::SeqCst);
    }

    /// Whether a reader role was left to this thread since the last call.
    pub(crate) fn take_reader(&self) -> bool {
        self.reader_handoff.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }

    /// Hands a request to this thread and wakes it.
    pub(crate) fn push(&self, inbound: Inbound) {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(inbound);
        self.wake();
    }

    /// Hands a request to this very thread, which is reading a socket and
    /// looks at its inbox after each read: no wake-up call needed.
    pub(crate) fn push_quiet(&self, inbound: Inbound) {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(inbound);
    }

    /// Whether a request waits in the inbox.
    pub(crate) fn has_inbound(&self) -> bool {
        !self
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The next request handed to this thread.
    pub(crate) fn pop(&self) -> Option<Inbound> {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

struct ThreadState {
    waiter: RefCell<Option<Arc<Waiter>>>,
    number: Cell<u64>,
    /// The chains of the requests this thread runs, innermost last, each with
    /// its deadline.
    chains: RefCell<Vec<(ChainId, Option<Instant>)>>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState { waiter: RefCell::new(None), number: Cell::new(0), chains: RefCell::new(Vec::new()) }
    };
}

/// This thread's waiter, created on first use.
pub(crate) fn current_waiter() -> io::Result<Arc<Waiter>> {
    THREAD.with(|t| {
        let mut slot = t.waiter.borrow_mut();
        if let Some(w) = &*slot {
            return Ok(Arc::clone(w));
        }
        let w = Arc::new(Waiter::new()?);
        *slot = Some(Arc::clone(&w));
        Ok(w)
    })
}

/// Whether `waiter` belongs to the calling thread.
pub(crate) fn is_current(waiter: &Arc<Waiter>) -> bool {
    THREAD.with(|t| {
        t.waiter
            .borrow()
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, waiter))
    })
}

/// The chain this thread is on: the one of the request it is running, or its
/// own (started here, in peer `me`).
pub(crate) fn current_chain(me: PeerId) -> ChainId {
    THREAD.with(|t| {
        if let Some((chain, _)) = t.chains.borrow().last() {
            return *chain;
        }
        let mut number = t.number.get();
        if number == 0 {
            number = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            t.number.set(number);
        }
        ChainId {
            origin: me,
            thread: number,
        }
    })
}

/// The deadline of the request this thread serves (the innermost, if it
/// serves nested ones), if it has one: calls made from here inherit it.
pub fn current_deadline() -> Option<Instant> {
    THREAD.with(|t| t.chains.borrow().last().and_then(|(_, deadline)| *deadline))
}

/// The sooner of two deadlines (`None`: never).
pub(crate) fn sooner(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A chain of its own for a request no thread waits for: requests made back
/// on it cannot go to a waiting thread, so they run on the pool.
pub(crate) fn detached_chain(me: PeerId) -> ChainId {
    ChainId {
        origin: me,
        thread: NEXT_THREAD.fetch_add(1, Ordering::Relaxed),
    }
}

/// While alive, this thread is on `chain` (it runs a request of that chain),
/// and its calls inherit that request's deadline.
pub(crate) struct ChainGuard(());

impl ChainGuard {
    pub(crate) fn enter(chain: ChainId, deadline: Option<Instant>) -> ChainGuard {
        THREAD.with(|t| t.chains.borrow_mut().push((chain, deadline)));
        ChainGuard(())
    }
}

impl Drop for ChainGuard {
    fn drop(&mut self) {
        THREAD.with(|t| {
            t.chains.borrow_mut().pop();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn readable(waiter: &Waiter) -> bool {
        sys::poll2(waiter.fd(), None, false, Some(Duration::ZERO)).is_ok_and(|r| r.first)
    }

    #[test]
    fn clear_drains_a_wake_up() {
        let waiter = Waiter::new().expect("eventfd");
        waiter.wake();
        assert!(readable(&waiter));
        waiter.clear();
        assert!(!readable(&waiter));
    }

    #[test]
    fn consume_drains_a_wake_up_whose_flag_is_not_stored_yet() {
        let waiter = Waiter::new().expect("eventfd");
        // A waker preempted between its eventfd write and its flag store.
        sys::eventfd_signal(&waiter.efd);
        waiter.clear(); // trusts the flag: the fd stays readable
        assert!(readable(&waiter));
        waiter.consume();
        assert!(!readable(&waiter));
        // The late flag store then costs one empty read, not a spin.
        waiter.signaled.store(true, Ordering::Release);
        waiter.clear();
        assert!(!readable(&waiter));
    }

    #[test]
    fn a_reader_role_is_taken_once() {
        let waiter = Waiter::new().expect("eventfd");
        assert!(!waiter.take_reader());
        waiter.hand_reader();
        assert!(waiter.take_reader());
        assert!(!waiter.take_reader());
    }
}
