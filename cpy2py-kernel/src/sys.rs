//! The few Linux calls std does not offer, through rustix: eventfds, timers,
//! polling two fds, pipes, fd flags, socket buffers, the parent-death signal,
//! huge pages for large buffers.

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking, close-on-exec eventfd used to wake one thread.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds one to an eventfd, waking whoever polls it.
pub(crate) fn eventfd_signal(fd: &OwnedFd) {
    // The only possible failure is EAGAIN when the counter is saturated, which
    // still leaves the fd readable: ignoring it is correct.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd to zero.
pub(crate) fn eventfd_drain(fd: &OwnedFd) {
    let mut value = [0u8; 8];
    // EAGAIN means it was zero already.
    let _ = rustix::io::read(fd, &mut value);
}

/// Nanoseconds on the monotonic clock since this process first asked.
pub(crate) fn monotonic_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// A non-blocking, close-on-exec one-shot timer on the monotonic clock, which
/// becomes readable when it expires.
pub(crate) struct Timer(OwnedFd);

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        Ok(Timer(fd))
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// (Re)sets the timer to expire once, `after` from now (at least 1 ns:
    /// zero would disarm it).
    pub(crate) fn arm(&self, after: Duration) {
        let spec = Itimerspec {
            it_interval: timespec(Duration::ZERO),
            it_value: timespec(after.max(Duration::from_nanos(1))),
        };
        // Cannot fail for a timerfd and a valid spec.
        let _ = rustix::time::timerfd_settime(&self.0, TimerfdTimerFlags::empty(), &spec);
    }

    /// Clears an expiry so that the next one is a new readiness edge.
    pub(crate) fn consume(&self) {
        let mut expirations = [0u8; 8];
        // EAGAIN means there was no expiry.
        let _ = rustix::io::read(&self.0, &mut expirations);
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
/// `write` is set). `EINTR` counts as a timeout: callers loop anyway. The
/// timeout is exact (`ppoll`), so a deadline under a millisecond away is
/// neither rounded to zero (a spin) nor to a whole millisecond.
pub(crate) fn poll2(
    first: BorrowedFd<'_>,
    second: Option<BorrowedFd<'_>>,
    write: bool,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let events = if write { PollFlags::OUT } else { PollFlags::IN };
    let timeout = timeout.map(timespec);
    let mut fds = [
        PollFd::new(&first, events),
        PollFd::new(second.as_ref().unwrap_or(&first), PollFlags::IN),
    ];
    let n = if second.is_some() { 2 } else { 1 };
    match rustix::event::poll(&mut fds[..n], timeout.as_ref()) {
        Ok(_) => Ok(Ready {
            first: !fds[0].revents().is_empty(),
            second: n == 2 && !fds[1].revents().is_empty(),
        }),
        Err(rustix::io::Errno::INTR) => Ok(Ready::default()),
        Err(e) => Err(e.into()),
    }
}

/// Clears `FD_CLOEXEC` so that `fd` survives `exec`. Async-signal-safe (a raw
/// system call): may run between fork and exec.
pub(crate) fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?)
}

/// Sets `FD_CLOEXEC`, so that programs this process runs do not inherit `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?)
}

/// Asks the kernel to send SIGKILL to this process when its parent thread dies,
/// then checks the parent is still `parent` (it may have died before the
/// request). Async-signal-safe (raw system calls): runs between fork and exec.
pub(crate) fn die_with_parent(parent: u32) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let now = rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get() as u32);
    if now != parent {
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
pub(crate) fn widen_send_buffer(fd: BorrowedFd<'_>) -> io::Result<usize> {
    rustix::net::sockopt::set_socket_send_buffer_size(fd, SEND_BUFFER)?;
    send_buffer(fd)
}

/// Lets the pipe `fd` hold up to 1 MiB (the default is 64 KiB), for the same
/// reason as [`widen_send_buffer`]; unprivileged processes may be refused
/// beyond `/proc/sys/fs/pipe-max-size`. Returns what was granted.
pub(crate) fn widen_pipe(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(rustix::pipe::fcntl_setpipe_size(fd, 1 << 20)?)
}

/// The send buffer `fd` has (`SO_SNDBUF`, as Linux reports it: doubled).
pub(crate) fn send_buffer(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(rustix::net::sockopt::socket_send_buffer_size(fd)?)
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A close-on-exec duplicate of `fd`, numbered 3 or above.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Makes this process's stderr refer to what `fd` refers to.
pub(crate) fn dup2_stderr(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::stdio::dup2_stderr(fd)?)
}

/// Sets or clears non-blocking mode (one `ioctl`, not a get and a set).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    Ok(rustix::io::ioctl_fionbio(fd, on)?)
}

