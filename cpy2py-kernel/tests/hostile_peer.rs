//! Peers that break the protocol: wrong version, silence during the handshake,
//! garbage, oversized and truncated frames. Each is closed with an error while
//! a well-behaved twin of the same master keeps working.

mod common;

use common::local;
use cpy2py_kernel::{CallError, Handler, Kernel, KernelConfig, KernelError, RequestContext};
use cpy2py_wire::{
    Envelope, FrameDecoder, Hello, Message, Op, Outcome, PROTOCOL_VERSION, PeerId, Value,
    encode_frame,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Option<Duration> = Some(Duration::from_secs(10));

struct Echo;

impl Handler for Echo {
    fn handle(&self, _: &RequestContext<'_>, op: Op) -> Outcome {
        match op {
            Op::CallGlobal { args, .. } => Outcome::Ok(Value::List(args)),
            _ => Outcome::Ok(Value::None),
        }
    }
}

fn config() -> KernelConfig {
    KernelConfig {
        handshake_timeout: Duration::from_millis(500),
        ..KernelConfig::default()
    }
}

fn echo_op() -> Op {
    Op::CallGlobal {
        module: "m".into(),
        qualname: "f".into(),
        args: vec![Value::Int(7)],
        kwargs: vec![],
    }
}

/// A master with one well-behaved twin attached.
fn master_with_good_twin() -> (Kernel, Kernel, PeerId) {
    let master = Kernel::start_master(local("master"), config(), Arc::new(Echo)).expect("master");
    let (a, b) = UnixStream::pair().expect("socketpair");
    let twin = std::thread::spawn(move || {
        let twin =
            Kernel::connect_stream(b, local("good"), config(), Arc::new(Echo)).expect("connect");
        let serving = twin.clone();
        std::thread::spawn(move || serving.serve());
        twin
    });
    let info = master.attach(a, "good").expect("good handshake");
    (master, twin.join().expect("twin"), info.peer)
}

fn assert_good_twin_works(master: &Kernel, good: PeerId) {
    match master.call(good, echo_op(), LIMIT) {
        Ok(Outcome::Ok(Value::List(items))) => assert_eq!(items, vec![Value::Int(7)]),
        other => panic!("the good twin stopped working: {other:?}"),
    }
}

/// Plays the twin side of the handshake by hand; returns the socket.
fn fake_twin(stream: UnixStream, name: &str, protocol: u32) -> UnixStream {
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let decoder = FrameDecoder::default();
    let hello = loop {
        if let Some((envelope, _)) = decoder.decode(&buf).expect("master's hello decodes") {
            break envelope;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read master's hello");
        assert!(n > 0, "master closed before its hello");
        buf.extend_from_slice(&chunk[..n]);
    };
    let Message::Hello(master_hello) = hello.message else {
        panic!("expected Hello")
    };
    let mine = Hello {
        protocol,
        peer: master_hello.peer,
        twin_id: name.into(),
        pid: std::process::id(),
        interpreter: "fake".into(),
        version: "0".into(),
        pickle_protocol: 0,
    };
    let mut out = Vec::new();
    encode_frame(
        &Envelope {
            src: master_hello.peer,
            dst: PeerId::MASTER,
            message: Message::Hello(mine),
        },
        &mut out,
    )
    .expect("encode");
    stream.write_all(&out).expect("send hello");
    stream
}

fn wait_closed(master: &Kernel, peer: PeerId) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((_, reason)) = master.peer_gone(peer) {
            return reason;
        }
        assert!(Instant::now() < deadline, "peer {peer} was not closed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn wrong_protocol_version_is_refused_at_the_handshake() {
    let (master, twin, good) = master_with_good_twin();
    let (a, b) = UnixStream::pair().expect("socketpair");
    let fake = std::thread::spawn(move || fake_twin(b, "old", PROTOCOL_VERSION + 1));
    match master.attach(a, "old") {
        Err(KernelError::Handshake { reason, .. }) => {
            assert!(reason.contains("protocol version"), "{reason}")
        }
        other => panic!("expected a handshake error, got {other:?}"),
    }
    drop(fake.join());
    assert_good_twin_works(&master, good);
    master.shutdown(Duration::ZERO);
    twin.shutdown(Duration::ZERO);
}

#[test]
fn silence_during_the_handshake_times_out() {
    let (master, twin, good) = master_with_good_twin();
    let (a, _silent) = UnixStream::pair().expect("socketpair");
    let start = Instant::now();
    match master.attach(a, "silent") {
        Err(KernelError::HandshakeTimeout { .. }) => {}
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_good_twin_works(&master, good);
    master.shutdown(Duration::ZERO);
    twin.shutdown(Duration::ZERO);
}

fn misbehave(bytes: &[u8], close: bool, expect: &str) {
    let (master, twin, good) = master_with_good_twin();
    let (a, b) = UnixStream::pair().expect("socketpair");
    let fake = std::thread::spawn(move || fake_twin(b, "bad", PROTOCOL_VERSION));
    let info = master
        .attach(a, "bad")
        .expect("handshake with the fake twin");
    let mut stream = fake.join().expect("fake twin");
    // A call in flight to the bad twin must fail when it is closed.
    let pending = {
        let master = master.clone();
        std::thread::spawn(move || master.call(info.peer, echo_op(), LIMIT))
    };
    // Send the bad bytes once the call is in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while master.pending_calls() == 0 {
        assert!(Instant::now() < deadline, "the call was never sent");
        std::thread::yield_now();
    }
    stream.write_all(bytes).expect("send bytes");
    if close {
        drop(stream);
    } else {
        std::mem::forget(stream);
    }
    let reason = wait_closed(&master, info.peer);
    assert!(
        reason.contains(expect),
        "reason {reason:?} does not mention {expect:?}"
    );
    match pending.join().expect("caller") {
        Err(CallError::PeerLost { twin_id, .. }) => assert_eq!(twin_id, "bad"),
        other => panic!("expected PeerLost, got {other:?}"),
    }
    assert!(!master.is_alive(info.peer));
    assert_good_twin_works(&master, good);
    master.shutdown(Duration::ZERO);
    twin.shutdown(Duration::ZERO);
}

#[test]
fn garbage_closes_only_that_peer() {
    // A plausible length followed by bytes that are no envelope.
    let mut bytes = 8u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff; 8]);
    misbehave(&bytes, false, "protocol error");
}

