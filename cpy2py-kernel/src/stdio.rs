//! Twins whose frames travel over a child process's stdin and stdout (for
//! example an `ssh` client running `python -m cpy2py.twin` on another host):
//! the greeting line that comes before the frames, the twin's side of taking
//! over its stdio, and the relay that copies the child's stderr to ours.
//!
//! The kernel knows nothing of what carries the stream: only that a child's
//! stdin and stdout are the twin's, and its stderr is the twin's stderr.

use crate::peer::lock;
use crate::sys;
use cpy2py_wire::PROTOCOL_VERSION;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What starts the greeting line a stdio twin writes before its first frame.
const GREETING: &str = "cpy2py-stdio";

/// The version of this crate, which the Python package shares.
pub(crate) const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most bytes read before the greeting: shell startup files that print to
/// stdout, say. Past this the twin is refused.
pub(crate) const GREETING_MAX: usize = 64 * 1024;

/// The line a stdio twin writes first: `cpy2py-stdio protocol=5 version=0.1.0`.
///
/// Plain text rather than a frame, so that a master of any version can read
/// it and name both versions when they differ, and so that anything printed
/// before it (a shell's greeting) can be told apart from it.
pub(crate) fn greeting() -> String {
    format!("{GREETING} protocol={PROTOCOL_VERSION} version={CRATE_VERSION}\n")
}

/// A line read before the frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// The greeting of our protocol version.
    Ours,
    /// A greeting of another protocol: `(protocol, version)` as the twin wrote them.
    Other(String, String),
    /// Not a greeting: something else wrote to the twin's stdout first.
    Noise,
}

/// Classifies one line (with or without its `\n`).
pub(crate) fn parse_greeting(line: &[u8]) -> Line {
    let text = String::from_utf8_lossy(line);
    let mut words = text.trim_end().split(' ');
    if words.next() != Some(GREETING) {
        return Line::Noise;
    }
    let mut protocol = String::from("?");
    let mut version = String::from("?");
    for word in words {
        if let Some(value) = word.strip_prefix("protocol=") {
            protocol = value.to_owned();
        } else if let Some(value) = word.strip_prefix("version=") {
            version = value.to_owned();
        }
    }
    if protocol == PROTOCOL_VERSION.to_string() {
        Line::Ours
    } else {
        Line::Other(protocol, version)
    }
}

/// Twin: takes this process's stdin and stdout for the stream to the master,
/// as `(read, write)`. Afterwards fd 0 reads `/dev/null` and fd 1 is a copy of
/// stderr, so that user code reading stdin or printing cannot touch the stream.
pub(crate) fn take_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    let read = sys::dup(io::stdin().as_fd())?;
    let write = sys::dup(io::stdout().as_fd())?;
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(io::stderr().as_fd())?;
    Ok((read, write))
}

/// Lines of the child's stderr kept for the message when it ends.
const TAIL_LINES: usize = 4;
/// Longest line relayed as one (a longer one is cut into pieces).
const LINE_MAX: usize = 4096;

#[derive(Default)]
struct RelayState {
    /// Until the handshake ends, stderr is held here rather than relayed: a
    /// failed start puts it in its error instead.
    holding: bool,
    early: Vec<u8>,
    tail: VecDeque<String>,
    ended: bool,
}

/// Copies a child's stderr to this process's stderr, each line prefixed with
/// the twin id, from a thread of its own; keeps the last lines for messages.
pub(crate) struct StderrRelay {
    prefix: String,
    state: Mutex<RelayState>,
    ended: Condvar,
}

impl StderrRelay {
    /// Starts relaying `pipe` for twin `twin_id`, holding everything until
    /// [`StderrRelay::release`].
    pub(crate) fn start(pipe: OwnedFd, twin_id: &str) -> io::Result<Arc<StderrRelay>> {
        let relay = Arc::new(StderrRelay {
            prefix: format!("[{twin_id}] "),
            state: Mutex::new(RelayState {
                holding: true,
                ..RelayState::default()
            }),
            ended: Condvar::new(),
        });
        let running = Arc::clone(&relay);
        std::thread::Builder::new()
            .name(format!("cpy2py-err-{twin_id}"))
            .spawn(move || running.run(pipe))?;
        Ok(relay)
    }

