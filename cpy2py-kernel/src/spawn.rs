//! Starting twins (the master's side) and the Hello handshake both ways; the
//! twin's side is in `connect.rs`.

use crate::connect::{ENV_FD, ENV_MASTER_NAME, ENV_STDERR_FD, ENV_TWIN_ID};
use crate::error::KernelError;
use crate::kernel::{Kernel, Role};
use crate::lifecycle::reap;
use crate::peer::StdioChild;
use crate::peer::{Peer, ReadBuf, lock};
use crate::proto::{Incoming, check_hello, hello};
use crate::stdio::{self, Line, StderrRelay};
use crate::sys;
use crate::transport::{self, PipeTransport, SocketTransport, Transport};
use cpy2py_wire::{Envelope, FrameDecoder, Hello, Message, PROTOCOL_VERSION, PeerId, encode_frame};
use std::ffi::OsString;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to start a twin.
#[derive(Clone, Debug)]
pub struct TwinSpec {
    /// The interpreter to run.
    pub executable: PathBuf,
    /// The twin's id (unique among running twins).
    pub twin_id: String,
    /// Arguments (e.g. `["-m", "cpy2py.twin"]`).
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory (inherited if `None`).
    pub cwd: Option<PathBuf>,
    /// Limit from process start to the end of the handshake (the kernel's
    /// configured default if `None`).
    pub startup_timeout: Option<Duration>,
    /// What carries the twin's frames.
    pub channel: Channel,
    /// Where the twin runs when not here (e.g. `"user@gpu-box"`), for messages.
    pub location: Option<String>,
}

/// What carries the frames of a twin the master starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Channel {
    /// A socketpair: the twin inherits its end, named by [`crate::ENV_FD`].
    #[default]
    Socketpair,
    /// The child's stdin and stdout, for a child that carries the stream
    /// further (an `ssh` client that runs the twin on another host, say). The
    /// child gets none of the kernel's variables: the twin at the far end
    /// needs those of [`crate::TwinEnv::stdio_vars`], which the child must
    /// pass on. The twin writes a greeting line before its first frame (which
    /// names both versions when they differ); the child's stderr is relayed to
    /// ours, each line prefixed with `[twin id]`, and its last line ends up in
    /// the message when the twin is lost.
    Stdio,
}

impl TwinSpec {
    /// A spec running `executable -m cpy2py.twin` with id `twin_id`.
    pub fn python(executable: impl Into<PathBuf>, twin_id: impl Into<String>) -> Self {
        TwinSpec {
            executable: executable.into(),
            twin_id: twin_id.into(),
            args: vec!["-m".into(), "cpy2py.twin".into()],
            env: Vec::new(),
            cwd: None,
            startup_timeout: None,
            channel: Channel::Socketpair,
            location: None,
        }
    }
}

/// A started twin.
#[derive(Clone, Debug)]
pub struct TwinInfo {
    /// Its peer id.
    pub peer: PeerId,
    /// Its process id.
    pub pid: u32,
    /// Its interpreter, from the handshake.
    pub interpreter: String,
    /// Its interpreter's version.
    pub version: String,
}

/// A twin process we started, during its handshake.
struct Started {
    child: Child,
    stderr: EarlyStderr,
    location: Option<String>,
}

/// Where a starting twin's stderr goes until the handshake is done.
enum EarlyStderr {
    /// A pipe, read when the start fails (socketpair twins, which then point
    /// their stderr at ours themselves).
    Pipe(OwnedFd),
    /// A relay holding it (stdio twins).
    Relay(Arc<StderrRelay>),
}

impl EarlyStderr {
    /// What the twin wrote so far; waits up to `wait` for more when the twin
    /// is known to have ended.
    fn text(&self, wait: Duration) -> String {
        match self {
            EarlyStderr::Pipe(pipe) => read_stderr(pipe),
            EarlyStderr::Relay(relay) => relay.take_held(wait),
        }
    }
}

