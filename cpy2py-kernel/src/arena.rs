//! Shared memory for large out-of-band buffers between two peers on one host.
//!
//! Through a socket a buffer is copied twice (into the kernel's socket buffers
//! and out into the receiver's memory); through an arena once. Each process
//! that sends large buffers to a directly connected peer makes a memfd (its
//! [`SendArena`] for that peer), offers it ([`Message::ArenaOffer`]), and once
//! the peer has mapped it ([`Message::ArenaAnswer`]) copies each large buffer
//! into a free part of it and sends only the place ([`ArenaSlot`]). The
//! receiver uses the bytes where they are, writable, for as long as it holds
//! them ([`ArenaView`]); when it lets go the place goes back
//! ([`Message::ArenaFree`]). Until then a buffer that does not fit, or any
//! buffer before the answer, goes through the socket as before.
//!
//! The receiver opens the memfd as `/proc/<pid>/fd/<fd>`, with the pid from the
//! peer's handshake: only peers joined by a socketpair (one host) share arenas,
//! and a frame forwarded from another peer can name no place.

use crate::kernel::Kernel;
use crate::peer::{Peer, lock};
use cpy2py_wire::{ArenaResolver, ArenaSlot, Bytes, Envelope, Lend, Message, PeerId, encode_frame};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Buffers smaller than this go through the socket: below it the messages
/// around a place cost more than the copy they save.
pub const ARENA_MIN: usize = 1 << 20;
/// Granularity of places: a page.
const ALIGN: u64 = 4096;
/// Freed places below this offset keep their memory for the next buffers
/// (faulting 64 MiB in again costs as much as copying it); above it their
/// memory goes back to the system as soon as they are free.
const RETAIN: u64 = 128 << 20;

