//! The ends of things: closing a peer's socket and reaping its process
//! (waiting on its pidfd), stopping a twin, stopping this kernel.

use crate::error::KernelError;
use crate::kernel::{Kernel, Role};
use crate::peer::{Peer, lock};
use crate::sys;
use cpy2py_wire::{Envelope, Message, PeerId};
use std::io;
use std::os::fd::AsFd;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Kernel {
    /// Starts stopping: every pending call fails, and every thread is woken so
    /// that pool threads exit.
    pub(crate) fn begin_stop(&self) {
        let outputs = {
            let mut proto = self.proto();
            proto.begin_stop();
            proto.take_outputs()
        };
        self.carry_out(outputs, None, &mut Vec::new());
    }

    /// The core's [`crate::proto::Event::Stop`]: wakes every thread that may be
    /// blocked in the kernel.
    pub(crate) fn wake_for_stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiters = self.proto().chain_waiters();
        for waiter in waiters {
            waiter.wake();
        }
        if let Some(waiter) = &*lock(&self.shared.serve_waiter) {
            waiter.wake();
        }
        // A serving thread blocked reading the master's socket sees its end
        // (the fence pairs with the one in `Kernel::read_once`).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.shared.serve.waiting_in_read.load(Ordering::SeqCst) {
            if let Some(master) = self.peer(cpy2py_wire::PeerId::MASTER) {
                master.transport.interrupt_wait();
            }
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

    /// Closes a peer: its socket, its process (master: reaped, killed first
    /// with `kill`, for protocol errors), then the core fails every call
    /// pending on it and tells the others. `reason` overrides the exit status
    /// in messages.
    pub(crate) fn close_peer(&self, peer: &Arc<Peer>, reason: Option<String>, kill: bool) {
        if peer.is_closed() {
            return;
        }
        let _ = self.watch(peer, false);
        peer.transport.shutdown();
        let status = {
            let mut child = lock(&peer.child);
            match child.as_mut() {
                Some(child) => {
                    if kill {
                        let _ = child.kill();
                    }
                    Some(reap(child, Duration::from_millis(500)))
                }
                None => None,
            }
        };
        let unexpected = reason.is_none();
        let mut reason = match (reason, status) {
            (Some(r), Some(s)) => format!("{r}; the process {s}"),
            (Some(r), None) => r,
            (None, Some(s)) => s,
            (None, None) => "connection closed".into(),
        };
        if let Some(stdio) = peer.stdio.get() {
            if let Some(location) = &stdio.location {
                reason = format!("{reason}, on {location}");
            }
            // Whatever carried the stream may have said why it ended (`ssh`:
            // "Timeout, server ... not responding"); its stderr ends with it.
            if unexpected {
                if let Some(last) = stdio.relay.tail(Duration::from_millis(300)).last() {
                    reason = format!("{reason}; its last words on stderr: {last}");
                }
            }
        }
        if peer.closed.set(reason.clone()).is_err() {
            return;
        }
        tracing::debug!(peer = peer.id.0, twin = peer.twin_id(), %reason, "peer lost");
        let outputs = {
            let mut proto = self.proto();
            proto.handle_closed(peer.id, reason);
            proto.take_outputs()
        };
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
        self.carry_out(outputs, None, &mut Vec::new());
    }

    /// Twin: whether the master is still connected.
    pub fn master_alive(&self) -> bool {
        self.is_connected(PeerId::MASTER)
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
            reap(child, grace);
        }
        self.close_peer(&peer, Some("stopped".into()), false);
        Ok(self
            .peer_gone(id)
            .map_or_else(|| "stopped".into(), |(_, r)| r))
    }

    /// Stops every twin (master) and the pool threads. Calls pending anywhere
    /// fail with [`crate::CallError::ShuttingDown`].
    pub fn shutdown(&self, grace: Duration) {
        if self.shared.role == Role::Master {
            for (id, _) in self.peers() {
                let _ = self.stop_twin(id, grace);
            }
        }
        self.begin_stop();
    }
}

/// Waits up to `grace` for `child` to exit, then kills it; always reaps it.
/// Returns how it ended. Waits on the process's pidfd, which becomes readable
/// when it exits (no sleep-and-retry).
pub(crate) fn reap(child: &mut Child, grace: Duration) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return sys::describe_status(status);
    }
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| io::Error::other("no pid"))
        .and_then(|pid| {
            Ok(rustix::process::pidfd_open(
                pid,
                rustix::process::PidfdFlags::empty(),
            )?)
        });
    match pidfd {
        // A child not yet reaped keeps its pid: the pidfd is this process's.
        Ok(pidfd) => {
            let deadline = Instant::now() + grace;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let exited = sys::poll2(pidfd.as_fd(), None, false, Some(left))
                    .is_ok_and(|ready| ready.first);
                if exited || left.is_zero() {
                    break;
                }
            }
        }
        Err(error) => {
            tracing::debug!(pid = child.id(), %error, "no pidfd; waiting by polling");
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    match child.try_wait() {
        Ok(Some(status)) => sys::describe_status(status),
        Ok(None) => {
            tracing::debug!(pid = child.id(), "twin did not exit in time; killing it");
            let _ = child.kill();
            match child.wait() {
                Ok(status) => sys::describe_status(status),
                Err(e) => format!("could not be reaped: {e}"),
            }
        }
        Err(e) => format!("could not be reaped: {e}"),
    }
}