/// A fork+exec done by the spawner thread.
pub(crate) struct SpawnJob {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Twins are started from one long-lived thread because the parent-death
/// signal fires when the *thread* that forked exits, not the process.
fn spawner(kernel: &Kernel) -> io::Result<mpsc::Sender<SpawnJob>> {
    let mut slot = lock(&kernel.shared.spawner);
    if let Some(tx) = &*slot {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    std::thread::Builder::new()
        .name("cpy2py-spawner".into())
        .spawn(move || {
            for mut job in rx {
                let _ = job.reply.send(job.command.spawn());
            }
        })?;
    *slot = Some(tx.clone());
    Ok(tx)
}

pub(crate) fn send_hello(
    transport: &dyn Transport,
    src: PeerId,
    dst: PeerId,
    hello: Hello,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let envelope = Envelope {
        src,
        dst,
        message: Message::Hello(hello),
    };
    encode_frame(&envelope, &mut buf).map_err(io::Error::other)?;
    transport::write_all(transport, &mut [IoSlice::new(&buf)])
}

/// Why reading the peer's Hello failed.
pub(crate) enum HelloError {
    Timeout,
    Closed,
    Exited(String),
    Bad(String),
}

/// Waits until `transport` is readable and reads once into `buf`, giving up
/// at `deadline` or when `exited` reports the process gone.
fn fill(
    transport: &dyn Transport,
    buf: &mut ReadBuf,
    deadline: Instant,
    exited: &mut dyn FnMut() -> Option<String>,
) -> Result<(), HelloError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(HelloError::Timeout);
    }
    let ended = |exited: &mut dyn FnMut() -> Option<String>| match exited() {
        Some(status) => HelloError::Exited(status),
        None => HelloError::Closed,
    };
    let slice = (deadline - now).min(Duration::from_millis(20));
    match sys::poll2(transport.read_fd(), None, false, Some(slice)) {
        Ok(ready) if ready.first => match buf.read_from(transport, false) {
            Ok(0) => Err(ended(exited)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(ended(exited)),
            Err(e) => Err(HelloError::Bad(e.to_string())),
        },
        Ok(_) => match exited() {
            Some(status) => Err(HelloError::Exited(status)),
            None => Ok(()),
        },
        Err(e) => Err(HelloError::Bad(e.to_string())),
    }
}

/// Reads one Hello from a non-blocking stream, giving up at `deadline` or
/// when `exited` reports the process gone.
pub(crate) fn read_hello(
    transport: &dyn Transport,
    buf: &mut ReadBuf,
    decoder: &FrameDecoder,
    me: PeerId,
    deadline: Instant,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<Envelope, HelloError> {
    loop {
        match buf.next_frame(decoder, me, false) {
            Ok(Some(Incoming::Local(envelope))) => return Ok(envelope),
            Ok(Some(Incoming::Forward { .. })) => {
                return Err(HelloError::Bad(
                    "a forwarded frame during the handshake".into(),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(HelloError::Bad(e.to_string())),
        }
        fill(transport, buf, deadline, &mut exited)?;
    }
}

/// Reads the greeting line of a stdio twin (see `stdio::greeting`); returns
/// the lines something else wrote before it.
fn read_greeting(
    transport: &dyn Transport,
    buf: &mut ReadBuf,
    deadline: Instant,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<Vec<String>, HelloError> {
    let mut noise = Vec::new();
    let mut noise_bytes = 0;
    loop {
        while let Some(line) = buf.take_line() {
            match stdio::parse_greeting(&line) {
                Line::Ours => return Ok(noise),
                Line::Other(protocol, version) => {
                    return Err(HelloError::Bad(format!(
                        "it runs cpy2py {version} (protocol {protocol}), this process cpy2py {} \
                         (protocol {PROTOCOL_VERSION}): install the same cpy2py version on both sides",
                        stdio::CRATE_VERSION
                    )));
                }
                Line::Noise => {
                    noise_bytes += line.len();
                    noise.push(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
            }
        }
        if noise_bytes + buf.pending() > stdio::GREETING_MAX {
            return Err(HelloError::Bad(format!(
                "its stdout carried more than {} bytes without cpy2py's greeting (does something \
                 print to stdout before the twin starts, such as a shell startup file?); it began: {:?}",
                stdio::GREETING_MAX,
                noise.first().map(String::as_str).unwrap_or_default()
            )));
        }
        fill(transport, buf, deadline, &mut exited)?;
    }
}

/// Reads what a twin wrote to stderr before it redirected it (non-blocking).
fn read_stderr(pipe: &OwnedFd) -> String {
    let _ = sys::set_nonblocking(pipe.as_fd(), true);
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.len() < 64 * 1024 {
        match rustix::io::read(pipe, &mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Kernel {
    /// Master: starts a twin and completes the handshake.
    ///
    /// Over a socketpair ([`Channel::Socketpair`]) the twin inherits stdin
    /// and stdout; its stderr is captured until it has connected (so that a
    /// failing start can show it) and then restored to ours. Over stdio
    /// ([`Channel::Stdio`]) see there. The child gets SIGKILL if this process
    /// dies.
    pub fn spawn(&self, spec: TwinSpec) -> Result<TwinInfo, KernelError> {
        if self.role() != Role::Master {
            return Err(KernelError::NotATwin("only the master starts twins".into()));
        }
        if self.is_stopping() {
            return Err(KernelError::ShuttingDown);
        }
        if self.peer_by_name(&spec.twin_id).is_some() {
            return Err(KernelError::DuplicateTwin(spec.twin_id));
        }
        let _span = tracing::debug_span!("spawn", twin = %spec.twin_id).entered();
        let io_err = |context| move |source| KernelError::Io { context, source };
        let (err_read, err_write) = sys::pipe().map_err(io_err("creating the stderr pipe"))?;
        let peer_id = PeerId(
            self.shared
                .next_peer
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let parent = sys::getpid();
        let mut command = Command::new(&spec.executable);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::from(err_write));
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        // The fds the child inherits beyond its stdio, and what we keep.
        let (inherit, ours, child_ends): ([RawFd; 2], Box<dyn Transport>, Vec<OwnedFd>) = match spec
            .channel
        {
            Channel::Socketpair => {
                let (ours, theirs) = UnixStream::pair().map_err(io_err("creating a socketpair"))?;
                let our_stderr =
                    sys::dup(std::io::stderr().as_fd()).map_err(io_err("duplicating stderr"))?;
                let inherit = [theirs.as_raw_fd(), our_stderr.as_raw_fd()];
                command
                    .env(ENV_FD, inherit[0].to_string())
                    .env(ENV_STDERR_FD, inherit[1].to_string())
                    .env(ENV_TWIN_ID, &spec.twin_id)
                    .env(ENV_MASTER_NAME, &self.shared.local.name)
                    .stdin(Stdio::inherit())
                    .stdout(Stdio::inherit());
                let ours = SocketTransport::new(ours).map_err(io_err("configuring the socket"))?;
                (inherit, Box::new(ours), vec![theirs.into(), our_stderr])
            }
            Channel::Stdio => {
                let (their_stdin, our_write) =
                    sys::pipe().map_err(io_err("creating the stdin pipe"))?;
                let (our_read, their_stdout) =
                    sys::pipe().map_err(io_err("creating the stdout pipe"))?;
                for end in [&our_read, &our_write] {
                    // Fewer, larger reads and writes; a refusal only costs speed.
                    let _ = sys::widen_pipe(end.as_fd());
                }
                // A process group of its own: a Ctrl-C meant for this program
                // must not end the stream's carrier (an `ssh` client exits on
                // SIGINT). It still dies with us.
                command
                    .stdin(Stdio::from(their_stdin))
                    .stdout(Stdio::from(their_stdout))
                    .process_group(0);
                let ours = PipeTransport::new(our_read, our_write)
                    .map_err(io_err("configuring the pipes"))?;
                ([-1, -1], Box::new(ours), Vec::new())
            }
        };
        // SAFETY: the closure runs between fork and exec and only makes raw
        // system calls (fcntl, prctl, getppid), which are async-signal-safe; it
        // allocates nothing and takes no locks. The fds it borrows (if any) are
        // open in the child: they are in `child_ends`, alive in the parent
        // until after the spawn (below), and fork copies them.
        unsafe {
            command.pre_exec(move || {
                for fd in inherit {
                    if fd >= 0 {
                        sys::clear_cloexec(BorrowedFd::borrow_raw(fd))?;
                    }
                }
                sys::die_with_parent(parent)
            });
        }
        let (tx, rx) = mpsc::channel();
        let spawn_result = spawner(self)
            .map_err(io_err("starting the spawner thread"))?
            .send(SpawnJob { command, reply: tx })
            .ok()
            .and_then(|_| rx.recv().ok())
            .unwrap_or_else(|| Err(io::Error::other("the spawner thread is gone")));
        // Our copies of the child's ends must close, or we would never see EOF
        // (the spawner thread dropped the command, with the stdio ends).
        drop(child_ends);
        let child = spawn_result.map_err(|source| KernelError::Spawn {
            twin_id: spec.twin_id.clone(),
            path: spec.executable.clone(),
            source,
        })?;
        let pid = child.id();
        tracing::debug!(twin = %spec.twin_id, pid, peer = peer_id.0, "twin process started");
        let stderr = match spec.channel {
            Channel::Socketpair => EarlyStderr::Pipe(err_read),
            Channel::Stdio => match StderrRelay::start(err_read, &spec.twin_id) {
                Ok(relay) => EarlyStderr::Relay(relay),
                Err(source) => {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(KernelError::Io {
                        context: "starting the stderr relay",
                        source,
                    });
                }
            },
        };

        let timeout = spec
            .startup_timeout
            .unwrap_or(self.shared.config.handshake_timeout);
        let info = self.handshake(
            ours,
            peer_id,
            &spec.twin_id,
            &spec.executable,
            Some(Started {
                child,
                stderr,
                location: spec.location.clone(),
            }),
            timeout,
        )?;
        tracing::debug!(twin = %spec.twin_id, pid, peer = peer_id.0, "twin connected");
        Ok(info)
    }

    /// Master: adopts a twin already connected to `stream` (for example one run
    /// in another thread of this process, or started by the host itself) and
    /// completes the handshake. Its other end must go to [`Kernel::connect_stream`].
    pub fn attach(&self, stream: UnixStream, twin_id: &str) -> Result<TwinInfo, KernelError> {
        let transport = SocketTransport::new(stream).map_err(|source| KernelError::Io {
            context: "configuring the socket",
            source,
        })?;
        self.attach_transport(Box::new(transport), twin_id)
    }

    /// Master: like [`Kernel::attach`], over any [`Transport`] (for example the
    /// pipes of a child process that carries the stream to another host). The
    /// other end must go to [`Kernel::connect_transport`].
    pub fn attach_transport(
        &self,
        transport: Box<dyn Transport>,
        twin_id: &str,
    ) -> Result<TwinInfo, KernelError> {
        if self.role() != Role::Master {
            return Err(KernelError::NotATwin(
                "only the master attaches twins".into(),
            ));
        }
        if self.peer_by_name(twin_id).is_some() {
            return Err(KernelError::DuplicateTwin(twin_id.to_owned()));
        }
        let peer_id = PeerId(
            self.shared
                .next_peer
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let timeout = self.shared.config.handshake_timeout;
        self.handshake(
            transport,
            peer_id,
            twin_id,
            std::path::Path::new("<attached>"),
            None,
            timeout,
        )
    }

    fn handshake(
        &self,
        ours: Box<dyn Transport>,
        peer_id: PeerId,
        twin_id: &str,
        path: &std::path::Path,
        mut started: Option<Started>,
        timeout: Duration,
    ) -> Result<TwinInfo, KernelError> {
        let pid = started.as_ref().map_or(0, |s| s.child.id());
        // What the twin wrote, after it was killed (so a relay soon ends).
        let stderr = |started: &Option<Started>| {
            started
                .as_ref()
                .map(|s| s.stderr.text(Duration::from_millis(500)))
                .unwrap_or_default()
        };
        let kill = |started: &mut Option<Started>| {
            if let Some(s) = started {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
        };
        let exited_early = |started: &mut Option<Started>| -> Option<KernelError> {
            let s = started.as_mut()?;
            let status = match s.child.try_wait() {
                Ok(Some(status)) => sys::describe_status(status),
                _ => reap(&mut s.child, Duration::from_millis(500)),
            };
            // Reaped by now: `try_wait` returns the status it kept.
            let code = s.child.try_wait().ok().flatten().and_then(|st| st.code());
            let location = s.location.as_ref().map(|l| format!(" on {l}"));
            Some(KernelError::ExitedEarly {
                twin_id: twin_id.to_owned(),
                path: path.to_owned(),
                pid,
                status: format!("{status}{}", location.unwrap_or_default()),
                code,
                stderr: s.stderr.text(Duration::from_millis(500)),
            })
        };
        let setup = || -> io::Result<()> {
            send_hello(
                &*ours,
                PeerId::MASTER,
                peer_id,
                hello(&self.shared.local, peer_id, sys::getpid()),
            )
        };
        if let Err(source) = setup() {
            // The twin may already be gone (EPIPE): report that if so.
            std::thread::sleep(Duration::from_millis(50));
            if let Some(Ok(Some(_))) = started.as_mut().map(|s| s.child.try_wait()) {
                if let Some(err) = exited_early(&mut started) {
                    return Err(err);
                }
            }
            kill(&mut started);
            return Err(KernelError::Io {
                context: "sending the handshake",
                source,
            });
        }
        let mut buf = ReadBuf::new();
        let decoder = FrameDecoder::new(self.shared.config.max_frame);
        let deadline = Instant::now() + timeout;
        let greets = started
            .as_ref()
            .is_some_and(|s| matches!(s.stderr, EarlyStderr::Relay(_)));
        let mut exited = || match started.as_mut().map(|s| s.child.try_wait()) {
            Some(Ok(Some(status))) => Some(sys::describe_status(status)),
            _ => None,
        };
        let result = if greets {
            read_greeting(&*ours, &mut buf, deadline, &mut exited)
        } else {
            Ok(Vec::new())
        }
        .and_then(|noise| {
            read_hello(
                &*ours,
                &mut buf,
                &decoder,
                PeerId::MASTER,
                deadline,
                &mut exited,
            )
            .map(|envelope| (noise, envelope))
        });
        let handshake_error = |reason: String, stderr: String| KernelError::Handshake {
            peer: format!("twin {twin_id:?} (pid {pid})"),
            reason: if stderr.trim().is_empty() {
                reason
            } else {
                format!("{reason}; its stderr:\n{}", stderr.trim_end())
            },
        };
        let (noise, envelope) = match result {
            Ok(read) => read,
            Err(HelloError::Exited(_)) | Err(HelloError::Closed) => {
                return Err(exited_early(&mut started).unwrap_or_else(|| {
                    handshake_error("the twin closed the connection".into(), String::new())
                }));
            }
            Err(HelloError::Timeout) => {
                kill(&mut started);
                return Err(KernelError::HandshakeTimeout {
                    twin_id: twin_id.to_owned(),
                    path: path.to_owned(),
                    pid,
                    seconds: timeout.as_secs_f64(),
                    stderr: stderr(&started),
                });
            }
            Err(HelloError::Bad(reason)) => {
                kill(&mut started);
                return Err(handshake_error(reason, stderr(&started)));
            }
        };
        let hello = match check_hello(envelope, Some(peer_id), Some(twin_id)) {
            Ok(hello) => hello,
            Err(reason) => {
                kill(&mut started);
                return Err(handshake_error(reason.to_string(), stderr(&started)));
            }
        };
        let info = TwinInfo {
            peer: peer_id,
            pid: hello.pid,
            interpreter: hello.interpreter.clone(),
            version: hello.version.clone(),
        };
        let peer = Arc::new(Peer::new(peer_id, hello, ours, buf));
        if let Some(started) = started {
            match started.stderr {
                EarlyStderr::Pipe(pipe) => {
                    // What the twin wrote before pointing its stderr at ours.
                    let early = read_stderr(&pipe);
                    if !early.is_empty() {
                        eprint!("{early}");
                    }
                }
                EarlyStderr::Relay(relay) => {
                    for line in noise {
                        eprintln!("[{twin_id}] (on stdout before the twin started) {line}");
                    }
                    relay.release();
                    let _ = peer.stdio.set(StdioChild {
                        location: started.location,
                        relay,
                    });
                }
            }
            *lock(&peer.child) = Some(started.child);
        }
        self.insert_peer(peer)?;
        Ok(info)
    }
}
