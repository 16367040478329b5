//! A twin's serving thread holds the small replies of requests it read
//! together; a reply held behind a slow request must still leave promptly.
//! The master here is the test itself, so that both requests arrive in one
//! write.

mod common;

use common::local;
use cpy2py_kernel::{Handler, Kernel, KernelConfig, RequestContext};
use cpy2py_wire::{
    ChainId, Envelope, FrameDecoder, Hello, Message, Op, Outcome, PROTOCOL_VERSION, PeerId,
    Request, RequestId, Value, encode_frame,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `sleep(ms)` sleeps; anything else answers at once.
struct Sleepy;

impl Handler for Sleepy {
    fn handle(&self, _: &RequestContext<'_>, op: Op) -> Outcome {
        if let Op::CallGlobal { qualname, args, .. } = op {
            if let ("sleep", [Value::Int(ms)]) = (qualname.as_str(), args.as_slice()) {
                std::thread::sleep(Duration::from_millis(*ms as u64));
            }
        }
        Outcome::Ok(Value::None)
    }
}

const TWIN: PeerId = PeerId(1);

fn frame(message: Message) -> Vec<u8> {
    let mut out = Vec::new();
    let envelope = Envelope {
        src: PeerId::MASTER,
        dst: TWIN,
        message,
    };
    encode_frame(&envelope, &mut out).expect("encodes");
    out
}

fn request(index: u32, name: &str, args: Vec<Value>) -> Vec<u8> {
    frame(Message::Request(Request {
        id: RequestId {
            index,
            generation: 1,
        },
        chain: ChainId {
            origin: PeerId::MASTER,
            thread: u64::from(index),
        },
        op: Op::CallGlobal {
            module: "m".into(),
            qualname: name.into(),
            args,
            kwargs: vec![],
        },
        time_left_us: None,
    }))
}

/// Reads frames from `stream` until one that is not a Hello: the reply's id.
fn next_reply(stream: &mut UnixStream, pending: &mut Vec<u8>, decoder: &FrameDecoder) -> u32 {
    loop {
        if let Some((envelope, used)) = decoder.decode(pending).expect("a valid frame") {
            pending.drain(..used);
            match envelope.message {
                Message::Reply(reply) => return reply.id.index,
                _ => continue,
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the twin closed the connection");
        pending.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_reply_held_behind_a_slow_request_still_leaves_promptly() {
    let (mut master, theirs) = UnixStream::pair().expect("socketpair");
    master
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: TWIN,
        twin_id: "master".into(),
        pid: std::process::id(),
        interpreter: "rust".into(),
        version: "test".into(),
        pickle_protocol: 0,
    };
    master
        .write_all(&frame(Message::Hello(hello)))
        .expect("hello");
    let twin = Kernel::connect_stream(
        theirs,
        local("twin"),
        KernelConfig::default(),
        Arc::new(Sleepy),
    )
    .expect("twin connects");
    let serving = twin.clone();
    let server = std::thread::spawn(move || serving.serve());
    let decoder = FrameDecoder::default();
    let mut pending = Vec::new();

    // Once the twin answers a first call, its serving thread reads the socket.
    master
        .write_all(&request(1, "noop", vec![]))
        .expect("write");
    assert_eq!(next_reply(&mut master, &mut pending, &decoder), 1);

    // Two requests in one write: the serving thread reads both, answers the
    // first and holds that reply while the second sleeps.
    let mut both = request(2, "noop", vec![]);
    both.extend(request(3, "sleep", vec![Value::Int(3000)]));
    let sent = Instant::now();
    master.write_all(&both).expect("write");
    assert_eq!(next_reply(&mut master, &mut pending, &decoder), 2);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the held reply waited for the slow request ({took:?})"
    );
    assert_eq!(next_reply(&mut master, &mut pending, &decoder), 3);

    twin.shutdown(Duration::from_secs(1));
    drop(master);
    server.join().expect("serving thread");
}
