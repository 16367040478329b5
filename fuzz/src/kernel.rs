//! The shell's harness (`kernel_shell`): a master [`Kernel`] reading a fuzzed twin's
//! byte stream over a real socket, its threads and all (`kernel_peer` plays the
//! same inputs against the protocol core alone: [`crate::proto`]).
//!
//! One master kernel (and one well-behaved twin kernel attached to it, the *other*
//! twin) live for the whole fuzzing process; each input is one fuzzed twin:
//!
//! 1. A socketpair; the master attaches one end with [`Kernel::attach`]. The input's
//!    first frame is written to the other end as the twin's handshake (all of the
//!    input, and then end of stream, when it holds no whole frame).
//! 2. If the master accepted the twin, the rest of the input follows as frames.
//! 3. The harness predicts from the bytes what the master must do: close the twin (a
//!    corrupt or oversized frame, a spoofed source, a message a twin may not send),
//!    wait for more bytes (an unfinished frame: the harness then ends the stream), or
//!    keep it (then a probe call from the master to the twin must complete, unless the
//!    master closed the twin, which is allowed).
//! 4. The harness closes its end; the master must report the twin gone. A call to the
//!    other twin must still work.
//!
//! Any panic (in the master's threads too: libFuzzer's panic hook aborts) and any
//! deadline missed is a crash. The master checks a frame before it forwards it to
//! the other twin (`kernel_peer` asserts that the other twin accepts whatever it
//! passes on); should the other twin end anyway, that is noted on stderr (a line
//! starting with [`NOTE`]), and is a crash only with `CPY2PY_FUZZ_STRICT=1`. The
//! other twin is then replaced.
//!
//! Seeds use canonical peer ids ([`crate::seeds::SELF`], [`crate::seeds::OTHER`]);
//! every frame whose route can be read has them rewritten to the ids of this run.

use crate::seeds::{Fate, OTHER, SELF, TWIN_ID};
use cpy2py_kernel::{CallError, Handler, Kernel, KernelConfig, LocalInfo, RequestContext};
use cpy2py_wire::{
    Envelope, FrameDecoder, HEADER_LEN, Message, Op, Outcome, PeerId, Reply, Value, encode_frame,
    peek_route,
};
use std::collections::HashSet;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Prefix of the harness's notes on stderr (`cargo xtask fuzz` collects them).
pub const NOTE: &str = "cpy2py-fuzz note:";

/// Largest frame body the master accepts here: small, so that a fuzzed header cannot
/// make every run allocate and zero the default 256 MiB.
const MAX_FRAME: usize = 1 << 20;
/// Inputs longer than this are skipped: the whole input must fit in a socket buffer
/// before anyone reads it.
const MAX_INPUT: usize = 64 * 1024;
/// How long the master may take to do what it must; far beyond the normal
/// microseconds, far below libFuzzer's `-timeout`.
const DEADLINE: Duration = Duration::from_secs(5);
/// The module of the probe call.
const PROBE: &str = "__cpy2py_fuzz_probe__";

/// `kernel_shell`: feeds `data` to a master kernel as a twin's stream.
pub fn peer(data: &[u8]) -> Option<Fate> {
    static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);
    if data.len() > MAX_INPUT {
        return None;
    }
    let mut harness = HARNESS.lock().unwrap_or_else(PoisonError::into_inner);
    Some(harness.get_or_insert_with(Harness::new).run(data))
}

/// Serves `CallGlobal` by returning its arguments; every other op returns `None`.
struct Echo;

impl Handler for Echo {
    fn handle(&self, _: &RequestContext<'_>, op: Op) -> Outcome {
        match op {
            Op::CallGlobal { args, .. } => Outcome::Ok(Value::List(args)),
            _ => Outcome::Ok(Value::None),
        }
    }
}

fn local(name: &str) -> LocalInfo {
    LocalInfo {
        name: name.into(),
        interpreter: "rust".into(),
        version: "fuzz".into(),
        pickle_protocol: 0,
    }
}

