//! Thin, checked wrappers around the few Linux calls std does not offer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A non-blocking, close-on-exec eventfd used to wake one thread.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new fd that
    // we own exclusively.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd, waking whoever polls it.
pub(crate) fn eventfd_signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an fd we own. The only possible
    // failure is EAGAIN when the counter is saturated, which still leaves the
    // fd readable: ignoring it is correct.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

/// Resets an eventfd to zero.
pub(crate) fn eventfd_drain(fd: &OwnedFd) {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; EAGAIN (already zero) is fine.
    unsafe {
        libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8);
    }
}

/// Nanoseconds on the monotonic clock since this process first asked.
pub(crate) fn monotonic_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// A non-blocking, close-on-exec one-shot timer on the monotonic clock, which
/// becomes readable when it expires.
pub(crate) struct Timer(OwnedFd);

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a
        // new fd that we own exclusively.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else.
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// (Re)sets the timer to expire once, `after` from now (at least 1 ns:
    /// zero would disarm it).
    pub(crate) fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a live itimerspec read by the call; the old value is
        // not asked for (null). It cannot fail for a valid fd and spec.
        unsafe {
            libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    /// Clears an expiry so that the next one is a new readiness edge.
    pub(crate) fn consume(&self) {
        let mut expirations: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN (no expiry) is fine.
        unsafe {
            libc::read(self.0.as_raw_fd(), (&mut expirations as *mut u64).cast(), 8);
        }
    }
}

/// Which of the polled fds are ready.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ready {
    /// The first fd has data, EOF or an error.
    pub first: bool,
    /// The second fd is readable.
    pub second: bool,
}

/// `poll(2)` on up to two fds for readability (or writability of the first if
/// `write` is set). `EINTR` counts as a timeout: callers loop anyway.
pub(crate) fn poll2(
    first: RawFd,
    second: Option<RawFd>,
    write: bool,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let events = if write { libc::POLLOUT } else { libc::POLLIN };
    let mut fds = [
        libc::pollfd {
            fd: first,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: second.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let n = if second.is_some() { 2 } else { 1 };
    let ms = timeout_ms(timeout);
    // SAFETY: `fds` is a live array of `n` (<= 2) pollfd structs.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready::default());
        }
        return Err(err);
    }
    Ok(Ready {
        first: fds[0].revents != 0,
        second: n == 2 && fds[1].revents != 0,
    })
}

/// Clears `FD_CLOEXEC` so that `fd` survives `exec`. Async-signal-safe: may run
/// between fork and exec.
pub(crate) fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd takes no pointers.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// Asks the kernel to send SIGKILL to this process when its parent thread dies,
/// then checks the parent is still `parent` (it may have died before the
/// request). Async-signal-safe: runs between fork and exec.
pub(crate) fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer signal number.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) })?;
    // SAFETY: getppid has no arguments and cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::other("parent exited before the twin started"));
    }
    Ok(())
}

/// What [`widen_send_buffer`] asks for. Linux caps it at `net.core.wmem_max`
/// (212,992 bytes by default; 4 MiB on some distributions and VMs).
pub(crate) const SEND_BUFFER: usize = 4 << 20;

/// Lets `fd` hold up to [`SEND_BUFFER`] bytes not yet read by its peer, and returns
/// what the kernel granted. A Unix stream socket's send buffer bounds the data in
/// flight: with the default 208 KiB a 1 MiB frame crosses in five chunks, each
/// waiting for the reader to drain the last (unpinned, a cross-CPU wake-up each,
/// 735 µs per 1 MiB round trip here against 320 µs with 1 MiB of buffer). It is a
/// limit, not an allocation.
pub(crate) fn widen_send_buffer(fd: RawFd) -> io::Result<usize> {
    let wanted = libc::c_int::try_from(SEND_BUFFER).unwrap_or(libc::c_int::MAX);
    // SAFETY: passes a live c_int and its exact size; setsockopt only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&wanted as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    send_buffer(fd)
}

/// The send buffer `fd` has (`SO_SNDBUF`, as Linux reports it: doubled).
pub(crate) fn send_buffer(fd: RawFd) -> io::Result<usize> {
    let mut size: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live c_int `size`
    // and stores the written length in the live `len`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut size as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(usize::try_from(size).unwrap_or(0))
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two c_ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec duplicate of `fd`.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an integer fd; the result is a new fd we own.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Makes `target` refer to what `fd` refers to (`dup2`).
pub(crate) fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on integer fds takes no pointers.
    cvt(unsafe { libc::dup2(fd, target) }).map(drop)
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL/F_SETFL) on an integer fd takes no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// This process's id.
pub(crate) fn getpid() -> u32 {
    std::process::id()
}

/// Describes a wait status like a shell would.
pub(crate) fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        format!("killed by signal {sig} ({})", signal_name(sig))
    } else {
        format!("ended with wait status {}", status.into_raw())
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Exits the process at once, without running destructors or atexit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and takes an integer.
    unsafe { libc::_exit(code) }
}

/// `poll`'s timeout argument: -1 for none, else milliseconds rounded up, so
/// that a deadline under a millisecond away does not become a zero timeout
/// (which would make the caller spin until the deadline).
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_fires_once_after_its_delay_and_rearms() {
        let timer = Timer::new().expect("timerfd");
        let ready = poll2(timer.fd(), None, false, Some(Duration::from_millis(20))).unwrap();
        assert!(!ready.first, "an unarmed timer is not readable");
        let start = std::time::Instant::now();
        timer.arm(Duration::from_millis(5));
        let ready = poll2(timer.fd(), None, false, Some(Duration::from_secs(5))).unwrap();
        assert!(ready.first && start.elapsed() >= Duration::from_millis(5));
        timer.consume();
        let ready = poll2(timer.fd(), None, false, Some(Duration::from_millis(20))).unwrap();
        assert!(!ready.first, "one expiry, consumed");
        timer.arm(Duration::from_millis(50));
        timer.arm(Duration::from_millis(1)); // re-arming replaces the deadline
        let ready = poll2(timer.fd(), None, false, Some(Duration::from_millis(40))).unwrap();
        assert!(ready.first);
    }

    #[test]
    fn a_widened_send_buffer_holds_a_whole_mebibyte_where_the_system_allows() {
        use std::io::Write;
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let default = {
            let (probe, _other) = std::os::unix::net::UnixStream::pair().unwrap();
            send_buffer(probe.as_raw_fd()).expect("getsockopt")
        };
        let granted = widen_send_buffer(ours.as_raw_fd()).expect("setsockopt");
        assert!(granted > default, "granted {granted}, default {default}");
        // Linux doubles the request for its bookkeeping and caps it at twice
        // net.core.wmem_max; what it grants is what a writer may queue.
        let cap = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok());
        if let Some(cap) = cap {
            assert_eq!(granted, 2 * SEND_BUFFER.min(cap));
        }
        if granted >= 2 * (1 << 20) {
            // Without a reader, a nonblocking writer queues a whole 1 MiB.
            let mut writer = &ours;
            ours.set_nonblocking(true).unwrap();
            let payload = vec![7u8; 1 << 20];
            let mut sent = 0;
            while sent < payload.len() {
                match writer.write(&payload[sent..]) {
                    Ok(n) => sent += n,
                    Err(error) => panic!("queued only {sent} bytes: {error}"),
                }
            }
        }
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(999))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(100))), 100);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
    }
}
