//! One connected peer: its socket, read buffer, write lock and process.

use cpy2py_wire::{Envelope, FrameDecoder, HEADER_LEN, Hello, PeerId, WireError, peek_route};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::sys;
use crate::waiter::Waiter;

/// Smallest free space kept at the end of the read buffer before a read.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes read from a peer and not yet decoded.
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A frame taken from a peer's stream.
pub(crate) enum Incoming {
    /// Addressed to this process.
    Local(Envelope),
    /// Addressed to another peer: the whole frame, to forward undecoded.
    Forward {
        /// Claimed sender.
        src: PeerId,
        /// Destination.
        dst: PeerId,
        /// Header and body.
        frame: Vec<u8>,
    },
}

impl ReadBuf {
    pub(crate) fn new() -> Self {
        ReadBuf {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// Reads once from `stream`. `Ok(0)` is end of stream; `WouldBlock` means no
    /// data now.
    pub(crate) fn read_from(&mut self, mut stream: &UnixStream) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK {
            self.make_room(READ_CHUNK);
        }
        loop {
            match stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ensures at least `free` bytes after `end`, compacting first.
    fn make_room(&mut self, free: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < free {
            self.buf.resize(self.end + free, 0);
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
        let avail = &self.buf[self.start..self.end];
        let Some(total) = decoder.check_header(avail)? else {
            return Ok(None);
        };
        if avail.len() < total {
            // Reserve the whole frame now (the length was checked against the
            // limit) so that a large frame is read with few syscalls.
            let missing = total - avail.len();
            if self.buf.len() - self.end < missing {
                self.make_room(missing.max(READ_CHUNK));
            }
            return Ok(None);
        }
        let frame = &avail[..total];
        let (src, dst) = peek_route(&frame[HEADER_LEN..])?;
        let item = if forward && dst != me {
            Incoming::Forward {
                src,
                dst,
                frame: frame.to_vec(),
            }
        } else {
            match decoder.decode(frame)? {
                Some((envelope, _)) => Incoming::Local(envelope),
                // `frame` holds exactly one whole frame: checked above.
                None => return Ok(None),
            }
        };
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give memory back after a large frame.
            if self.buf.len() > 4 * READ_CHUNK {
                self.buf.truncate(READ_CHUNK);
                self.buf.shrink_to_fit();
            }
        }
        Ok(Some(item))
    }
}

/// A connected peer.
pub(crate) struct Peer {
    /// Its number.
    pub id: PeerId,
    /// Its handshake.
    pub hello: Hello,
    /// The socket (non-blocking).
    pub stream: UnixStream,
    /// Read side: whoever holds this lock reads the socket.
    pub reader: Mutex<ReadBuf>,
    /// Serializes whole frames on the write side.
    writer: Mutex<()>,
    /// Whether the socket is registered with the poll (see `Kernel::watch`).
    pub watched: Mutex<bool>,
    /// The poll reported readiness while someone else held `reader`.
    pub missed: AtomicBool,
    /// Threads waiting for a reply from this peer while another thread reads
    /// its socket; the reader leaves its role to one of them when it stops.
    pub standby: Mutex<Vec<Arc<Waiter>>>,
    /// Why the peer is gone, once it is.
    pub closed: OnceLock<String>,
    /// The twin's process (master side only).
    pub child: Mutex<Option<Child>>,
}

impl Peer {
    pub(crate) fn new(id: PeerId, hello: Hello, stream: UnixStream, buf: ReadBuf) -> Self {
        Peer {
            id,
            hello,
            stream,
            reader: Mutex::new(buf),
            writer: Mutex::new(()),
            watched: Mutex::new(false),
            missed: AtomicBool::new(false),
            standby: Mutex::new(Vec::new()),
            closed: OnceLock::new(),
            child: Mutex::new(None),
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub(crate) fn twin_id(&self) -> &str {
        &self.hello.twin_id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Writes whole frames, waiting for the socket to drain when it is full.
    pub(crate) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        write_all_fd(self.fd(), bytes)
    }
}

/// Writes all of `bytes` to a non-blocking socket, polling while it is full.
/// Uses `MSG_NOSIGNAL` so a closed peer is an error, not a SIGPIPE.
pub(crate) fn write_all_fd(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; send reads at most `bytes.len()` bytes.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                sys::poll2(fd, None, true, None)?;
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// Locks a mutex, ignoring poison: the kernel's state stays consistent because
/// no lock is held across user code.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