fn config() -> KernelConfig {
    KernelConfig {
        max_frame: MAX_FRAME,
        handshake_timeout: Duration::from_millis(250),
        ..KernelConfig::default()
    }
}

fn call(module: &str) -> Op {
    Op::CallGlobal {
        module: module.into(),
        qualname: "f".into(),
        args: vec![Value::Int(7)],
        kwargs: vec![],
    }
}

struct Harness {
    master: Kernel,
    /// The well-behaved twin: its kernel and its id in the master.
    other: Option<(Kernel, PeerId)>,
    /// The id the master gives the next twin it attaches.
    next: u32,
    decoder: FrameDecoder,
    strict: bool,
    noted: HashSet<String>,
}

impl Harness {
    fn new() -> Harness {
        let master =
            Kernel::start_master(local("master"), config(), Arc::new(Echo)).expect("master kernel");
        Harness {
            master,
            other: None,
            next: 1,
            decoder: FrameDecoder::new(MAX_FRAME),
            strict: std::env::var_os("CPY2PY_FUZZ_STRICT").is_some_and(|v| v == "1"),
            noted: HashSet::new(),
        }
    }

    fn run(&mut self, data: &[u8]) -> Fate {
        let other = self.other();
        let me = PeerId(self.next);
        let bytes = remap(data, &self.decoder, me, other);
        let hello_len = match self.decoder.check_header(&bytes) {
            Ok(Some(total)) if total <= bytes.len() => Some(total),
            _ => None,
        };

        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut twin = FakeTwin::new(theirs, self.decoder);
        match hello_len {
            Some(len) => twin.send(&bytes[..len]),
            None => {
                twin.send(&bytes);
                twin.end_stream();
            }
        }
        let attached = self.master.attach(ours, TWIN_ID);
        self.next += 1;
        let fate = match attached {
            Err(_) => {
                assert!(!self.master.is_alive(me), "a refused twin is alive");
                Fate::Refused
            }
            Ok(info) => {
                assert_eq!(info.peer, me, "the harness lost track of peer ids");
                let rest = &bytes[hello_len.unwrap_or(bytes.len())..];
                let expected = expect(rest, &self.decoder, me);
                twin.send(rest);
                match expected {
                    Expect::Close(why) => {
                        self.wait_closed(me, &mut twin, &why);
                        Fate::Closed
                    }
                    Expect::MoreBytes => {
                        twin.end_stream();
                        self.wait_closed(me, &mut twin, "end of stream inside a frame");
                        Fate::Closed
                    }
                    Expect::Working => self.probe(me, &mut twin),
                }
            }
        };
        drop(twin);
        self.wait_closed(me, &mut FakeTwin::detached(), "its socket closed");
        self.check_other();
        fate
    }

    /// The other twin's id, starting a new one if there is none.
    fn other(&mut self) -> PeerId {
        if let Some((_, id)) = &self.other {
            return *id;
        }
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        // A real twin's process exits once its kernel stops (a Shutdown, or the
        // master's stream broke), and the master reads end of file: so here.
        let exit = theirs.try_clone().expect("dup the other twin's socket");
        let twin = std::thread::spawn(move || {
            let twin = Kernel::connect_stream(theirs, local("other"), config(), Arc::new(Echo))
                .expect("the other twin connects");
            let serving = twin.clone();
            std::thread::spawn(move || {
                serving.serve();
                let _ = exit.shutdown(Shutdown::Both);
            });
            twin
        });
        let info = self
            .master
            .attach(ours, "other")
            .expect("the other twin's handshake");
        let twin = twin.join().expect("the other twin's thread");
        self.next = info.peer.0 + 1;
        self.other = Some((twin, info.peer));
        info.peer
    }

