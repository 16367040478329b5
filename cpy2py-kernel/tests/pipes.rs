//! A master and a twin kernel in one process joined by two pipes instead of a
//! socketpair (the transport of a twin behind a process that carries its
//! stream, such as an ssh client): the same calls, callbacks and large frames,
//! and an end of stream noticed at once.

mod common;

use common::local;
use cpy2py_kernel::{
    CallError, Handler, Kernel, KernelConfig, PipeTransport, RequestContext, TwinInfo,
};
use cpy2py_wire::{
    Bytes, Envelope, FrameDecoder, Hello, Message, Op, Outcome, PROTOCOL_VERSION, PeerId, Value,
    encode_frame,
};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Option<Duration> = Some(Duration::from_secs(20));

/// Serves `echo(x)` and `bounce(n)`: calls the other side's `bounce(n - 1)`
/// until 0, returning the depth reached.
struct Echo;

impl Handler for Echo {
    fn handle(&self, ctx: &RequestContext<'_>, op: Op) -> Outcome {
        let Op::CallGlobal { qualname, args, .. } = op else {
            return Outcome::Ok(Value::None);
        };
        match (qualname.as_str(), args.as_slice()) {
            ("echo", [v]) => Outcome::Ok(v.clone()),
            ("bounce", [Value::Int(0)]) => Outcome::Ok(Value::Int(0)),
            ("bounce", [Value::Int(n)]) => {
                match ctx
                    .kernel
                    .call(ctx.src, call("bounce", Value::Int(n - 1)), LIMIT)
                {
                    Ok(Outcome::Ok(Value::Int(depth))) => Outcome::Ok(Value::Int(depth + 1)),
                    other => Outcome::Ok(Value::Str(format!("nested call failed: {other:?}"))),
                }
            }
            _ => Outcome::Ok(Value::Str(format!("no function {qualname}"))),
        }
    }
}

fn call(name: &str, arg: Value) -> Op {
    Op::CallGlobal {
        module: "echo".into(),
        qualname: name.into(),
        args: vec![arg],
        kwargs: vec![],
    }
}

/// Two pipes, one per direction: `(the master's end, the twin's end)`, each
/// as raw `(read, write)` fds.
fn pipes() -> ((OwnedFd, OwnedFd), (OwnedFd, OwnedFd)) {
    let (to_master_read, to_master_write) = rustix::pipe::pipe().expect("pipe");
    let (to_twin_read, to_twin_write) = rustix::pipe::pipe().expect("pipe");
    (
        (to_master_read, to_twin_write),
        (to_twin_read, to_master_write),
    )
}

fn over_pipes() -> (Kernel, Kernel, TwinInfo) {
    let master = Kernel::start_master(local("master"), KernelConfig::default(), Arc::new(Echo))
        .expect("master");
    let ((master_read, master_write), (twin_read, twin_write)) = pipes();
    let ours = PipeTransport::new(master_read, master_write).expect("transport");
    let theirs = PipeTransport::new(twin_read, twin_write).expect("transport");
    let (twin, info) = common::join_twin(
        &master,
        "piped",
        Box::new(ours),
        Box::new(theirs),
        Arc::new(Echo),
    );
    (master, twin, info)
}

#[test]
fn calls_callbacks_and_large_frames_cross_pipes_as_they_cross_sockets() {
    let (master, twin, info) = over_pipes();
    assert_eq!(master.peer_name(info.peer), "piped");
    let echoed = master.call(info.peer, call("echo", Value::Int(7)), LIMIT);
    assert_eq!(echoed.ok(), Some(Outcome::Ok(Value::Int(7))));
    let back = twin.call(PeerId::MASTER, call("echo", Value::Str("up".into())), LIMIT);
    assert_eq!(back.ok(), Some(Outcome::Ok(Value::Str("up".into()))));
    // Nested callbacks both ways, to some depth.
    let depth = master.call(info.peer, call("bounce", Value::Int(20)), LIMIT);
    assert_eq!(depth.ok(), Some(Outcome::Ok(Value::Int(20))));
    // 3 MiB: many pipe buffers' worth, written while the other side reads.
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let echoed = master.call(
        info.peer,
        call("echo", Value::Bytes(Bytes::from(big.clone()))),
        LIMIT,
    );
    match echoed {
        Ok(Outcome::Ok(Value::Bytes(bytes))) => assert!(bytes[..] == big[..], "the bytes changed"),
        other => panic!("large echo failed: {other:?}"),
    }
    assert_eq!(master.pending_calls(), 0);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

fn frame(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(envelope, &mut out).expect("encodes");
    out
}

#[test]
fn the_end_of_a_piped_stream_fails_the_calls_waiting_on_it() {
    let master = Kernel::start_master(local("master"), KernelConfig::default(), Arc::new(Echo))
        .expect("master");
    let ((master_read, master_write), (twin_read, twin_write)) = pipes();
    // This test plays the twin by hand: a Hello, then nothing, then the end.
    let fake = std::thread::spawn(move || {
        let mut from_master = std::fs::File::from(twin_read);
        let mut to_master = std::fs::File::from(twin_write);
        let mut header = [0u8; 4];
        from_master.read_exact(&mut header).expect("master's hello");
        let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
        from_master.read_exact(&mut body).expect("master's hello");
        let decoder = FrameDecoder::new(1 << 20);
        let whole: Vec<u8> = header.iter().chain(body.iter()).copied().collect();
        let (envelope, _) = decoder.decode(&whole).expect("decodes").expect("whole");
        let Message::Hello(theirs) = envelope.message else {
            panic!("not a hello: {envelope:?}");
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            peer: theirs.peer,
            twin_id: "fake".into(),
            pid: std::process::id(),
            interpreter: "test".into(),
            version: "0".into(),
            pickle_protocol: 0,
        };
        to_master
            .write_all(&frame(&Envelope {
                src: theirs.peer,
                dst: PeerId::MASTER,
                message: Message::Hello(hello),
            }))
            .expect("our hello");
        // Read the master's request, then end the stream (as a dead carrier does).
        let mut request_header = [0u8; 4];
        from_master
            .read_exact(&mut request_header)
            .expect("the request");
        drop(to_master);
        from_master
    });
    let transport = PipeTransport::new(master_read, master_write).expect("transport");
    let info = master
        .attach_transport(Box::new(transport), "fake")
        .expect("handshake");
    let started = Instant::now();
    let result = master.call(info.peer, call("echo", Value::Int(1)), LIMIT);
    assert!(
        matches!(&result, Err(CallError::PeerLost { twin_id, .. }) if twin_id == "fake"),
        "got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "noticed late");
    assert!(!master.is_connected(info.peer));
    drop(fake.join().expect("fake twin"));
    master.shutdown(Duration::from_secs(1));
}