/// One mapping of a memfd, unmapped on drop.
struct Mapping {
    /// Address (as an integer: the mapping is shared memory, see the SAFETY
    /// notes where it is read or written).
    base: usize,
    size: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, size: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of `size` bytes of `fd`, placed by the
        // kernel (null hint), so it overlaps nothing of ours; it is unmapped
        // only in `Drop`, when nothing borrows it any more.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                size,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )?
        };
        Ok(Mapping {
            base: base as usize,
            size,
        })
    }

    /// The bytes at `offset..offset + len`, which the caller checked lie
    /// within the mapping.
    fn slice(&self, offset: u64, len: u64) -> (*mut u8, usize) {
        ((self.base + offset as usize) as *mut u8, len as usize)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base..base + size` is the mapping made in `new`; every
        // chunk and view that lends from it holds an `Arc` of its arena, so
        // none is left when the arena (and so this) drops.
        let _ = unsafe { rustix::mm::munmap(self.base as *mut _, self.size) };
    }
}

/// Where an offer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offer {
    Pending,
    Accepted,
    Refused,
}

struct SendState {
    offer: Offer,
    /// Free ranges: start → length, coalesced.
    free: BTreeMap<u64, u64>,
    /// Handed-out ranges: start → length.
    live: HashMap<u64, u64>,
}

/// This process's arena for one peer: a memfd both map.
pub(crate) struct SendArena {
    fd: OwnedFd,
    map: Mapping,
    state: Mutex<SendState>,
}

impl SendArena {
    /// A new arena of `size` bytes (rounded up to a page).
    pub(crate) fn create(size: u64) -> io::Result<SendArena> {
        let size = size.div_ceil(ALIGN) * ALIGN;
        let fd = rustix::fs::memfd_create("cpy2py-arena", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, size)?;
        let map = Mapping::new(&fd, usize::try_from(size).map_err(io::Error::other)?)?;
        Ok(SendArena {
            fd,
            map,
            state: Mutex::new(SendState {
                offer: Offer::Pending,
                free: BTreeMap::from([(0, size)]),
                live: HashMap::new(),
            }),
        })
    }

    /// The offer to send the peer.
    pub(crate) fn offer(&self) -> Message {
        Message::ArenaOffer {
            fd: self.fd.as_raw_fd() as u32,
            size: self.map.size as u64,
        }
    }

    fn answered(&self, accepted: bool) {
        tracing::debug!(accepted, "arena: offer answered");
        let mut state = lock(&self.state);
        if state.offer == Offer::Pending {
            state.offer = if accepted {
                Offer::Accepted
            } else {
                Offer::Refused
            };
        }
    }

    /// A free place of `len` bytes (first fit), if the offer was accepted and
    /// one is free.
    fn alloc(&self, len: u64) -> Option<u64> {
        let need = len.div_ceil(ALIGN).max(1) * ALIGN;
        let mut state = lock(&self.state);
        if state.offer != Offer::Accepted {
            return None;
        }
        let (&start, &size) = state.free.iter().find(|(_, size)| **size >= need)?;
        state.free.remove(&start);
        if size > need {
            state.free.insert(start + need, size - need);
        }
        state.live.insert(start, need);
        tracing::debug!(start, need, "arena: place handed out");
        Some(start)
    }

    /// Takes back the place at `offset`; unknown offsets (a confused peer) are
    /// ignored.
    fn release(&self, offset: u64) {
        tracing::debug!(offset, "arena: place back");
        let mut state = lock(&self.state);
        let Some(len) = state.live.remove(&offset) else {
            tracing::debug!(offset, "arena place freed twice or never handed out");
            return;
        };
        let mut len = len;
        if offset + len > RETAIN {
            // Give the memory above RETAIN back now.
            let from = offset.max(RETAIN);
            let _ = rustix::fs::fallocate(
                &self.fd,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                from,
                offset + len - from,
            );
        }
        // Joined with the free ranges right before and right after it.
        let end = offset + len;
        let mut start = offset;
        if let Some((&before, &before_len)) = state.free.range(..offset).next_back() {
            if before + before_len == offset {
                state.free.remove(&before);
                start = before;
                len += before_len;
            }
        }
        if let Some(after_len) = state.free.remove(&end) {
            len += after_len;
        }
        state.free.insert(start, len);
    }

    /// Places handed out and not yet back.
    fn live(&self) -> usize {
        lock(&self.state).live.len()
    }
}

/// A place in this process's arena for one buffer, filled before it is sent.
///
/// Wrapped in a [`Bytes`] ([`Bytes::from_lend`]) it encodes as its place; once
/// encoded it belongs to the receiver, which gives it back. Dropped without
/// being encoded (the request was never sent), it is free again at once. (A
/// frame refused after encoding, as too large for the frame limit, keeps its
/// places until the link ends.)
pub struct ArenaChunk {
    arena: Arc<SendArena>,
    offset: u64,
    len: usize,
    handed_over: AtomicBool,
}

impl ArenaChunk {
    /// The chunk's memory, to fill before sending.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let (ptr, len) = self.arena.map.slice(self.offset, self.len as u64);
        // SAFETY: the place `offset..offset + len` lies within the mapping (the
        // allocator hands out only places inside it) and is this chunk's alone:
        // the allocator gave it to no one else, and the peer gets it only when
        // the chunk is encoded, which needs a shared `Bytes` (so no `&mut`
        // borrow of this chunk is left by then).
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

impl AsRef<[u8]> for ArenaChunk {
    fn as_ref(&self) -> &[u8] {
        let (ptr, len) = self.arena.map.slice(self.offset, self.len as u64);
        // SAFETY: within the mapping, as in `as_mut_slice`. Once handed over the
        // receiver may write these bytes; nothing here reads them after
        // encoding (which reads only the place), and a late reader sees bytes,
        // some old and some new, as with any shared buffer.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

impl Lend for ArenaChunk {
    fn arena_slot(&self) -> Option<ArenaSlot> {
        self.handed_over.store(true, Ordering::Release);
        Some(ArenaSlot {
            offset: self.offset,
            len: self.len as u64,
        })
    }
}

impl Drop for ArenaChunk {
    fn drop(&mut self) {
        if !self.handed_over.load(Ordering::Acquire) {
            self.arena.release(self.offset);
        }
    }
}

/// A peer's arena as this process maps it.
pub(crate) struct RecvArena {
    map: Mapping,
    /// Places handed over and still held here.
    held: Mutex<HashSet<u64>>,
    /// The link to the arena's owner, for giving places back.
    link: Weak<Peer>,
    me: PeerId,
}

impl RecvArena {
    /// Maps the memfd `fd` of process `pid`, of `size` bytes.
    fn open(pid: u32, fd: u32, size: u64, link: Weak<Peer>, me: PeerId) -> io::Result<RecvArena> {
        let path = format!("/proc/{pid}/fd/{fd}");
        // Only an arena: a memfd of ours, whatever else the number may name.
        let target = std::fs::read_link(&path)?;
        if !target.to_string_lossy().starts_with("/memfd:cpy2py-arena") {
            return Err(io::Error::other(format!(
                "{path} is {target:?}, not an arena"
            )));
        }
        let file = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let stat = rustix::fs::fstat(&file)?;
        if (stat.st_size as u64) < size || size == 0 {
            return Err(io::Error::other(format!(
                "{path} has {} bytes, not {size}",
                stat.st_size
            )));
        }
        let map = Mapping::new(&file, usize::try_from(size).map_err(io::Error::other)?)?;
        Ok(RecvArena {
            map,
            held: Mutex::new(HashSet::new()),
            link,
            me,
        })
    }

    fn give_back(&self, offset: u64) {
        tracing::debug!(offset, "arena: giving a place back");
        lock(&self.held).remove(&offset);
        let Some(link) = self.link.upgrade() else {
            return;
        };
        let envelope = Envelope {
            src: self.me,
            dst: link.id,
            message: Message::ArenaFree {
                offsets: vec![offset],
            },
        };
        let mut frame = Vec::new();
        if encode_frame(&envelope, &mut frame).is_ok() && !link.is_closed() {
            // Never waits (a drop may happen anywhere): what the socket does
            // not take now, the link's own writer thread writes.
            let _ = link.post(frame);
        }
    }
}

/// Resolves places in one peer's arena for the frames it sends.
pub(crate) struct ArenaLink(pub(crate) Arc<RecvArena>);

impl ArenaResolver for ArenaLink {
    fn resolve(&self, slot: ArenaSlot) -> Result<Bytes, String> {
        let end = slot.offset.checked_add(slot.len);
        if end.is_none_or(|end| end > self.0.map.size as u64) || slot.offset % ALIGN != 0 {
            return Err(format!(
                "outside the {} bytes of the arena",
                self.0.map.size
            ));
        }
        tracing::debug!(
            offset = slot.offset,
            len = slot.len,
            "arena: place received"
        );
        if !lock(&self.0.held).insert(slot.offset) {
            return Err("handed over while still held here".into());
        }
        Ok(Bytes::from_lend(ArenaView {
            arena: Arc::clone(&self.0),
            offset: slot.offset,
            len: slot.len,
        }))
    }
}

/// Bytes handed over in a peer's arena, this process's until dropped.
struct ArenaView {
    arena: Arc<RecvArena>,
    offset: u64,
    len: u64,
}

impl AsRef<[u8]> for ArenaView {
    fn as_ref(&self) -> &[u8] {
        let (ptr, len) = self.arena.map.slice(self.offset, self.len);
        // SAFETY: the place lies within the mapping (checked in `resolve`) and
        // is held by this view alone (`held` refuses a second one); the owner
        // wrote it before handing it over and writes it again only after it is
        // given back in `Drop`. A peer that broke that rule could change the
        // bytes under us, as it could send other bytes; nothing here depends on
        // them staying the same.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

impl Lend for ArenaView {
    fn lend_mut(&mut self) -> Option<&mut [u8]> {
        let (ptr, len) = self.arena.map.slice(self.offset, self.len);
        // SAFETY: as in `as_ref`; `&mut self` (asked only while no other
        // `Bytes` shares this view) makes the borrow exclusive in this process.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }
}

impl Drop for ArenaView {
    fn drop(&mut self) {
        self.arena.give_back(self.offset);
    }
}

impl Kernel {
    /// A place of `len` bytes in the arena shared with `dst`, to copy a large
    /// buffer into and send as a [`Bytes::from_lend`] of it; `None` when the
    /// buffer should go through the socket: it is small, `dst` is not a peer
    /// on a socketpair of this process, arenas are off
    /// ([`crate::KernelConfig::arena_size`]), the offer is not answered yet
    /// (the first call makes it), or the arena is full.
    pub fn arena_chunk(&self, dst: PeerId, len: usize) -> Option<ArenaChunk> {
        let size = self.shared.config.arena_size;
        if len < ARENA_MIN || len as u64 > size / 2 {
            return None;
        }
        let peer = self.peer(dst)?;
        if peer.transport.kind() != "socketpair" || peer.is_closed() {
            return None;
        }
        let arena = peer
            .send_arena
            .get_or_init(|| match SendArena::create(size) {
                Ok(arena) => {
                    let arena = Arc::new(arena);
                    tracing::debug!(peer = dst.0, size, "arena: offered");
                    let offer = Envelope {
                        src: self.shared.me,
                        dst,
                        message: arena.offer(),
                    };
                    self.send_to(&peer, &offer).ok().map(|()| arena)
                }
                Err(error) => {
                    tracing::debug!(%error, "no arena: buffers go through the socket");
                    None
                }
            });
        let arena = arena.as_ref()?;
        let offset = arena.alloc(len as u64)?;
        Some(ArenaChunk {
            arena: Arc::clone(arena),
            offset,
            len,
            handed_over: AtomicBool::new(false),
        })
    }

    /// Places of this process's arena for `dst` not given back yet (0 without
    /// an arena): for tests and diagnostics.
    pub fn arena_places_out(&self, dst: PeerId) -> usize {
        self.peer(dst)
            .and_then(|peer| peer.send_arena.get().cloned().flatten())
            .map_or(0, |arena| arena.live())
    }

    /// The arena messages from a directly connected peer.
    pub(crate) fn arena_message(&self, src: PeerId, message: Message) {
        let Some(peer) = self.peer(src) else {
            return;
        };
        match message {
            Message::ArenaOffer { fd, size } => {
                let accepted = self.map_arena(&peer, fd, size);
                let answer = Envelope {
                    src: self.shared.me,
                    dst: src,
                    message: Message::ArenaAnswer { accepted },
                };
                // From the reading thread: queued rather than waited for.
                let mut frame = Vec::new();
                if encode_frame(&answer, &mut frame).is_ok() {
                    let _ = peer.post(frame);
                }
            }
            Message::ArenaAnswer { accepted } => {
                if let Some(Some(arena)) = peer.send_arena.get() {
                    arena.answered(accepted);
                }
            }
            Message::ArenaFree { offsets } => {
                if let Some(Some(arena)) = peer.send_arena.get() {
                    for offset in offsets {
                        arena.release(offset);
                    }
                }
            }
            _ => {}
        }
    }

    fn map_arena(&self, peer: &Arc<Peer>, fd: u32, size: u64) -> bool {
        if peer.transport.kind() != "socketpair" || peer.recv_arena.get().is_some() {
            return false;
        }
        // The pid from the handshake: a socketpair's credentials name the
        // process that made it (the master) at both ends.
        let pid = peer.hello.pid;
        let opened = if pid == crate::sys::getpid() {
            Err(io::Error::other("the peer claims to be this process"))
        } else {
            RecvArena::open(pid, fd, size, Arc::downgrade(peer), self.shared.me)
        };
        match opened {
            Ok(arena) => peer
                .recv_arena
                .set(Arc::new(ArenaLink(Arc::new(arena))))
                .is_ok(),
            Err(error) => {
                tracing::debug!(peer = peer.id.0, %error, "cannot map the peer's arena");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(size: u64) -> SendArena {
        let arena = SendArena::create(size).expect("arena");
        arena.answered(true);
        arena
    }

    #[test]
    fn places_are_handed_out_first_fit_and_coalesce_when_given_back() {
        let arena = accepted(16 * ALIGN);
        assert_eq!(arena.alloc(1), Some(0));
        assert_eq!(arena.alloc(ALIGN + 1), Some(ALIGN));
        assert_eq!(arena.alloc(4 * ALIGN), Some(3 * ALIGN));
        assert_eq!(arena.alloc(10 * ALIGN), None, "9 pages are left");
        assert_eq!(arena.alloc(9 * ALIGN), Some(7 * ALIGN));
        arena.release(7 * ALIGN);
        arena.release(ALIGN);
        assert_eq!(arena.live(), 2);
        arena.release(0);
        // 0..3 pages free again, in one piece
        assert_eq!(arena.alloc(3 * ALIGN), Some(0));
        arena.release(0);
        arena.release(3 * ALIGN);
        assert_eq!(arena.live(), 0);
        assert_eq!(arena.alloc(16 * ALIGN), Some(0), "everything coalesced");
        arena.release(42); // never handed out: ignored
        arena.release(0);
        assert_eq!(arena.alloc(16 * ALIGN), Some(0));
    }

    #[test]
    fn a_peer_s_places_resolve_to_its_bytes_once_and_only_inside_the_arena() {
        let size = 64 * ALIGN;
        let sender = Arc::new(accepted(size));
        let offset = sender.alloc(3 * ALIGN).expect("a place");
        let mut chunk = ArenaChunk {
            arena: Arc::clone(&sender),
            offset,
            len: 3 * ALIGN as usize,
            handed_over: AtomicBool::new(false),
        };
        chunk.as_mut_slice().fill(7);
        let slot = Bytes::from_lend(chunk).arena_slot().expect("in the arena");
        // This process maps its own arena as a peer would (by /proc path).
        let receiver = RecvArena::open(
            crate::sys::getpid(),
            sender.fd.as_raw_fd() as u32,
            size,
            Weak::new(),
            PeerId(1),
        )
        .expect("mapped");
        let link = ArenaLink(Arc::new(receiver));
        let mut bytes = link.resolve(slot).expect("resolved");
        assert_eq!(bytes.len(), 3 * ALIGN as usize);
        assert!(bytes.iter().all(|&b| b == 7));
        bytes.unique_mut().expect("writable")[0] = 9;
        let again = link.resolve(slot).expect_err("still held");
        assert!(again.contains("still held"), "{again}");
        for (offset, len) in [(size, 1), (size - ALIGN, 2 * ALIGN), (1, 1), (u64::MAX, 2)] {
            let refused = link.resolve(ArenaSlot { offset, len });
            assert!(refused.is_err(), "{offset}+{len} resolved");
        }
        drop(bytes);
        assert!(link.resolve(slot).is_ok(), "given back, it can come again");
        // The receiver's write is in the sender's memory.
        let (ptr, _) = sender.map.slice(offset, 1);
        // SAFETY: within the sender's mapping; nothing writes it now.
        assert_eq!(unsafe { *ptr }, 9);
    }

    #[test]
    fn a_memfd_that_is_not_an_arena_is_not_mapped() {
        let other = rustix::fs::memfd_create("something-else", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd");
        rustix::fs::ftruncate(&other, 4096).expect("sized");
        let refused = RecvArena::open(
            crate::sys::getpid(),
            other.as_raw_fd() as u32,
            4096,
            Weak::new(),
            PeerId(1),
        );
        assert!(refused.is_err());
    }

    #[test]
    fn nothing_is_handed_out_before_the_offer_is_accepted() {
        let arena = SendArena::create(16 * ALIGN).expect("arena");
        assert_eq!(arena.alloc(1), None);
        arena.answered(false);
        assert_eq!(arena.alloc(1), None);
        arena.answered(true);
        assert_eq!(arena.alloc(1), None, "a refusal stands");
    }
}