    /// The other twin must still answer a call through the master.
    fn check_other(&mut self) {
        let Some((twin, id)) = &self.other else {
            return;
        };
        let (mut pending, result) =
            match self.master.submit_and_wait(*id, call("m"), Some(DEADLINE)) {
                Ok((pending, result)) => (Some(pending), result.unwrap_or(Err(CallError::Timeout))),
                Err(e) => (None, Err(e)),
            };
        match result {
            Ok(Outcome::Ok(Value::List(items))) if items == [Value::Int(7)] => {}
            Err(CallError::PeerLost { reason, .. }) => {
                let why = twin
                    .peer_gone(PeerId::MASTER)
                    .map(|(_, reason)| reason)
                    .unwrap_or_else(|| format!("it stopped ({reason})"));
                let note =
                    format!("a frame forwarded by the fuzzed twin ended the other twin: {why}");
                assert!(!self.strict, "{note}");
                twin.shutdown(Duration::ZERO);
                let id = *id;
                self.wait_closed(id, &mut FakeTwin::detached(), "the other twin ended");
                self.other = None;
                self.note(&note);
            }
            other => {
                // Say what is stuck before failing: is the reply late, or lost?
                let late = pending.as_mut().and_then(|p| p.wait(Some(DEADLINE)));
                let again = self.master.call(*id, call("m"), Some(DEADLINE));
                panic!(
                    "the other twin stopped answering: {other:?}; master: other alive {}, \
                     {} calls pending; other twin: stopping {}, {} calls pending; the same \
                     call {DEADLINE:?} later: {late:?}; a new call: {again:?}",
                    self.master.is_alive(*id),
                    self.master.pending_calls(),
                    twin.is_stopping(),
                    twin.pending_calls(),
                )
            }
        }
    }

