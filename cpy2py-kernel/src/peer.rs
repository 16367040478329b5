//! One connected peer: its socket, read buffer, write lock and process.

use cpy2py_wire::{FrameDecoder, HEADER_LEN, Hello, PeerId, Splice, WireError, peek_route};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::arena::{ArenaLink, SendArena};
use crate::proto::Incoming;
use crate::stdio::StderrRelay;
use crate::sys;
use crate::transport::{self, Transport};
use crate::waiter::Waiter;

/// Smallest free space kept at the end of the read buffer before a read.
const READ_CHUNK: usize = 64 * 1024;

/// Frames from this size on are read into a buffer of their own, which the
/// decoded message then shares (its large byte strings are views of it).
const BIG_FRAME: usize = READ_CHUNK;

/// Large read buffers kept for the next large frame: at most this many...
const SPARE_BUFFERS: usize = 2;
/// ...of at most this capacity each, so that at most 32 MiB stays reserved.
const SPARE_MAX: usize = 16 << 20;

/// Buffers of finished large frames, for the next ones. A fresh buffer costs a
/// page fault per 4 KiB page as it fills (256 for 1 MiB, about a third of the
/// time of reading it here), and freeing it made glibc give its pages back
/// (`brk`/`munmap`) after every frame.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// One buffer above `SPARE_MAX`, kept with its pages lazily freed
/// (`MADV_FREE`): the kernel takes them back under memory pressure, and
/// otherwise the next huge frame is read into pages already mapped. Reading a
/// 64 MiB frame into fresh memory took 3 to 5 times as long as into mapped
/// pages here, even with huge pages (page faults and zeroing).
static HUGE_SPARE: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// An empty buffer of at least `total` bytes of capacity: the smallest spare
/// one that fits, or a new one.
fn big_buffer(total: usize) -> Vec<u8> {
    if total > SPARE_MAX {
        let mut huge = HUGE_SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        // Not for a frame much smaller than it: the frame's views may keep it
        // for long, and a fresh buffer of the right size costs less memory.
        if huge
            .as_ref()
            .is_some_and(|buf| (total..=total.saturating_mul(2)).contains(&buf.capacity()))
        {
            if let Some(buf) = huge.take() {
                return buf;
            }
        }
        drop(huge);
        return fresh_buffer(total);
    }
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    let best = spare
        .iter()
        .enumerate()
        .filter(|(_, buf)| buf.capacity() >= total)
        .min_by_key(|(_, buf)| buf.capacity())
        .map(|(at, _)| at);
    match best {
        Some(at) => spare.swap_remove(at),
        None => {
            drop(spare);
            fresh_buffer(total)
        }
    }
}

/// A newly allocated empty buffer of `total` bytes of capacity.
fn fresh_buffer(total: usize) -> Vec<u8> {
    let buf = Vec::with_capacity(total);
    if total >= HUGE_FROM {
        sys::advise_huge_pages(buf.as_ptr(), buf.capacity());
    }
    buf
}

/// Fresh buffers from this size on ask for transparent huge pages: a 64 MiB
/// frame then costs 32 page faults as it is read instead of 16,384.
const HUGE_FROM: usize = 4 << 20;

/// Keeps `buf` for a later large frame if it is worth keeping, dropping the
/// smallest spare buffer when there are too many.
pub(crate) fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() < BIG_FRAME {
        return;
    }
    buf.clear();
    if buf.capacity() > SPARE_MAX {
        sys::advise_lazy_free(buf.as_ptr(), buf.capacity());
        // The newest replaces the one kept: it is the likeliest size next.
        let older = HUGE_SPARE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(buf);
        drop(older); // freed outside the lock
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    spare.push(buf);
    if spare.len() > SPARE_BUFFERS {
        if let Some((at, _)) = spare
            .iter()
            .enumerate()
            .min_by_key(|(_, buf)| buf.capacity())
        {
            let smallest = spare.swap_remove(at);
            drop(spare); // free outside the lock
            drop(smallest);
        }
    }
}

/// A large frame's buffer while a decoded message's byte strings are views of
/// it; recycled when the last view goes.
struct BigFrame(Vec<u8>);

impl AsRef<[u8]> for BigFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl cpy2py_wire::Lend for BigFrame {
    fn lend_mut(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.0)
    }
}

