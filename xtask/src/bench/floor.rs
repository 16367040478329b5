//! The Rust floor: a socketpair ping-pong between two processes, in Rust on both sides.
//!
//! Each round trip sends a payload of some size and waits for the echo child to send it
//! back whole, measured with the scheduler free to put the processes on different CPUs
//! (each round trip then pays cross-CPU wake-ups) and with both pinned to one CPU. The
//! echo process is this very binary, re-run with the hidden task [`ECHO_CHILD`]; it
//! inherits its end of the socketpair and finds the descriptor's number in [`FD_VAR`]
//! and the payload size in [`SIZE_VAR`]. The child reads a whole payload before writing
//! it back, so a payload larger than the socket buffers cannot deadlock.

use std::{
    env, io,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, RawFd},
        unix::net::UnixStream,
    },
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

/// The hidden task that runs the echo side of the ping-pong.
pub const ECHO_CHILD: &str = "__bench-echo";
/// The environment variable carrying the echo child's socket descriptor.
const FD_VAR: &str = "CPY2PY_BENCH_ECHO_FD";
/// The environment variable carrying the payload size in bytes.
const SIZE_VAR: &str = "CPY2PY_BENCH_ECHO_SIZE";
/// The environment variable asking the echo child to widen its send buffer.
const WIDE_VAR: &str = "CPY2PY_BENCH_ECHO_WIDE";
/// The send buffer asked for by a wide floor, as cpy2py's kernel asks for its
/// sockets (Linux caps it at `net.core.wmem_max`).
pub const WIDE_SEND_BUFFER: usize = 4 << 20;

/// Runs `warmup + rounds` round trips of `size`-byte payloads against a fresh echo
/// child and returns the measured ones (the last `rounds`). With `wide`, both ends
/// ask for a [`WIDE_SEND_BUFFER`] first.
pub fn ping_pong(
    pinned: bool,
    size: usize,
    wide: bool,
    warmup: usize,
    rounds: usize,
) -> Result<Vec<Duration>> {
    // Affinity is inherited by the child, and restored for us when the guard drops.
    let _pin = if pinned {
        Some(Pin::to_one_cpu()?)
    } else {
        None
    };

    let (mut ours, theirs) = UnixStream::pair().context("socketpair")?;
    set_inheritable(&theirs)?;
    if wide {
        widen_send_buffer(&ours)?;
    }
    let mut child = Command::new(env::current_exe().context("cannot find our own binary")?)
        .arg(ECHO_CHILD)
        .env(FD_VAR, theirs.as_raw_fd().to_string())
        .env(SIZE_VAR, size.to_string())
        .env(WIDE_VAR, if wide { "1" } else { "0" })
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start the echo child")?;
    // Only the child may hold its end: if it dies, our reads must see end-of-file.
    drop(theirs);

    // A child that hangs makes our reads fail instead of blocking forever.
    ours.set_read_timeout(Some(Duration::from_secs(30)))?;
    ours.set_write_timeout(Some(Duration::from_secs(30)))?;
    let ping = vec![0xa5u8; size];
    let mut pong = vec![0u8; size];
    let mut samples = Vec::with_capacity(rounds);
    let mut failure = None;
    for round in 0..warmup + rounds {
        let start = Instant::now();
        if let Err(error) = ours
            .write_all(&ping)
            .and_then(|()| ours.read_exact(&mut pong))
        {
            failure = Some(error);
            break;
        }
        if round >= warmup {
            samples.push(start.elapsed());
        }
    }
    if let Some(error) = failure {
        let _ = child.kill();
        let _ = child.wait();
        return Err(error).context("ping-pong with the echo child");
    }
    drop(ours); // end-of-file tells the child to exit
    let status = child.wait().context("waiting for the echo child")?;
    ensure!(status.success(), "the echo child failed ({status})");
    Ok(samples)
}

/// The hidden task [`ECHO_CHILD`]: read payloads of [`SIZE_VAR`] bytes from the
/// inherited socket and send each back, until end-of-file.
pub fn echo_child() -> Result<()> {
    let fd: RawFd = env::var(FD_VAR)
        .with_context(|| format!("{FD_VAR} is not set; this task is run by `cargo xtask bench`"))?
        .parse()
        .with_context(|| format!("{FD_VAR} is not a file descriptor number"))?;
    // SAFETY: F_GETFD only reads the descriptor flags; it fails on a closed descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    ensure!(flags >= 0, "{FD_VAR}={fd} is not an open descriptor");
    // SAFETY: the descriptor is open (checked above), is the socket our parent made
    // inheritable for us, and nothing else in this process knows it: the stream
    // becomes its only owner.
    let mut stream = unsafe { UnixStream::from_raw_fd(fd) };
    let size: usize = env::var(SIZE_VAR)
        .unwrap_or_else(|_| "1".into())
        .parse()
        .with_context(|| format!("{SIZE_VAR} is not a size"))?;
    if env::var(WIDE_VAR).is_ok_and(|v| v == "1") {
        widen_send_buffer(&stream)?;
    }
    let mut payload = vec![0u8; size.max(1)];
    loop {
        match stream.read_exact(&mut payload) {
            Ok(()) => stream.write_all(&payload)?,
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Asks for a [`WIDE_SEND_BUFFER`] on `socket`.
fn widen_send_buffer(socket: &UnixStream) -> Result<()> {
    let wanted = libc::c_int::try_from(WIDE_SEND_BUFFER).context("buffer size")?;
    // SAFETY: passes a live c_int and its exact size; setsockopt only reads it.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&wanted as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error()).context("setsockopt(SO_SNDBUF)");
    }
    Ok(())
}

/// Clears `FD_CLOEXEC`, so that the descriptor survives into a spawned child.
fn set_inheritable(socket: &UnixStream) -> Result<()> {
    let fd = socket.as_raw_fd();
    // SAFETY: F_GETFD/F_SETFD on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error()).context("fcntl(FD_CLOEXEC)");
    }
    Ok(())
}

/// Pins the calling thread to the first CPU it may run on, until dropped.
struct Pin {
    saved: libc::cpu_set_t,
}

impl Pin {
    /// Pins the calling thread to the first CPU of its current affinity.
    fn to_one_cpu() -> Result<Pin> {
        let size = size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; `saved` is a live cpu_set_t of `size` bytes.
        if unsafe { libc::sched_getaffinity(0, size, &mut saved) } != 0 {
            return Err(io::Error::last_os_error()).context("sched_getaffinity");
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: CPU_ISSET only reads bit `cpu` (< CPU_SETSIZE) of a valid set.
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &saved) })
            .context("this thread may run on no CPU at all")?;
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET only writes bit `cpu` (< CPU_SETSIZE) of a valid set.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: pid 0 is the calling thread; `one` is a live cpu_set_t of `size` bytes.
        if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
            return Err(io::Error::last_os_error()).context("sched_setaffinity");
        }
        Ok(Pin { saved })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        // SAFETY: pid 0 is the calling thread; `saved` is the set it had before.
        // Failing to widen the affinity again only makes later measurements pinned.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.saved) };
    }
}