/// Whether `fd` is an open file descriptor of this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: the fd is only borrowed for this one fcntl(F_GETFD), which
    // reads its flags and fails with EBADF if it is not open; nothing is read
    // from or written to it, and it is not closed.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
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
    // rustix has exit_group only in its experimental runtime module, for
    // processes without a libc; this process has one.
    // SAFETY: _exit never returns and takes an integer.
    unsafe { libc::_exit(code) }
}

/// Asks the kernel to back the whole 2 MiB pages inside `len` bytes at `ptr` (a
/// fresh allocation) with transparent huge pages. Only advice: where huge pages
/// are off or unavailable nothing changes, and errors are ignored.
pub(crate) fn advise_huge_pages(ptr: *const u8, len: usize) {
    // SAFETY: the range is the caller's allocation; MADV_HUGEPAGE changes only
    // how its pages are backed, never their contents or who may use them.
    unsafe { advise_within(ptr, len, 2 << 20, rustix::mm::Advice::LinuxHugepage) }
}

/// Tells the kernel that the whole pages inside `len` bytes at `ptr` (an
/// allocation this process owns and will only write before reading again) may be
/// taken back under memory pressure (`MADV_FREE`). Until they are, writing to
/// them costs no page fault; once they are, they read as zeros. Errors are
/// ignored: the pages then simply stay.
pub(crate) fn advise_lazy_free(ptr: *const u8, len: usize) {
    // SAFETY: the range is the caller's allocation, whose contents are not
    // read again before being written (the caller's contract): MADV_FREE may
    // only replace them with zeros.
    unsafe {
        advise_within(
            ptr,
            len,
            rustix::param::page_size(),
            rustix::mm::Advice::LinuxFree,
        )
    }
}

/// `madvise` on the `align`-aligned part of `len` bytes at `ptr`.
///
/// # Safety
///
/// `ptr..ptr + len` must lie inside an allocation the caller owns, and `advice`
/// must not change what the caller's later use of it relies on.
unsafe fn advise_within(ptr: *const u8, len: usize, align: usize, advice: rustix::mm::Advice) {
    let start = (ptr as usize).next_multiple_of(align);
    let end = (ptr as usize).saturating_add(len) / align * align;
    if end <= start {
        return;
    }
    // SAFETY: `start..end` is page-aligned and inside the caller's allocation,
    // and the advice is one the caller's use allows (this function's contract).
    let _ = unsafe { rustix::mm::madvise(start as *mut std::ffi::c_void, end - start, advice) };
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
    fn a_poll_waits_out_a_timeout_under_a_millisecond_without_rounding_it_away() {
        let timer = Timer::new().expect("timerfd");
        let start = std::time::Instant::now();
        let ready = poll2(timer.fd(), None, false, Some(Duration::from_micros(300))).unwrap();
        let waited = start.elapsed();
        assert!(!ready.first);
        assert!(
            waited >= Duration::from_micros(300),
            "returned after {waited:?}"
        );
    }

    #[test]
    fn the_second_fd_wakes_a_poll_on_two() {
        let quiet = Timer::new().expect("timerfd");
        let efd = eventfd().expect("eventfd");
        eventfd_signal(&efd);
        let ready = poll2(
            quiet.fd(),
            Some(efd.as_fd()),
            false,
            Some(Duration::from_secs(5)),
        )
        .unwrap();
        assert!(ready.second && !ready.first);
        eventfd_drain(&efd);
        let ready = poll2(quiet.fd(), Some(efd.as_fd()), false, Some(Duration::ZERO)).unwrap();
        assert!(!ready.second, "drained");
    }

    #[test]
    fn a_widened_send_buffer_holds_a_whole_mebibyte_where_the_system_allows() {
        use std::io::Write;
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let default = {
            let (probe, _other) = std::os::unix::net::UnixStream::pair().unwrap();
            send_buffer(probe.as_fd()).expect("getsockopt")
        };
        let granted = widen_send_buffer(ours.as_fd()).expect("setsockopt");
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
            set_nonblocking(ours.as_fd(), true).unwrap();
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
    fn open_fds_are_told_from_closed_ones() {
        let (read, _write) = pipe().expect("pipe");
        assert!(is_open(std::os::fd::AsRawFd::as_raw_fd(&read)));
        // (a number just closed could be reused at once by another test's thread)
        assert!(!is_open(i32::MAX - 1));
        assert!(!is_open(-1));
    }
}