impl Drop for BigFrame {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

/// Bytes read from a peer and not yet decoded.
pub(crate) struct ReadBuf {
    /// Bytes read so far: `buf[start..]` is not decoded yet.
    buf: Vec<u8>,
    start: usize,
    /// A frame of at least `BIG_FRAME` bytes being read, and its whole length.
    /// While it is incomplete, reads go into it and `buf` is empty.
    big: Option<(Vec<u8>, usize)>,
}

impl ReadBuf {
    pub(crate) fn new() -> Self {
        ReadBuf {
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            big: None,
        }
    }

    /// Reads once from `transport`, waiting for bytes if `wait` (see
    /// [`Transport::read`]). `Ok(0)` is end of stream; `WouldBlock` means no
    /// data now.
    pub(crate) fn read_from(&mut self, transport: &dyn Transport, wait: bool) -> io::Result<usize> {
        if let Some((big, total)) = &mut self.big {
            return read_into_spare(transport, big, *total, wait);
        }
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.make_room(READ_CHUNK);
        }
        read_into_spare(transport, &mut self.buf, usize::MAX, wait)
    }

    /// Ensures room for at least `free` more bytes, compacting first.
    fn make_room(&mut self, free: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        self.buf.reserve(free);
    }

    /// Takes one line, through its `\n`, from the bytes not decoded yet if a
    /// whole one is there: for the greeting that may come before the frames.
    pub(crate) fn take_line(&mut self) -> Option<Vec<u8>> {
        let pending = &self.buf[self.start..];
        let end = pending.iter().position(|&b| b == b'\n')? + 1;
        let line = pending[..end].to_vec();
        self.start += end;
        Some(line)
    }

    /// How many bytes are read and not decoded yet.
    pub(crate) fn pending(&self) -> usize {
        match &self.big {
            Some((big, _)) => big.len(),
            None => self.buf.len() - self.start,
        }
    }

    /// Takes the next whole frame, if there is one. Frames not addressed to `me`
    /// are returned raw when `forward` is set.
    pub(crate) fn next_frame(
        &mut self,
        decoder: &FrameDecoder,
        me: PeerId,
        forward: bool,
    ) -> Result<Option<Incoming>, WireError> {
        if let Some((big, total)) = &self.big {
            if big.len() < *total {
                return Ok(None);
            }
            let Some((frame, _)) = self.big.take() else {
                return Ok(None);
            };
            return take_big_frame(frame, decoder, me, forward).map(Some);
        }
        let avail = &self.buf[self.start..];
        let Some(total) = decoder.check_header(avail)? else {
            return Ok(None);
        };
        if avail.len() < total && total >= BIG_FRAME {
            // Everything buffered belongs to this frame; the rest of it is read
            // straight into its own buffer, not zeroed first and never copied.
            let mut big = big_buffer(total);
            big.extend_from_slice(avail);
            self.start = 0;
            self.buf.clear();
            self.big = Some((big, total));
            return Ok(None);
        }
        if avail.len() < total {
            // Reserve the whole frame now (the length was checked against the
            // limit) so that a large frame is read with few syscalls.
            let missing = total - avail.len();
            if self.buf.capacity() - self.buf.len() < missing {
                self.make_room(missing.max(READ_CHUNK));
            }
            return Ok(None);
        }
        // `avail` holds this whole frame: checked above.
        let Some(item) = Incoming::read(&avail[..total], decoder, me, forward)? else {
            return Ok(None);
        };
        self.start += total;
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
            // Give memory back after a large frame.
            if self.buf.capacity() > 4 * READ_CHUNK {
                self.buf.shrink_to(READ_CHUNK);
            }
        }
        Ok(Some(item))
    }
}

