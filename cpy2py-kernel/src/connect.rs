//! The twin's side of starting: what a master hands the twin it starts
//! ([`TwinEnv`], through the variables of [`TWIN_ENV`]), and connecting to the
//! master with the handshake ([`Kernel::connect_twin`] and its kin).

use crate::error::KernelError;
use crate::handler::Handler;
use crate::kernel::{Kernel, KernelConfig, LocalInfo, Role};
use crate::peer::{Peer, ReadBuf};
use crate::proto::{check_hello, hello};
use crate::spawn::{HelloError, read_hello, send_hello};
use crate::stdio;
use crate::sys;
use crate::transport::{self, PipeTransport, SocketTransport, Transport};
use cpy2py_wire::{FrameDecoder, PeerId};
use std::io::IoSlice;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

/// Environment variable naming the twin's end of the socketpair, or
/// [`STDIO_CHANNEL`] when the stream is the twin's stdin and stdout.
pub const ENV_FD: &str = "CPY2PY_FD";
/// The value of [`ENV_FD`] for a twin whose stdin and stdout carry the stream.
pub const STDIO_CHANNEL: &str = "stdio";
/// Environment variable naming a copy of the master's stderr for the twin.
pub const ENV_STDERR_FD: &str = "CPY2PY_STDERR_FD";
/// Environment variable carrying the twin's id.
pub const ENV_TWIN_ID: &str = "CPY2PY_TWIN_ID";
/// Environment variable carrying the master's name (its twin id).
pub const ENV_MASTER_NAME: &str = "CPY2PY_MASTER_NAME";

/// Every variable a master sets for a twin it starts, in the order a twin reads them.
pub const TWIN_ENV: [&str; 4] = [ENV_FD, ENV_STDERR_FD, ENV_TWIN_ID, ENV_MASTER_NAME];

/// What a master hands the twin it starts, through the variables in [`TWIN_ENV`].
///
/// A twin should take these out of its environment before it runs user code, so
/// programs it starts do not look like twins of our master; Python's
/// `cpy2py.twin` does so. [`TwinEnv::read`] takes any lookup for that reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinEnv {
    /// What carries the stream to the master ([`ENV_FD`]).
    pub channel: TwinChannel,
    /// A copy of the master's stderr to restore ([`ENV_STDERR_FD`]).
    pub stderr_fd: Option<RawFd>,
    /// The twin's id ([`ENV_TWIN_ID`]).
    pub twin_id: Option<String>,
    /// The master's name ([`ENV_MASTER_NAME`]).
    pub master_name: Option<String>,
}

/// What carries a twin's stream to its master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwinChannel {
    /// An inherited end of a socketpair.
    Fd(RawFd),
    /// This process's stdin and stdout (see [`crate::Channel::Stdio`]).
    Stdio,
}

impl TwinEnv {
    /// The variables of [`TWIN_ENV`] for twin `twin_id` of master `master_name`
    /// whose stdin and stdout carry the stream: for a command that starts it
    /// elsewhere (e.g. through `ssh`, which does not pass the environment on).
    pub fn stdio_vars(twin_id: &str, master_name: &str) -> Vec<(&'static str, String)> {
        vec![
            (ENV_FD, STDIO_CHANNEL.to_owned()),
            (ENV_TWIN_ID, twin_id.to_owned()),
            (ENV_MASTER_NAME, master_name.to_owned()),
        ]
    }

    /// Reads the variables through `lookup` (e.g. one that removes each from the
    /// environment it reads); only [`ENV_FD`] is required.
    pub fn read(mut lookup: impl FnMut(&str) -> Option<String>) -> Result<TwinEnv, KernelError> {
        let raw_fd = lookup(ENV_FD);
        let stderr_fd = lookup(ENV_STDERR_FD).and_then(|v| v.parse().ok());
        let twin_id = lookup(ENV_TWIN_ID);
        let master_name = lookup(ENV_MASTER_NAME);
        let raw_fd = raw_fd.ok_or_else(|| {
            KernelError::NotATwin(format!(
                "{ENV_FD} is not set: a twin is started by a master"
            ))
        })?;
        let channel = if raw_fd == STDIO_CHANNEL {
            TwinChannel::Stdio
        } else {
            TwinChannel::Fd(raw_fd.parse().map_err(|_| {
                KernelError::NotATwin(format!(
                    "{ENV_FD}={raw_fd:?} is neither a file descriptor nor {STDIO_CHANNEL:?}"
                ))
            })?)
        };
        Ok(TwinEnv {
            channel,
            stderr_fd,
            twin_id,
            master_name,
        })
    }

