//! Who reads a peer's socket, and reading it.
//!
//! Each peer's socket has one *reader* at a time (its `reader` lock). Two kinds
//! of threads read:
//!
//! * A thread waiting for a reply takes the reader role of the peer the reply
//!   comes from, takes that socket out of the poll, and blocks in `poll(2)` on
//!   the socket and its own eventfd. The reply wakes it directly: no other
//!   thread is woken on the hot path (`call.rs`).
//! * Otherwise the pool's *leader* thread, blocked in the mio poll, reads
//!   (`pool.rs`).
//!
//! Every whole frame read goes to the protocol core, and this thread carries
//! out what the core asks for before it reads on.

use crate::kernel::{Kernel, Role};
use crate::peer::{Peer, ReadBuf, lock};
use crate::proto::{Inbound, Violation};
use crate::serve::SERVE_GRACE;
use crate::sys;
use mio::Interest;
use mio::Token;
use mio::unix::SourceFd;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Duration;

/// How long after a peer last sent a request for the pool (not a reply, not a
/// callback of a waiting thread) its socket goes straight back to the poll
/// when a thread stops reading it, rather than after up to `SERVE_GRACE`.
const UNSOLICITED_RECENT: Duration = Duration::from_millis(100);

/// What one read of a peer's socket gave.
pub(crate) enum ReadResult {
    /// Bytes arrived (and whole frames were dispatched).
    Progress,
    /// Nothing to read now.
    Empty,
    /// The peer is gone (end of stream, error or protocol violation).
    Gone,
}

impl Kernel {
    /// Registers or deregisters a peer's socket with the poll.
    pub(crate) fn watch(&self, peer: &Peer, on: bool) -> io::Result<()> {
        let mut watched = lock(&peer.watched);
        if *watched == on || (on && peer.is_closed()) {
            return Ok(());
        }
        let fd = peer.fd().as_raw_fd();
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
    pub(crate) fn rewatch(&self, peer: &Peer) {
        if let Err(e) = self.watch(peer, true) {
            tracing::debug!(peer = peer.id.0, error = %e, "re-registering failed");
            return;
        }
        if peer.missed.swap(false, Ordering::AcqRel) && !peer.is_closed() {
            // The leader skipped an edge while we held the reader role: re-arm
            // so that data still unread raises a new event.
            let fd = peer.fd().as_raw_fd();
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
    pub(crate) fn hand_reader_on(&self, peer: &Peer) -> bool {
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
    pub(crate) fn pass_reader_role(&self, peer: &Peer) {
        if self.hand_reader_on(peer) {
            return;
        }
        let unattended = match self.shared.role {
            // The serving thread reads the master's socket again when its
            // request ends; its own timer covers a long request.
            Role::Twin => peer.id == cpy2py_wire::PeerId::MASTER && self.shared.serve.is_busy(),
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
    pub(crate) fn watch_unattended(&self) {
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
    ///
    /// With `waiting`, the read blocks until something arrives (only where the
    /// peer's transport can, see `Transport::can_wait_in_read`), and the flag
    /// is set while it does: a stop ends such a read (`Kernel::wake_for_stop`).
    pub(crate) fn read_once(
        &self,
        peer: &Arc<Peer>,
        buf: &mut ReadBuf,
        runnable: &mut Vec<Inbound>,
        waiting: Option<&AtomicBool>,
    ) -> ReadResult {
        let read = match waiting {
            None => buf.read_from(&*peer.transport, false),
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                // Pairs with the fence in `wake_for_stop`: either it sees the
                // flag, or this thread sees that it is stopping.
                fence(Ordering::SeqCst);
                let read = if self.is_stopping() {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    buf.read_from(&*peer.transport, true)
                };
                flag.store(false, Ordering::SeqCst);
                read
            }
        };
        match read {
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
            let next = match peer.recv_arena.get() {
                // Places in the peer's arena resolve while its frames decode.
                Some(link) => cpy2py_wire::with_arena(Arc::clone(link) as _, || {
                    buf.next_frame(&self.shared.decoder, self.shared.me, forward)
                }),
                None => buf.next_frame(&self.shared.decoder, self.shared.me, forward),
            };
            let violation = match next {
                Ok(None) => return ReadResult::Progress,
                Ok(Some(incoming)) => {
                    let handled = {
                        let mut proto = self.proto();
                        proto
                            .handle_frame(peer.id, incoming)
                            .map(|()| proto.take_outputs())
                    };
                    match handled {
                        Ok(outputs) => {
                            self.carry_out(outputs, Some(peer), runnable);
                            continue;
                        }
                        Err(violation) => violation,
                    }
                }
                Err(e) => Violation::Corrupt(e.to_string()),
            };
            tracing::error!(peer = peer.id.0, twin = peer.twin_id(), %violation,
                "protocol violation by peer; closing it");
            self.close_peer(peer, Some(format!("protocol error: {violation}")), true);
            return ReadResult::Gone;
        }
    }

    /// Reads `peer` until it has nothing more (the leader's way).
    pub(crate) fn drain(&self, peer: &Arc<Peer>, runnable: &mut Vec<Inbound>) {
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
        while let ReadResult::Progress = self.read_once(peer, &mut buf, runnable, None) {}
        drop(buf);
        // A thread that waits for a reply reads it sooner itself than the poll
        // does for it (the socket stays registered: the poll is this thread's).
        self.hand_reader_on(peer);
    }
}

/// A reader role a waiting thread took back early (see `PendingCall::wait`),
/// passed on if the thread leaves without reading.
pub(crate) struct HeldReader<'a> {
    pub(crate) kernel: &'a Kernel,
    pub(crate) peer: &'a Arc<Peer>,
    pub(crate) guard: Option<std::sync::MutexGuard<'a, ReadBuf>>,
}

impl HeldReader<'_> {
    /// Gives the role up: to a waiting thread, else to the poll.
    pub(crate) fn release(&mut self) {
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
pub(crate) struct ReaderDuty<'a> {
    pub(crate) kernel: &'a Kernel,
    pub(crate) peer: Arc<Peer>,
    pub(crate) owed: bool,
}

impl Drop for ReaderDuty<'_> {
    fn drop(&mut self) {
        if self.owed {
            self.kernel.pass_reader_role(&self.peer);
        }
    }
}
