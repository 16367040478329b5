//! Transports: what carries a peer's bytes both ways. The kernel frames, polls,
//! reads and writes the same way over any of them; reading, writing and ending
//! the stream are the transport's own.
//!
//! A [`SocketTransport`] is one end of a Unix socketpair (a local twin). A
//! [`PipeTransport`] is a pair of pipes, one per direction: for instance the
//! stdin and stdout of a child process that carries the stream further (an
//! `ssh` client).

use crate::sys;
use rustix::net::{RecvFlags, SendFlags};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A byte stream both ways to one peer. The kernel polls
/// [`Transport::read_fd`] for readiness, reads with [`Transport::read`], and
/// waits for [`Transport::write_fd`] to drain when a write would block.
pub trait Transport: Send + Sync + 'static {
    /// The fd this process reads the peer's bytes from.
    fn read_fd(&self) -> BorrowedFd<'_>;

    /// Reads what has arrived into the start of `buf` and returns that part,
    /// now initialised; an empty result is the end of the stream. Without
    /// `wait`, `WouldBlock` means nothing has arrived; with it (asked only where
    /// [`Transport::can_wait_in_read`] says so) the call blocks until something
    /// arrives, the stream ends or [`Transport::interrupt_wait`] is called.
    ///
    /// The default reads [`Transport::read_fd`], which must then be non-blocking.
    fn read<'b>(&self, buf: &'b mut [MaybeUninit<u8>], wait: bool) -> io::Result<&'b mut [u8]> {
        let _ = wait;
        let (filled, _) = rustix::io::read(self.read_fd(), buf)?;
        Ok(filled)
    }

    /// Whether [`Transport::read`] can wait for bytes itself. A thread that is
    /// the only one to wait on a stream then blocks in one `recv` rather than
    /// polling first and reading after: one system call less per message.
    fn can_wait_in_read(&self) -> bool {
        false
    }

    /// Wakes a thread blocked in a waiting [`Transport::read`], which then
    /// sees the end of the stream: for stopping. Nothing to do where reads
    /// never wait.
    fn interrupt_wait(&self) {}

    /// The fd this process writes to.
    fn write_fd(&self) -> BorrowedFd<'_>;

    /// Writes as much of `slices` as the transport takes now, without
    /// blocking; the number of bytes written.
    fn write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Ends the stream both ways where the transport can (a thread blocked
    /// reading then sees its end); the peer's process ending ends it anyway.
    fn shutdown(&self);

    /// What it is, for messages (`"socketpair"`, `"pipes"`).
    fn kind(&self) -> &'static str;
}

/// One end of a Unix stream socketpair.
///
/// The socket stays in blocking mode, and every read or write that must not
/// wait says so itself (`MSG_DONTWAIT`): so one thread can block in `recv` on
/// it while the others neither wait nor poll for their reads and writes.
#[derive(Debug)]
pub struct SocketTransport {
    stream: UnixStream,
}

impl SocketTransport {
    /// Takes `stream`, in blocking mode (see the type). Its send buffer is
    /// widened (see `sys::widen_send_buffer`); a refusal only costs speed.
    pub fn new(stream: UnixStream) -> io::Result<SocketTransport> {
        sys::set_nonblocking(stream.as_fd(), false)?;
        match sys::widen_send_buffer(stream.as_fd()) {
            Ok(granted) => tracing::debug!(granted, "send buffer"),
            Err(error) => tracing::debug!(%error, "send buffer left as it was"),
        }
        Ok(SocketTransport { stream })
    }
}

impl Transport for SocketTransport {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn write_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn read<'b>(&self, buf: &'b mut [MaybeUninit<u8>], wait: bool) -> io::Result<&'b mut [u8]> {
        let flags = if wait {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        let ((filled, _), _) = rustix::net::recv(&self.stream, buf, flags)?;
        Ok(filled)
    }

    fn can_wait_in_read(&self) -> bool {
        true
    }

    fn interrupt_wait(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Read);
    }

    fn write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        // MSG_NOSIGNAL: a peer that closed is an error here, not a SIGPIPE.
        let mut control = Default::default();
        Ok(rustix::net::sendmsg(
            &self.stream,
            slices,
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        )?)
    }

    fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn kind(&self) -> &'static str {
        "socketpair"
    }
}

/// Two pipes: one this process reads, one it writes.
///
/// A write to a pipe whose reader is gone raises `SIGPIPE`; Rust and Python
/// programs ignore that signal (then the write fails with `EPIPE`), a C host
/// must ignore it too.
#[derive(Debug)]
pub struct PipeTransport {
    read: OwnedFd,
    write: OwnedFd,
}

impl PipeTransport {
    /// Takes the read end of one pipe and the write end of another, making
    /// both non-blocking.
    pub fn new(read: OwnedFd, write: OwnedFd) -> io::Result<PipeTransport> {
        sys::set_nonblocking(read.as_fd(), true)?;
        sys::set_nonblocking(write.as_fd(), true)?;
        Ok(PipeTransport { read, write })
    }
}

impl Transport for PipeTransport {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    fn write_fd(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    fn write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::io::writev(&self.write, slices)?)
    }

    fn shutdown(&self) {
        // A pipe has no shutdown, and closing an fd that other threads may be
        // polling could hand its number to an unrelated file. The kernel wakes
        // its own threads when it closes a peer; the peer sees the end when
        // its process (or the one carrying the stream) ends.
    }

    fn kind(&self) -> &'static str {
        "pipes"
    }
}

/// Most slices passed to one write: Linux's `IOV_MAX`.
const IOV_MAX: usize = 1024;

/// Writes all of `slices` with as few system calls as the transport allows,
/// polling while it is full.
pub(crate) fn write_all(
    transport: &dyn Transport,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let count = slices.len().min(IOV_MAX);
        match transport.write(&slices[..count]) {
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::poll2(transport.write_fd(), None, true, None)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn drain(mut from: &std::fs::File, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        while got.len() < want {
            match from.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = sys::poll2(from.as_fd(), None, false, None);
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    }

    #[test]
    fn pipes_carry_a_vectored_write_larger_than_a_pipe_buffer_whole_and_in_order() {
        let (their_read, our_write) = sys::pipe().expect("pipe");
        let (our_read, _their_write) = sys::pipe().expect("pipe");
        let transport = PipeTransport::new(our_read, our_write).expect("transport");
        assert_eq!(transport.kind(), "pipes");
        // 64 KiB pipe buffers: this must wait for the reader, more than once.
        let a = vec![1u8; 300_000];
        let b = vec![2u8; 5];
        let c = vec![3u8; 200_000];
        let reader = std::thread::spawn(move || {
            let file = std::fs::File::from(their_read);
            drain(&file, 500_005)
        });
        let mut slices = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        write_all(&transport, &mut slices).expect("written");
        let got = reader.join().expect("reader");
        assert_eq!(got.len(), 500_005);
        assert!(got[..300_000].iter().all(|&x| x == 1));
        assert_eq!(&got[300_000..300_005], &[2; 5]);
        assert!(got[300_005..].iter().all(|&x| x == 3));
    }

    #[test]
    fn a_socket_whose_peer_closed_fails_the_write_instead_of_raising_sigpipe() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let transport = SocketTransport::new(ours).expect("transport");
        drop(theirs);
        let mut slices = [IoSlice::new(b"hello")];
        let error = write_all(&transport, &mut slices).expect_err("the peer is gone");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