    /// Reads this process's environment, leaving it as it is.
    pub fn from_process() -> Result<TwinEnv, KernelError> {
        TwinEnv::read(|name| std::env::var(name).ok())
    }
}

impl Kernel {
    /// Twin: connects to the master over the channel `env` names and
    /// completes the handshake. Call [`Kernel::serve`] next.
    pub fn connect_twin(
        env: TwinEnv,
        mut local: LocalInfo,
        config: KernelConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Kernel, KernelError> {
        let io_err = |context| move |source| KernelError::Io { context, source };
        if let Some(id) = env.twin_id {
            local.name = id;
        }
        let fd = match env.channel {
            TwinChannel::Fd(fd) => fd,
            TwinChannel::Stdio => {
                let (read, write) =
                    stdio::take_stdio().map_err(io_err("taking stdin and stdout"))?;
                let transport =
                    PipeTransport::new(read, write).map_err(io_err("configuring the pipes"))?;
                // Before any frame: a master reads this line first (see `stdio`).
                transport::write_all(
                    &transport,
                    &mut [IoSlice::new(stdio::greeting().as_bytes())],
                )
                .map_err(io_err("writing the greeting"))?;
                return Kernel::connect_transport(Box::new(transport), local, config, handler);
            }
        };
        if !sys::is_open(fd) {
            return Err(KernelError::NotATwin(format!(
                "{ENV_FD}={fd} is not an open file"
            )));
        }
        // SAFETY: the fd was inherited from the master for us alone and is open
        // (checked above); nothing else in this process owns it.
        let stream = unsafe { UnixStream::from_raw_fd(fd) };
        // Inherited without FD_CLOEXEC (to survive our exec): a program this
        // twin runs must not inherit it, or the master would see no end of
        // stream when this twin dies while that program lives on.
        sys::set_cloexec(stream.as_fd()).map_err(io_err("configuring the socket"))?;
        // Restore the master's stderr now that we know we can connect.
        if let Some(err_fd) = env.stderr_fd {
            if err_fd > 2 && sys::is_open(err_fd) {
                // SAFETY: the master passed this open fd (checked above) to
                // this process alone, to restore stderr from; nothing else here
                // owns it, and it is closed once copied.
                let inherited = unsafe { OwnedFd::from_raw_fd(err_fd) };
                sys::dup2_stderr(inherited.as_fd()).map_err(io_err("restoring stderr"))?;
            }
        }
        Kernel::connect_stream(stream, local, config, handler)
    }

    /// Twin: completes the handshake with a master over `stream` (the other end
    /// of [`Kernel::attach`], or of the socket a master passed to this process).
    pub fn connect_stream(
        stream: UnixStream,
        local: LocalInfo,
        config: KernelConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Kernel, KernelError> {
        let transport = SocketTransport::new(stream).map_err(|source| KernelError::Io {
            context: "configuring the socket",
            source,
        })?;
        Kernel::connect_transport(Box::new(transport), local, config, handler)
    }

    /// Twin: completes the handshake with a master over any [`Transport`] (the
    /// other end of [`Kernel::attach_transport`]).
    pub fn connect_transport(
        transport: Box<dyn Transport>,
        local: LocalInfo,
        config: KernelConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Kernel, KernelError> {
        let io_err = |context| move |source| KernelError::Io { context, source };
        let decoder = FrameDecoder::new(config.max_frame);
        let mut buf = ReadBuf::new();
        let deadline = Instant::now() + config.handshake_timeout;
        let envelope = read_hello(
            &*transport,
            &mut buf,
            &decoder,
            PeerId(u32::MAX),
            deadline,
            || None,
        )
        .map_err(|e| KernelError::Handshake {
            peer: "master".into(),
            reason: match e {
                HelloError::Timeout => "no Hello from the master in time".into(),
                HelloError::Closed => "the master closed the connection".into(),
                HelloError::Exited(s) | HelloError::Bad(s) => s,
            },
        })?;
        let master_hello =
            check_hello(envelope, None, None).map_err(|reason| KernelError::Handshake {
                peer: "master".into(),
                reason: reason.to_string(),
            })?;
        let me = master_hello.peer;
        let kernel = Kernel::build(
            me,
            Role::Twin,
            local,
            master_hello.twin_id.clone(),
            config,
            handler,
        )?;
        send_hello(
            &*transport,
            me,
            PeerId::MASTER,
            hello(&kernel.shared.local, me, sys::getpid()),
        )
        .map_err(io_err("sending the handshake"))?;
        let master = Arc::new(Peer::new(PeerId::MASTER, master_hello, transport, buf));
        kernel.insert_peer(master)?;
        tracing::debug!(twin = %kernel.name(), peer = me.0, "connected to the master");
        Ok(kernel)
    }
}