    /// Waits until the master has closed `me`; reads the twin's end meanwhile so that
    /// the master never blocks writing to it.
    fn wait_closed(&self, me: PeerId, twin: &mut FakeTwin, why: &str) {
        let start = Instant::now();
        while self.master.is_alive(me) {
            assert!(
                start.elapsed() < DEADLINE,
                "the master did not close {me} within {DEADLINE:?} after {why}"
            );
            twin.pump();
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// A call from the master to the fuzzed twin, answered by the harness: it must
    /// complete, or fail because the master closed the twin.
    fn probe(&self, me: PeerId, twin: &mut FakeTwin) -> Fate {
        let mut pending = match self.master.submit(me, call(PROBE)) {
            Ok(pending) => pending,
            Err(CallError::PeerLost { .. }) => return self.closed(me, twin),
            Err(e) => panic!("the probe could not be sent: {e}"),
        };
        let id = pending.id();
        if twin.serve_probe(me, id) {
            match pending.wait(Some(DEADLINE)) {
                Some(Ok(_)) => Fate::Working,
                Some(Err(CallError::PeerLost { .. })) => self.closed(me, twin),
                Some(Err(e)) => panic!("the probe failed: {e}"),
                None => panic!("the probe's reply did not arrive within {DEADLINE:?}"),
            }
        } else {
            match pending.wait(Some(DEADLINE)) {
                Some(Err(CallError::PeerLost { .. })) => self.closed(me, twin),
                other => panic!("the twin's end closed but the probe says {other:?}"),
            }
        }
    }

    /// A call to `me` failed as lost: the master must be closing it.
    fn closed(&self, me: PeerId, twin: &mut FakeTwin) -> Fate {
        self.wait_closed(me, twin, "a call to it failed as lost");
        Fate::Closed
    }

    fn note(&mut self, note: &str) {
        // Once per kind of note (its text up to the first digit) per process.
        let kind: String = note.chars().take_while(|c| !c.is_ascii_digit()).collect();
        if self.noted.len() < 32 && self.noted.insert(kind) {
            eprintln!("{NOTE} {note}");
        }
    }
}

/// What the master must do with the frames after the handshake.
enum Expect {
    /// Close the twin.
    Close(String),
    /// Wait for the rest of an unfinished frame.
    MoreBytes,
    /// Keep serving the twin.
    Working,
}

/// The master's rules for a twin's frames, restated: every frame must decode and
/// come from the twin; one for the master must not be a Hello, Shutdown or PeerGone,
/// and one for another peer (forwarded) must be a Request, Reply, Release or Retain.
fn expect(mut rest: &[u8], decoder: &FrameDecoder, me: PeerId) -> Expect {
    while !rest.is_empty() {
        let total = match decoder.check_header(rest) {
            Err(e) => return Expect::Close(e.to_string()),
            Ok(None) => return Expect::MoreBytes,
            Ok(Some(total)) if total > rest.len() => return Expect::MoreBytes,
            Ok(Some(total)) => total,
        };
        let frame = &rest[..total];
        let (src, dst) = match peek_route(&frame[HEADER_LEN..]) {
            Ok(route) => route,
            Err(e) => return Expect::Close(format!("unreadable route: {e}")),
        };
        if src != me {
            return Expect::Close(format!("a frame claiming to be from {src}"));
        }
        let message = match decoder.decode(frame) {
            Ok(Some((envelope, _))) => envelope.message,
            Ok(None) => unreachable!("a whole frame was checked above"),
            Err(e) => return Expect::Close(e.to_string()),
        };
        let allowed = if dst == PeerId::MASTER {
            !matches!(
                message,
                Message::Hello(_) | Message::Shutdown | Message::PeerGone { .. }
            )
        } else {
            matches!(
                message,
                Message::Request(_)
                    | Message::Reply(_)
                    | Message::Release(_)
                    | Message::Retain(_)
                    | Message::Cancel { .. }
            )
        };
        if !allowed {
            return Expect::Close(format!("a message a twin may not send to peer {dst}"));
        }
        rest = &rest[total..];
    }
    Expect::Working
}

/// Rewrites the canonical ids of seeds ([`SELF`], [`OTHER`]) to this run's in every
/// whole frame: all of a decodable envelope's ids that the kernel reads (route,
/// Hello, chain origin), or just the route of a frame whose body does not decode.
/// Everything else is copied unchanged.
fn remap(data: &[u8], decoder: &FrameDecoder, me: PeerId, other: PeerId) -> Vec<u8> {
    let map = |id: PeerId| match id {
        SELF => me,
        OTHER => other,
        id => id,
    };
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut rest = data;
    while !rest.is_empty() {
        let total = match decoder.check_header(rest) {
            Ok(Some(total)) if total <= rest.len() => total,
            _ => break,
        };
        let frame = &rest[..total];
        let start = out.len();
        if let Ok(Some((mut envelope, _))) = decoder.decode(frame) {
            envelope.src = map(envelope.src);
            envelope.dst = map(envelope.dst);
            match &mut envelope.message {
                Message::Hello(hello) => hello.peer = map(hello.peer),
                Message::Request(request) => request.chain.origin = map(request.chain.origin),
                _ => {}
            }
            if encode_frame(&envelope, &mut out).is_err() {
                out.truncate(start);
                out.extend_from_slice(frame);
            }
        } else if let Ok((src, dst)) = peek_route(&frame[HEADER_LEN..]) {
            let route_len = route_len(&frame[HEADER_LEN..]);
            let mut body = postcard_route(map(src), map(dst));
            body.extend_from_slice(&frame[HEADER_LEN + route_len..]);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&body);
        } else {
            out.extend_from_slice(frame);
        }
        rest = &rest[total..];
    }
    out.extend_from_slice(rest);
    out
}

/// Bytes of the two varints at the start of a frame body whose route was read.
fn route_len(body: &[u8]) -> usize {
    let varint = |bytes: &[u8]| {
        bytes
            .iter()
            .position(|b| b & 0x80 == 0)
            .map_or(0, |i| i + 1)
    };
    let first = varint(body);
    first + varint(&body[first..])
}

/// A route encoded as postcard does it: two varints.
fn postcard_route(src: PeerId, dst: PeerId) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    for mut v in [src.0, dst.0] {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out
}

/// The fuzzed twin's end of the socketpair, played by the harness.
struct FakeTwin {
    stream: Option<UnixStream>,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FakeTwin {
    fn new(stream: UnixStream, decoder: FrameDecoder) -> FakeTwin {
        stream.set_nonblocking(true).expect("non-blocking socket");
        FakeTwin {
            stream: Some(stream),
            decoder,
            buf: Vec::new(),
        }
    }

    /// No socket: for waiting after it was closed.
    fn detached() -> FakeTwin {
        FakeTwin {
            stream: None,
            decoder: FrameDecoder::default(),
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` unless the master closed its end. `MSG_NOSIGNAL`: the
    /// process keeps the default SIGPIPE disposition, so that a kernel write without
    /// it would be caught.
    fn send(&mut self, mut bytes: &[u8]) {
        let Some(stream) = &self.stream else {
            return;
        };
        let fd = stream.as_raw_fd();
        let start = Instant::now();
        while !bytes.is_empty() {
            // SAFETY: `bytes` is a live slice; send reads at most `bytes.len()` bytes
            // of it, from an open socket that `stream` owns.
            let n =
                unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                bytes = &bytes[n as usize..];
                continue;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    assert!(
                        start.elapsed() < DEADLINE,
                        "the master stopped reading the twin's socket"
                    );
                    self.pump();
                    std::thread::sleep(Duration::from_micros(50));
                }
                // The master closed the twin: what it did not read does not matter.
                _ => return,
            }
        }
    }

    /// Ends the twin's stream (the master reads end of file).
    fn end_stream(&mut self) {
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }

    /// Reads what the master sent; `false` once it closed its end.
    fn pump(&mut self) -> bool {
        let Some(stream) = &mut self.stream else {
            return false;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Waits for the probe request `id` and answers it; `false` if the master closed
    /// the twin first.
    fn serve_probe(&mut self, me: PeerId, id: cpy2py_wire::RequestId) -> bool {
        let start = Instant::now();
        loop {
            let open = self.pump();
            // The master frames everything it sends, forwarded frames included, but
            // their bodies can be garbage from the fuzzed twin itself: skip those.
            while let Ok(Some(total)) = self.decoder.check_header(&self.buf) {
                if total > self.buf.len() {
                    break;
                }
                let found = matches!(
                    self.decoder.decode(&self.buf[..total]),
                    Ok(Some((Envelope { message: Message::Request(request), .. }, _)))
                        if request.id == id && matches!(&request.op, Op::CallGlobal { module, .. } if module == PROBE)
                );
                self.buf.drain(..total);
                if found {
                    let mut out = Vec::new();
                    encode_frame(
                        &Envelope {
                            src: me,
                            dst: PeerId::MASTER,
                            message: Message::Reply(Reply {
                                id,
                                outcome: Outcome::Ok(Value::Str("pong".into())),
                            }),
                        },
                        &mut out,
                    )
                    .expect("encode the probe's reply");
                    self.send(&out);
                    return true;
                }
            }
            if !open {
                return false;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the probe request did not reach the twin within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::peer;

    /// Every committed seed runs through the harness, with the fate its name says.
    #[test]
    fn seeds_meet_their_fates() {
        for (target, name, bytes) in crate::seeds::all() {
            if target == "kernel_peer" {
                let fate = peer(&bytes).expect("seeds are small");
                assert_eq!(fate, crate::seeds::fate_of(&name), "seed {name}");
            }
        }
    }

    /// Byte soup of every length up to a few frames: no panic, no hang.
    #[test]
    fn garbage_and_truncations() {
        for (_, _, bytes) in crate::seeds::all() {
            for cut in [1, 3, 4, 5, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                peer(&bytes[..cut.min(bytes.len())]);
            }
        }
        peer(&[]);
        peer(&[0xff; 64]);
        peer(&u32::MAX.to_le_bytes());
    }
}
