//! Transports: what carries a peer's bytes both ways. The kernel frames, polls,
//! reads and writes the same way over any of them; only writing and ending the
//! stream differ.
//!
//! A [`SocketTransport`] is one end of a Unix socketpair (a local twin). A
//! [`PipeTransport`] is a pair of pipes, one per direction: for instance the
//! stdin and stdout of a child process that carries the stream further (an
//! `ssh` client).

use crate::sys;
use rustix::net::SendFlags;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A byte stream both ways to one peer. Its fds are non-blocking; the kernel
/// polls [`Transport::read_fd`] and reads it with `read(2)`, and waits for
/// [`Transport::write_fd`] to drain when a write would block.
pub trait Transport: Send + Sync + 'static {
    /// The fd this process reads the peer's bytes from.
    fn read_fd(&self) -> BorrowedFd<'_>;

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
#[derive(Debug)]
pub struct SocketTransport {
    stream: UnixStream,
}

impl SocketTransport {
    /// Takes `stream`, making it non-blocking. Its send buffer is widened (see
    /// `sys::widen_send_buffer`); a refusal only costs speed.
    pub fn new(stream: UnixStream) -> io::Result<SocketTransport> {
        sys::set_nonblocking(stream.as_fd(), true)?;
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

    fn write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        // MSG_NOSIGNAL: a peer that closed is an error here, not a SIGPIPE.
        let mut control = Default::default();
        Ok(rustix::net::sendmsg(
            &self.stream,
            slices,
            &mut control,
            SendFlags::NOSIGNAL,
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