/// Reads from `transport` into the unused capacity of `buf`, never past
/// `total` bytes in all, waiting for bytes if `wait`.
fn read_into_spare(
    transport: &dyn Transport,
    buf: &mut Vec<u8>,
    total: usize,
    wait: bool,
) -> io::Result<usize> {
    let want = total
        .saturating_sub(buf.len())
        .min(buf.capacity() - buf.len());
    loop {
        let spare = &mut buf.spare_capacity_mut()[..want];
        let at = spare.as_ptr() as usize;
        match transport.read(spare, wait) {
            Ok(filled) => {
                let n = filled.len();
                if filled.as_ptr() as usize != at || n > want {
                    return Err(io::Error::other(
                        "the transport returned bytes outside the buffer it was given",
                    ));
                }
                // SAFETY: `filled` is an initialised `&mut [u8]` (its type says
                // so) that starts where the spare capacity does (checked above)
                // and is at most `want` bytes long, which the capacity holds.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Routes or decodes a whole frame read into its own buffer.
fn take_big_frame(
    frame: Vec<u8>,
    decoder: &FrameDecoder,
    me: PeerId,
    forward: bool,
) -> Result<Incoming, WireError> {
    let (src, dst) = peek_route(frame.get(HEADER_LEN..).unwrap_or(&[]))?;
    if forward && dst != me {
        return Ok(Incoming::Forward { src, dst, frame });
    }
    decoder.decode_owned(BigFrame(frame)).map(Incoming::Local)
}

/// A connected peer.
pub(crate) struct Peer {
    /// Its number.
    pub id: PeerId,
    /// Its handshake.
    pub hello: Hello,
    /// The byte stream both ways (non-blocking).
    pub transport: Box<dyn Transport>,
    /// Read side: whoever holds this lock reads the socket.
    pub reader: Mutex<ReadBuf>,
    /// Who may write now, and the forwarded frames waiting for their turn.
    writer: Mutex<WriteState>,
    /// Signalled when the writer turn is handed back or the outbox shrinks.
    writer_changed: Condvar,
    /// Whether the socket is registered with the poll (see `Kernel::watch`).
    pub watched: Mutex<bool>,
    /// The poll reported readiness while someone else held `reader`.
    pub missed: AtomicBool,
    /// Threads waiting for a reply from this peer while another thread reads
    /// its socket; the reader leaves its role to one of them when it stops.
    pub standby: Mutex<Vec<Arc<Waiter>>>,
    /// `sys::monotonic_ns` when it last sent a request for the pool
    /// (`u64::MAX`: never).
    pub unsolicited_at: AtomicU64,
    /// Why the peer is gone, once it is.
    pub closed: OnceLock<String>,
    /// The twin's process (master side only).
    pub child: Mutex<Option<Child>>,
    /// Where the twin runs and the relay of its stderr, for a twin started
    /// with [`crate::Channel::Stdio`] (master side only).
    pub stdio: OnceLock<StdioChild>,
    /// This process's arena for large buffers to this peer, once tried
    /// (`None`: none could be made or offered).
    pub send_arena: OnceLock<Option<Arc<SendArena>>>,
    /// The peer's arena, once mapped: resolves the places in its frames.
    pub recv_arena: OnceLock<Arc<ArenaLink>>,
}

/// What the master keeps of a twin started with [`crate::Channel::Stdio`].
pub(crate) struct StdioChild {
    /// Where it runs ([`crate::TwinSpec::location`]).
    pub location: Option<String>,
    /// Its stderr.
    pub relay: Arc<StderrRelay>,
}

impl Peer {
    pub(crate) fn new(
        id: PeerId,
        hello: Hello,
        transport: Box<dyn Transport>,
        buf: ReadBuf,
    ) -> Self {
        Peer {
            id,
            hello,
            transport,
            reader: Mutex::new(buf),
            writer: Mutex::new(WriteState::default()),
            writer_changed: Condvar::new(),
            watched: Mutex::new(false),
            missed: AtomicBool::new(false),
            standby: Mutex::new(Vec::new()),
            unsolicited_at: AtomicU64::new(u64::MAX),
            closed: OnceLock::new(),
            child: Mutex::new(None),
            stdio: OnceLock::new(),
            send_arena: OnceLock::new(),
            recv_arena: OnceLock::new(),
        }
    }

    /// The fd its bytes are read from (and polled).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.transport.read_fd()
    }

    pub(crate) fn twin_id(&self) -> &str {
        &self.hello.twin_id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Writes whole frames, waiting for the socket to drain when it is full.
    pub(crate) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let turn = self.take_turn();
        let written = transport::write_all(&*self.transport, &mut [IoSlice::new(bytes)]);
        turn.give_back();
        written
    }

    /// Writes a frame encoded by `encode_frame_vectored`: the pieces of `head`
    /// with the `splices` between them, without joining them first.
    pub(crate) fn write_spliced(&self, head: &[u8], splices: &[Splice]) -> io::Result<()> {
        let mut slices = Vec::with_capacity(2 * splices.len() + 1);
        let mut at = 0;
        for s in splices {
            let piece = head
                .get(at..s.at)
                .ok_or_else(|| io::Error::other("splice out of order"))?;
            slices.push(IoSlice::new(piece));
            slices.push(IoSlice::new(&s.bytes));
            at = s.at;
        }
        slices.push(IoSlice::new(&head[at..]));
        slices.retain(|s| !s.is_empty());
        let turn = self.take_turn();
        let written = transport::write_all(&*self.transport, &mut slices);
        turn.give_back();
        written
    }

    /// Passes on a frame from another peer without making the calling thread
    /// (the reader of that peer) wait for this one to read it: what the socket
    /// does not take at once waits in this peer's outbox, written in order by a
    /// thread of its own. Waits only while the outbox holds more than
    /// [`OUTBOX_MAX`] bytes, which holds back the peer that sends them. The
    /// frame comes back if this peer cannot be written to.
    pub(crate) fn forward(self: &Arc<Self>, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        self.write_or_queue(frame, true)
    }

    /// Like [`Peer::forward`], but never waits for room in the outbox: for a
    /// few bytes sent from wherever a value happens to be dropped (giving an
    /// arena place back), where waiting on a stalled peer must not happen.
    pub(crate) fn post(self: &Arc<Self>, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        self.write_or_queue(frame, false)
    }

    fn write_or_queue(
        self: &Arc<Self>,
        frame: Vec<u8>,
        wait_for_room: bool,
    ) -> Result<(), Vec<u8>> {
        let mut state = lock(&self.writer);
        if state.busy || state.flusher {
            state.queue(frame, 0);
            if !state.flusher {
                state.flusher = true;
                drop(state);
                self.spawn_flusher(false);
                state = lock(&self.writer);
            }
            if wait_for_room {
                self.await_room(state);
            }
            return Ok(());
        }
        state.busy = true;
        drop(state);
        let mut at = 0;
        while at < frame.len() {
            match self.transport.write(&[IoSlice::new(&frame[at..])]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Mid-frame: the rest goes first, and the turn passes to
                    // the thread that writes the outbox.
                    let mut state = lock(&self.writer);
                    state.queue_first(frame, at);
                    state.flusher = true;
                    drop(state);
                    self.spawn_flusher(true);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(peer = self.id.0, error = %e, "forwarding write failed");
                    Turn(self).give_back();
                    return Err(frame);
                }
            }
        }
        recycle(frame);
        Turn(self).give_back();
        Ok(())
    }

    /// Waits for the writer turn.
    fn take_turn(&self) -> Turn<'_> {
        let mut state = lock(&self.writer);
        while state.busy {
            state.waiting += 1;
            state = self
                .writer_changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
        state.busy = true;
        Turn(self)
    }

    /// Waits while the outbox is over its bound and the peer is still there.
    fn await_room(&self, mut state: MutexGuard<'_, WriteState>) {
        while state.queued > OUTBOX_MAX && !self.is_closed() {
            // The timeout notices a peer closed while its writer is stuck.
            state.waiting += 1;
            state = self
                .writer_changed
                .wait_timeout(state, CLOSED_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }

    /// Wakes the threads waiting on the write side, if any: a notification
    /// nobody waits for would still cost a system call per frame.
    fn notify_writers(&self, state: MutexGuard<'_, WriteState>) {
        let anyone = state.waiting > 0;
        drop(state);
        if anyone {
            self.writer_changed.notify_all();
        }
    }

    /// Starts the thread that writes the outbox (`state.flusher` is set);
    /// `has_turn`: the caller's writer turn passes to it.
    fn spawn_flusher(self: &Arc<Self>, has_turn: bool) {
        let peer = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name(format!("cpy2py-out-{}", self.id.0))
            .spawn(move || peer.flush_outbox(has_turn));
        if let Err(e) = started {
            // Without a thread the outbox is written here, blocking, as
            // every forward was written before outboxes.
            tracing::warn!(peer = self.id.0, error = %e, "no thread for the outbox");
            self.flush_outbox(has_turn);
        }
    }

    /// Writes the outbox in order until it is empty, then gives the turn back.
    fn flush_outbox(&self, has_turn: bool) {
        let turn = if has_turn {
            Turn(self)
        } else {
            self.take_turn()
        };
        loop {
            let mut state = lock(&self.writer);
            let Some((frame, at)) = state.outbox.pop_front() else {
                state.flusher = false;
                drop(state);
                return turn.give_back();
            };
            drop(state);
            let written = transport::write_all(&*self.transport, &mut [IoSlice::new(&frame[at..])]);
            let mut state = lock(&self.writer);
            state.queued -= frame.len() - at;
            if let Err(e) = written {
                // The peer is going: its reader sees the end and fails what
                // waits on it. Nothing queued for it can arrive now.
                tracing::debug!(peer = self.id.0, error = %e, "forwarding write failed");
                state.outbox.clear();
                state.queued = 0;
            }
            self.notify_writers(state);
            recycle(frame);
        }
    }
}

/// Bytes of forwarded frames a peer's outbox holds before the threads that
/// forward to it wait: past it, the sending peer is held back.
pub(crate) const OUTBOX_MAX: usize = 64 << 20;

/// How often a thread waiting for room in an outbox checks that the peer is
/// still there.
const CLOSED_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// The write side of a peer: one thread writes at a time, whole frames.
#[derive(Default)]
struct WriteState {
    /// A thread is writing (a frame of its own, or the outbox).
    busy: bool,
    /// A thread exists that writes `outbox` until it is empty.
    flusher: bool,
    /// Forwarded frames not written yet, each with how much of it was.
    outbox: VecDeque<(Vec<u8>, usize)>,
    /// Bytes in `outbox` still to write.
    queued: usize,
    /// Threads waiting on `writer_changed`.
    waiting: usize,
}

impl WriteState {
    fn queue(&mut self, frame: Vec<u8>, at: usize) {
        self.queued += frame.len() - at;
        self.outbox.push_back((frame, at));
    }

    fn queue_first(&mut self, frame: Vec<u8>, at: usize) {
        self.queued += frame.len() - at;
        self.outbox.push_front((frame, at));
    }
}

/// The writer turn of a peer, held while writing.
struct Turn<'a>(&'a Peer);

impl Turn<'_> {
    /// Hands the turn to the next thread that waits for it.
    fn give_back(self) {
        let mut state = lock(&self.0.writer);
        state.busy = false;
        self.0.notify_writers(state);
    }
}

/// Locks a mutex, ignoring poison: the kernel's state stays consistent because
/// no lock is held across user code.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spare buffers are global: these tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_large_frame_buffer_is_reused_and_a_huge_or_small_one_is_not() {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        // Capacities no other test uses, so that the buffers are told apart.
        let odd = (3 << 20) + 4096 * 7;
        let buf: Vec<u8> = Vec::with_capacity(odd);
        let at = buf.as_ptr();
        recycle(buf);
        let again = big_buffer(odd - 100);
        assert_eq!(again.as_ptr(), at, "the spare buffer is handed out again");
        assert!(again.is_empty() && again.capacity() >= odd);
        drop(again);

        recycle(Vec::with_capacity(SPARE_MAX + 4096));
        recycle(Vec::with_capacity(BIG_FRAME - 1));
        assert!(
            SPARE
                .lock()
                .unwrap()
                .iter()
                .all(|b| (BIG_FRAME..=SPARE_MAX).contains(&b.capacity())),
            "a huge or small buffer is not kept with the large ones"
        );

        // At most SPARE_BUFFERS are kept, the largest ones.
        for extra in 1..=SPARE_BUFFERS + 2 {
            recycle(Vec::with_capacity(odd + 4096 * extra));
        }
        let spare = SPARE.lock().unwrap();
        assert_eq!(spare.len(), SPARE_BUFFERS);
        assert!(spare.iter().all(|b| b.capacity() >= odd + 4096 * 3));
    }

    #[test]
    fn one_huge_buffer_is_kept_for_a_frame_it_fits_without_waste() {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let huge = SPARE_MAX * 3 + 4096 * 5;
        let mut buf: Vec<u8> = Vec::with_capacity(huge);
        buf.resize(huge, 7); // touched pages, lazily freed when recycled
        let at = buf.as_ptr();
        recycle(buf);
        let small = big_buffer(huge / 2 - 4096);
        assert!(
            small.as_ptr() != at,
            "not handed out for a frame of less than half its size"
        );
        drop(small);
        let mut again = big_buffer(huge - 100);
        assert_eq!(again.as_ptr(), at, "the huge buffer is handed out again");
        assert!(again.is_empty() && again.capacity() >= huge);
        // Lazily freed pages read back as either their old bytes or zeros, and
        // keep what is written to them.
        again.resize(huge, 1);
        assert!(again.iter().all(|&b| b == 1));
        // A newer huge buffer replaces the one kept.
        recycle(again);
        let newer: Vec<u8> = Vec::with_capacity(huge + 4096);
        let newer_at = newer.as_ptr();
        recycle(newer);
        let taken = big_buffer(huge);
        assert_eq!(taken.as_ptr(), newer_at);
        assert!(
            HUGE_SPARE.lock().unwrap().is_none(),
            "taken out, not copied"
        );
    }

    /// A peer over one end of a socketpair whose other end nobody reads yet.
    fn unread_peer() -> (Arc<Peer>, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // A test whose frames never come fails instead of hanging.
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("read timeout");
        let hello = Hello {
            protocol: cpy2py_wire::PROTOCOL_VERSION,
            peer: PeerId(1),
            twin_id: "outbox-test".into(),
            pid: 0,
            interpreter: "rust".into(),
            version: String::new(),
            pickle_protocol: 0,
        };
        let transport = Box::new(transport::SocketTransport::new(ours).expect("transport"));
        (
            Arc::new(Peer::new(PeerId(1), hello, transport, ReadBuf::new())),
            theirs,
        )
    }

    fn frame_of(fill: u8, len: usize) -> Vec<u8> {
        vec![fill; len]
    }

    #[test]
    fn forwards_to_a_peer_that_reads_nothing_return_and_arrive_in_order() {
        // Written frames go to the spare buffers.
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let (peer, mut theirs) = unread_peer();
        // Far more than the socket holds: each call returns all the same.
        let sizes = [(1u8, 24 << 20), (2, 100), (3, 8 << 20)];
        for &(fill, len) in &sizes {
            assert!(peer.forward(frame_of(fill, len)).is_ok());
        }
        // A frame of the peer's own waits its turn and is not interleaved.
        let own = {
            let peer = Arc::clone(&peer);
            std::thread::spawn(move || peer.write_all(&frame_of(4, 1 << 20)))
        };
        let mut got = Vec::new();
        let want: usize = sizes.iter().map(|s| s.1).sum::<usize>() + (1 << 20);
        let mut chunk = vec![0u8; 1 << 20];
        while got.len() < want {
            let n = std::io::Read::read(&mut theirs, &mut chunk).expect("read");
            assert!(n > 0, "the socket closed early");
            got.extend_from_slice(&chunk[..n]);
        }
        own.join().expect("writer thread").expect("own write");
        // The forwarded frames in order; the own frame whole, before or after
        // the outbox's frames but never inside one.
        let mut runs: Vec<(u8, usize)> = Vec::new();
        for &b in &got {
            match runs.last_mut() {
                Some((fill, n)) if *fill == b => *n += 1,
                _ => runs.push((b, 1)),
            }
        }
        let forwarded: Vec<(u8, usize)> = runs.iter().copied().filter(|r| r.0 != 4).collect();
        assert_eq!(forwarded, sizes.to_vec());
        assert_eq!(runs.iter().filter(|r| r.0 == 4).count(), 1, "{runs:?}");
        let state = lock(&peer.writer);
        assert!(state.outbox.is_empty() && state.queued == 0);
    }

    #[test]
    fn a_full_outbox_holds_the_forwarding_thread_back_until_it_drains() {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let (peer, mut theirs) = unread_peer();
        assert!(peer.forward(frame_of(1, OUTBOX_MAX + (8 << 20))).is_ok());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let forwarder = {
            let peer = Arc::clone(&peer);
            std::thread::spawn(move || {
                let result = peer.forward(frame_of(2, 1 << 20));
                done_tx.send(()).expect("test alive");
                result
            })
        };
        // Over the bound: the second forward waits (checked for a while) ...
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "a forward past the outbox's bound returned at once"
        );
        // ... and returns once the reader has drained the outbox.
        let mut chunk = vec![0u8; 4 << 20];
        let mut read = 0;
        while done_rx.try_recv().is_err() {
            read += std::io::Read::read(&mut theirs, &mut chunk)
                .expect("the forward returned before everything was read");
        }
        assert!(read <= OUTBOX_MAX + (9 << 20));
        assert!(forwarder.join().expect("forwarder").is_ok());
    }

    #[test]
    fn a_big_frame_returns_its_buffer_when_the_last_view_goes() {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let odd = (5 << 20) + 4096 * 3;
        let buf: Vec<u8> = Vec::with_capacity(odd);
        let at = buf.as_ptr();
        drop(BigFrame(buf));
        let again = big_buffer(odd);
        assert_eq!(again.as_ptr(), at);
    }
}