#[test]
fn an_oversized_length_closes_only_that_peer() {
    misbehave(&u32::MAX.to_le_bytes(), false, "exceeds the limit");
}

#[test]
fn a_truncated_frame_then_eof_closes_only_that_peer() {
    let mut bytes = 100u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    misbehave(&bytes, true, "connection closed");
}

#[test]
fn a_spoofed_source_closes_only_that_peer() {
    let mut bytes = Vec::new();
    encode_frame(
        &Envelope {
            src: PeerId(77),
            dst: PeerId::MASTER,
            message: Message::Shutdown,
        },
        &mut bytes,
    )
    .expect("encode");
    misbehave(&bytes, false, "claiming to be");
}

#[test]
fn a_control_message_to_another_twin_closes_the_sender_only() {
    // The bad twin (peer 2) tells the good one (peer 1) to shut down: the
    // master refuses to forward it and closes the sender.
    let mut bytes = Vec::new();
    encode_frame(
        &Envelope {
            src: PeerId(2),
            dst: PeerId(1),
            message: Message::Shutdown,
        },
        &mut bytes,
    )
    .expect("encode");
    misbehave(&bytes, false, "sent a Shutdown to peer");
}

#[test]
fn a_malformed_frame_to_another_twin_closes_the_sender_only() {
    // A valid route (peer 2 to peer 1) followed by a message that is no
    // message: the master must not pass it on.
    let body = [2u8, 1, 0xff, 0xff, 0xff];
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    misbehave(&bytes, false, "malformed");
}
