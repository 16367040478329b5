//! Starting twins (the master's side) and the Hello handshake both ways; the
//! twin's side is in `connect.rs`.

use crate::connect::{ENV_FD, ENV_MASTER_NAME, ENV_STDERR_FD, ENV_TWIN_ID};
use crate::error::KernelError;
use crate::kernel::{Kernel, Role};
use crate::lifecycle::reap;
use crate::peer::{Peer, ReadBuf, lock};
use crate::proto::{Incoming, check_hello, hello};
use crate::sys;
use crate::transport::{self, SocketTransport, Transport};
use cpy2py_wire::{Envelope, FrameDecoder, Hello, Message, PeerId, encode_frame};
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
    stderr: OwnedFd,
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
        let now = Instant::now();
        if now >= deadline {
            return Err(HelloError::Timeout);
        }
        let slice = (deadline - now).min(Duration::from_millis(20));
        match sys::poll2(transport.read_fd(), None, false, Some(slice)) {
            Ok(ready) if ready.first => match buf.read_from(transport, false) {
                Ok(0) => {
                    return Err(match exited() {
                        Some(status) => HelloError::Exited(status),
                        None => HelloError::Closed,
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(match exited() {
                        Some(status) => HelloError::Exited(status),
                        None => HelloError::Closed,
                    });
                }
                Err(e) => return Err(HelloError::Bad(e.to_string())),
            },
            Ok(_) => {
                if let Some(status) = exited() {
                    return Err(HelloError::Exited(status));
                }
            }
            Err(e) => return Err(HelloError::Bad(e.to_string())),
        }
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
    /// The twin inherits stdin and stdout; its stderr is captured until it has
    /// connected (so that a failing start can show it) and then restored to
    /// ours. It gets SIGKILL if this process dies.
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
        let (ours, theirs) = UnixStream::pair().map_err(io_err("creating a socketpair"))?;
        let (err_read, err_write) = sys::pipe().map_err(io_err("creating the stderr pipe"))?;
        let our_stderr =
            sys::dup(std::io::stderr().as_fd()).map_err(io_err("duplicating stderr"))?;
        let peer_id = PeerId(
            self.shared
                .next_peer
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );

        let child_fd: RawFd = theirs.as_raw_fd();
        let stderr_fd: RawFd = our_stderr.as_raw_fd();
        let parent = sys::getpid();
        let mut command = Command::new(&spec.executable);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_FD, child_fd.to_string())
            .env(ENV_STDERR_FD, stderr_fd.to_string())
            .env(ENV_TWIN_ID, &spec.twin_id)
            .env(ENV_MASTER_NAME, &self.shared.local.name)
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::from(err_write));
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        // SAFETY: the closure runs between fork and exec and only makes raw
        // system calls (fcntl, prctl, getppid), which are async-signal-safe; it
        // allocates nothing and takes no locks. The two fds it borrows are open
        // in the child: they are `theirs` and `our_stderr`, alive in the parent
        // until after the spawn (below), and fork copies them.
        unsafe {
            command.pre_exec(move || {
                sys::clear_cloexec(BorrowedFd::borrow_raw(child_fd))?;
                sys::clear_cloexec(BorrowedFd::borrow_raw(stderr_fd))?;
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
        // Our copies of the child's ends must close, or we would never see EOF.
        drop(theirs);
        drop(our_stderr);
        let child = spawn_result.map_err(|source| KernelError::Spawn {
            twin_id: spec.twin_id.clone(),
            path: spec.executable.clone(),
            source,
        })?;
        let pid = child.id();
        tracing::debug!(twin = %spec.twin_id, pid, peer = peer_id.0, "twin process started");

        let timeout = spec
            .startup_timeout
            .unwrap_or(self.shared.config.handshake_timeout);
        let ours = SocketTransport::new(ours).map_err(io_err("configuring the socket"))?;
        let info = self.handshake(
            Box::new(ours),
            peer_id,
            &spec.twin_id,
            &spec.executable,
            Some(Started {
                child,
                stderr: err_read,
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
        let stderr = |started: &Option<Started>| {
            started
                .as_ref()
                .map(|s| read_stderr(&s.stderr))
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
            Some(KernelError::ExitedEarly {
                twin_id: twin_id.to_owned(),
                path: path.to_owned(),
                pid,
                status,
                stderr: read_stderr(&s.stderr),
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
        let result = read_hello(
            &*ours,
            &mut buf,
            &decoder,
            PeerId::MASTER,
            Instant::now() + timeout,
            || match started.as_mut().map(|s| s.child.try_wait()) {
                Some(Ok(Some(status))) => Some(sys::describe_status(status)),
                _ => None,
            },
        );
        let handshake_error = |reason: String, stderr: String| KernelError::Handshake {
            peer: format!("twin {twin_id:?} (pid {pid})"),
            reason: if stderr.trim().is_empty() {
                reason
            } else {
                format!("{reason}; its stderr:\n{}", stderr.trim_end())
            },
        };
        let envelope = match result {
            Ok(envelope) => envelope,
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
            // Whatever the twin wrote before redirecting its stderr belongs on ours.
            let early = read_stderr(&started.stderr);
            if !early.is_empty() {
                eprint!("{early}");
            }
            *lock(&peer.child) = Some(started.child);
        }
        self.insert_peer(peer)?;
        Ok(info)
    }
}