    fn run(&self, pipe: OwnedFd) {
        let mut partial: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match rustix::io::read(&pipe, &mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(end) = partial[start..].iter().position(|&b| b == b'\n') {
                self.line(&partial[start..start + end + 1]);
                start += end + 1;
            }
            partial.drain(..start);
            if partial.len() >= LINE_MAX {
                partial.push(b'\n');
                self.line(&partial);
                partial.clear();
            }
        }
        if !partial.is_empty() {
            partial.push(b'\n');
            self.line(&partial);
        }
        lock(&self.state).ended = true;
        self.ended.notify_all();
    }

    /// One line, `\n` included.
    fn line(&self, line: &[u8]) {
        let mut state = lock(&self.state);
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        if !text.is_empty() {
            if state.tail.len() == TAIL_LINES {
                state.tail.pop_front();
            }
            state.tail.push_back(text);
        }
        if state.holding {
            if state.early.len() < GREETING_MAX {
                state.early.extend_from_slice(line);
            }
            return;
        }
        drop(state);
        self.write(line);
    }

    fn write(&self, text: &[u8]) {
        let mut out = Vec::with_capacity(self.prefix.len() + text.len());
        for line in text.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        let _ = io::stderr().lock().write_all(&out);
    }

    /// The handshake succeeded: relays what was held, then every line as it
    /// comes.
    pub(crate) fn release(&self) {
        let mut state = lock(&self.state);
        state.holding = false;
        let early = std::mem::take(&mut state.early);
        // Written under the lock so that later lines cannot overtake it.
        if !early.is_empty() {
            self.write(&early);
        }
    }

    /// What was held, waiting up to `wait` for the child's stderr to end
    /// first (it ends when the child has exited): for a failed start.
    pub(crate) fn take_held(&self, wait: Duration) -> String {
        let state = self.wait_for_end(wait);
        let mut state = state;
        String::from_utf8_lossy(&std::mem::take(&mut state.early)).into_owned()
    }

    /// The last lines the child wrote, waiting up to `wait` for its stderr to
    /// end first: for the message of a twin that ended.
    pub(crate) fn tail(&self, wait: Duration) -> Vec<String> {
        self.wait_for_end(wait).tail.iter().cloned().collect()
    }

    fn wait_for_end(&self, wait: Duration) -> std::sync::MutexGuard<'_, RelayState> {
        let deadline = Instant::now() + wait;
        let mut state = lock(&self.state);
        while !state.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .ended
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_is_recognised_and_another_version_is_named() {
        assert_eq!(parse_greeting(greeting().as_bytes()), Line::Ours);
        assert_eq!(
            parse_greeting(b"cpy2py-stdio protocol=999 version=0.0.1\n"),
            Line::Other("999".into(), "0.0.1".into())
        );
        assert_eq!(
            parse_greeting(b"cpy2py-stdio\n"),
            Line::Other("?".into(), "?".into())
        );
        assert_eq!(parse_greeting(b"Welcome to host!\n"), Line::Noise);
        assert_eq!(parse_greeting(b""), Line::Noise);
    }

    #[test]
    fn the_relay_holds_lines_until_released_and_keeps_the_last_ones() {
        let (read, write) = sys::pipe().expect("pipe");
        let relay = StderrRelay::start(read, "t").expect("relay");
        let text: String = (0..10).map(|i| format!("line {i}\n")).collect();
        rustix::io::write(&write, text.as_bytes()).expect("write");
        rustix::io::write(&write, b"no newline at the end").expect("write");
        drop(write);
        let held = relay.take_held(Duration::from_secs(10));
        assert_eq!(held, format!("{text}no newline at the end\n"));
        assert_eq!(
            relay.tail(Duration::ZERO),
            vec!["line 7", "line 8", "line 9", "no newline at the end"]
        );
    }
}
