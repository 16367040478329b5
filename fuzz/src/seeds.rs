//! The committed corpus: real envelopes encoded with [`encode_frame`].
//!
//! `fuzz/corpus/<target>/<name>` holds what [`all`] returns; a test checks it and
//! rewrites it when `CPY2PY_FUZZ_WRITE_SEEDS=1`:
//!
//! ```text
//! CPY2PY_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml
//! ```
//!
//! Peer ids in seeds are canonical: the fuzzed twin is [`SELF`], the well-behaved
//! twin beside it is [`OTHER`]. The kernel harness assigns real ids per run and
//! rewrites these two in every frame it can read (see [`crate::kernel`]).

use cpy2py_wire::{
    Bytes, ChainId, Envelope, Failure, Hello, Message, ObjectId, ObjectRef, Op, Outcome,
    PROTOCOL_VERSION, PeerId, Release, RemoteError, Reply, Request, RequestId, Retain, Value,
    encode_frame,
};

/// The fuzzed twin, in seeds.
pub const SELF: PeerId = PeerId(1);
/// The well-behaved twin attached to the same master, in seeds.
pub const OTHER: PeerId = PeerId(2);
/// A peer that does not exist.
const NOBODY: PeerId = PeerId(9);
/// The twin id the fuzzed twin is attached under.
pub const TWIN_ID: &str = "fuzzed";

/// What became of the fuzzed twin of a `kernel_peer` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The master refused the handshake.
    Refused,
    /// The master accepted it and kept it until its stream ended.
    Working,
    /// The master accepted it, then closed it for breaking a rule.
    Closed,
}

/// The fate the `kernel_peer` seed `name` must meet.
pub fn fate_of(name: &str) -> Fate {
    if name.starts_with("hello-") || name == "request-before-hello" {
        Fate::Refused
    } else if [
        "shutdown",
        "peer-gone",
        "second-hello",
        "spoofed-source",
        "forward-shutdown",
        "forward-hello",
    ]
    .contains(&name)
    {
        Fate::Closed
    } else {
        Fate::Working
    }
}

/// Every seed: `(target, file name, bytes)`.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let scenarios = kernel_scenarios();
    for (name, frames) in &scenarios {
        out.push(("kernel_peer", name.clone(), concat(frames)));
    }
    let mut seen = Vec::new();
    for envelope in single_envelopes() {
        let bytes = frame(&envelope);
        if !seen.contains(&bytes) {
            let name = format!("{:02}-{}", seen.len(), describe(&envelope));
            out.push(("wire_decode", name, bytes.clone()));
            seen.push(bytes);
        }
    }
    // The stream target reads an 8-byte chunking seed, then the stream.
    for (i, (name, frames)) in scenarios.iter().enumerate() {
        if frames.len() < 2 {
            continue;
        }
        let mut bytes = (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1))
            .to_le_bytes()
            .to_vec();
        bytes.extend_from_slice(&concat(frames));
        out.push(("wire_stream", name.clone(), bytes));
    }
    out
}

/// The fuzzed twin's streams: its Hello, then frames, as a real twin (or a broken
/// one) sends them.
fn kernel_scenarios() -> Vec<(String, Vec<Envelope>)> {
    let hello = from_self(Message::Hello(twin_hello(SELF, TWIN_ID, PROTOCOL_VERSION)));
    let mut out: Vec<(String, Vec<Envelope>)> = vec![("hello".into(), vec![hello.clone()])];
    let mut with_hello = |name: &str, frames: Vec<Envelope>| {
        let mut all = vec![hello.clone()];
        all.extend(frames);
        out.push((name.into(), all));
    };
    for (i, op) in ops().into_iter().enumerate() {
        let name = format!("request-{}", op_name(&op));
        with_hello(&name, vec![request(PeerId::MASTER, i as u32, op)]);
    }
    with_hello(
        "requests-every-op",
        ops()
            .into_iter()
            .enumerate()
            .map(|(i, op)| request(PeerId::MASTER, i as u32, op))
            .collect(),
    );
    with_hello(
        "forward-every-op-to-other",
        ops()
            .into_iter()
            .enumerate()
            .map(|(i, op)| request(OTHER, i as u32, op))
            .collect(),
    );
    with_hello(
        "forward-to-unknown-peer",
        vec![request(NOBODY, 0, call_global("m", "f", vec![]))],
    );
    with_hello("reply-ok", vec![reply(PeerId::MASTER, ok_outcome())]);
    with_hello("reply-error", vec![reply(PeerId::MASTER, err_outcome())]);
    with_hello(
        "reply-failed",
        vec![reply(PeerId::MASTER, failed_outcome())],
    );
    with_hello(
        "forward-failed-to-other",
        vec![reply(OTHER, failed_outcome())],
    );
    with_hello("forward-reply-to-other", vec![reply(OTHER, ok_outcome())]);
    with_hello("release", vec![release(PeerId::MASTER)]);
    with_hello("retain", vec![retain(PeerId::MASTER)]);
    with_hello("cancel", vec![cancel(PeerId::MASTER)]);
    for (name, message) in [
        (
            "arena-offer",
            Message::ArenaOffer {
                fd: 3,
                size: 1 << 20,
            },
        ),
        ("arena-answer", Message::ArenaAnswer { accepted: true }),
        (
            "arena-free",
            Message::ArenaFree {
                offsets: vec![0, 4096],
            },
        ),
    ] {
        with_hello(
            name,
            vec![Envelope {
                src: SELF,
                dst: PeerId::MASTER,
                message,
            }],
        );
    }
    with_hello("forward-cancel-to-other", vec![cancel(OTHER)]);
    with_hello(
        "forward-release-retain-to-other",
        vec![release(OTHER), retain(OTHER)],
    );
    with_hello(
        "mixed-traffic",
        vec![
            request(
                PeerId::MASTER,
                0,
                call_global("m", "f", vec![Value::Int(7)]),
            ),
            retain(PeerId::MASTER),
            request(OTHER, 1, call_global("m", "g", vec![value_zoo()])),
            reply(PeerId::MASTER, ok_outcome()),
            release(PeerId::MASTER),
            release(OTHER),
            request(PeerId::MASTER, 2, method_call()),
        ],
    );
    // Frames a twin must not send the master: each closes the peer.
    with_hello("shutdown", vec![from_self(Message::Shutdown)]);
    with_hello(
        "peer-gone",
        vec![from_self(Message::PeerGone {
            peer: OTHER,
            reason: "exit status 3".into(),
        })],
    );
    with_hello("second-hello", vec![hello.clone()]);
    // ...and control messages for another twin, which must not reach it.
    with_hello(
        "forward-shutdown",
        vec![Envelope {
            dst: OTHER,
            ..from_self(Message::Shutdown)
        }],
    );
    with_hello(
        "forward-hello",
        vec![Envelope {
            dst: OTHER,
            ..hello.clone()
        }],
    );
    with_hello(
        "spoofed-source",
        vec![Envelope {
            src: OTHER,
            ..request(PeerId::MASTER, 0, call_global("m", "f", vec![]))
        }],
    );
    // Handshakes the master must refuse.
    out.push((
        "hello-wrong-protocol".into(),
        vec![from_self(Message::Hello(twin_hello(
            SELF,
            TWIN_ID,
            PROTOCOL_VERSION + 1,
        )))],
    ));
    out.push((
        "hello-wrong-peer".into(),
        vec![from_self(Message::Hello(twin_hello(
            NOBODY,
            TWIN_ID,
            PROTOCOL_VERSION,
        )))],
    ));
    out.push((
        "hello-wrong-twin-id".into(),
        vec![from_self(Message::Hello(twin_hello(
            SELF,
            "someone-else",
            PROTOCOL_VERSION,
        )))],
    ));
    out.push((
        "request-before-hello".into(),
        vec![request(PeerId::MASTER, 0, call_global("m", "f", vec![]))],
    ));
    out
}

/// Single frames in both directions, for the decoder.
fn single_envelopes() -> Vec<Envelope> {
    let master_hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: SELF,
        twin_id: "master".into(),
        pid: 4242,
        interpreter: "CPython".into(),
        version: "3.11.2".into(),
        pickle_protocol: 5,
    };
    let to_twin = |message| Envelope {
        src: PeerId::MASTER,
        dst: SELF,
        message,
    };
    let mut out: Vec<Envelope> = kernel_scenarios()
        .into_iter()
        .flat_map(|(_, frames)| frames)
        .collect();
    out.extend([
        to_twin(Message::Hello(master_hello)),
        to_twin(Message::Request(Request {
            id: RequestId {
                index: 3,
                generation: 1,
            },
            chain: ChainId {
                origin: PeerId::MASTER,
                thread: 1,
            },
            op: call_global("__main__", "hot_loop", vec![Value::Int(1000)]),
            time_left_us: Some(2_000_000),
        })),
        to_twin(Message::Reply(Reply {
            id: RequestId {
                index: 0,
                generation: 0,
            },
            outcome: Outcome::Ok(value_zoo()),
        })),
        to_twin(Message::Shutdown),
        to_twin(Message::PeerGone {
            peer: OTHER,
            reason: "killed by signal 9 (SIGKILL)".into(),
        }),
    ]);
    out
}

fn twin_hello(peer: PeerId, twin_id: &str, protocol: u32) -> Hello {
    Hello {
        protocol,
        peer,
        twin_id: twin_id.into(),
        pid: 4243,
        interpreter: "PyPy".into(),
        version: "7.3.11".into(),
        pickle_protocol: 5,
    }
}

fn cancel(dst: PeerId) -> Envelope {
    Envelope {
        src: SELF,
        dst,
        message: Message::Cancel {
            id: RequestId {
                index: 0,
                generation: 1,
            },
        },
    }
}

fn from_self(message: Message) -> Envelope {
    Envelope {
        src: SELF,
        dst: PeerId::MASTER,
        message,
    }
}

fn request(dst: PeerId, index: u32, op: Op) -> Envelope {
    Envelope {
        src: SELF,
        dst,
        message: Message::Request(Request {
            id: RequestId {
                index,
                generation: 1,
            },
            chain: ChainId {
                origin: SELF,
                thread: 1,
            },
            op,
            time_left_us: None,
        }),
    }
}

fn reply(dst: PeerId, outcome: Outcome) -> Envelope {
    Envelope {
        src: SELF,
        dst,
        message: Message::Reply(Reply {
            id: RequestId {
                index: 0,
                generation: 1,
            },
            outcome,
        }),
    }
}

fn release(dst: PeerId) -> Envelope {
    Envelope {
        src: SELF,
        dst,
        message: Message::Release(Release {
            objects: vec![(ObjectId(1), 1), (ObjectId(2), 3)],
        }),
    }
}

fn retain(dst: PeerId) -> Envelope {
    Envelope {
        src: SELF,
        dst,
        message: Message::Retain(Retain {
            objects: vec![(ObjectId(1), OTHER, 1)],
        }),
    }
}

fn ok_outcome() -> Outcome {
    Outcome::Ok(Value::Int(42))
}

fn err_outcome() -> Outcome {
    Outcome::Err(remote_error())
}

fn failed_outcome() -> Outcome {
    Outcome::Failed(Failure::PeerLost {
        peer: NOBODY,
        twin_id: "gone".into(),
        reason: "killed by signal 9".into(),
    })
}

fn remote_error() -> RemoteError {
    RemoteError {
        refs: Vec::new(),
        type_path: "builtins.ValueError".into(),
        message: "bad value".into(),
        traceback:
            "Traceback (most recent call last):\n  File \"<twin>\", line 1\nValueError: bad value\n"
                .into(),
        pickle: Some(Bytes::from(b"\x80\x05\x95\x00".to_vec())),
    }
}

fn call_global(module: &str, qualname: &str, args: Vec<Value>) -> Op {
    Op::CallGlobal {
        module: module.into(),
        qualname: qualname.into(),
        args,
        kwargs: vec![("doctor".into(), Value::Str("who?".into()))],
    }
}

fn object(owner: PeerId, id: u64) -> ObjectRef {
    ObjectRef {
        owner,
        id: ObjectId(id),
        class: Some(("__main__".into(), "SuperComputer".into())),
        kind: cpy2py_wire::RefKind::Twin,
    }
}

fn method_call() -> Op {
    Op::CallMethod {
        target: object(PeerId::MASTER, 1),
        name: "megaloop".into(),
        args: vec![Value::Int(1000), Value::Int(1000)],
        kwargs: vec![],
    }
}

/// One request of every operation.
fn ops() -> Vec<Op> {
    let class = Value::Global {
        module: "__main__".into(),
        qualname: "SuperComputer".into(),
    };
    vec![
        call_global("math", "factorial", vec![Value::Int(20)]),
        Op::CallValue {
            callable: Value::Global {
                module: "builtins".into(),
                qualname: "len".into(),
            },
            args: vec![Value::List(vec![Value::None, Value::Bool(true)])],
            kwargs: vec![],
        },
        method_call(),
        Op::GetAttr {
            target: Value::Ref(object(PeerId::MASTER, 1)),
            name: "x".into(),
        },
        Op::SetAttr {
            target: Value::Ref(object(PeerId::MASTER, 1)),
            name: "x".into(),
            value: Value::Float(1.5),
        },
        Op::DelAttr {
            target: class.clone(),
            name: "x".into(),
        },
        Op::Instantiate {
            class,
            args: vec![value_zoo()],
            kwargs: vec![("y".into(), Value::Str("z".into()))],
        },
    ]
}

/// A value with every variant of [`Value`] in it.
fn value_zoo() -> Value {
    Value::Tuple(vec![
        Value::None,
        Value::Bool(false),
        Value::Int(-1),
        Value::BigInt(Bytes::from(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])),
        Value::Float(f64::NAN),
        Value::Str("héllo".into()),
        Value::Bytes(Bytes::from(vec![0, 255, 7])),
        Value::List(vec![Value::Int(1), Value::List(vec![])]),
        Value::Dict(vec![(Value::Str("k".into()), Value::Int(2))]),
        Value::Set(vec![Value::Int(3)]),
        Value::FrozenSet(vec![Value::Int(4)]),
        Value::Global {
            module: "os.path".into(),
            qualname: "join".into(),
        },
        Value::Ref(object(OTHER, 5)),
        Value::Pickle {
            data: Bytes::from(b"\x80\x05\x95\x10\x00".to_vec()),
            refs: vec![object(SELF, 6)],
            buffers: vec![Bytes::from(vec![1, 2, 3])],
        },
        Value::Error(Box::new(remote_error())),
        Value::int_list(&[0, -1, i64::MIN]),
        Value::float_list(&[f64::NAN, 2.5]),
    ])
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::CallGlobal { .. } => "call-global",
        Op::CallValue { .. } => "call-value",
        Op::CallMethod { .. } => "call-method",
        Op::GetAttr { .. } => "get-attr",
        Op::SetAttr { .. } => "set-attr",
        Op::DelAttr { .. } => "del-attr",
        Op::Instantiate { .. } => "instantiate",
    }
}

fn describe(envelope: &Envelope) -> String {
    let what = match &envelope.message {
        Message::Hello(_) => "hello",
        Message::Request(request) => op_name(&request.op),
        Message::Reply(_) => "reply",
        Message::Release(_) => "release",
        Message::Shutdown => "shutdown",
        Message::PeerGone { .. } => "peer-gone",
        Message::Retain(_) => "retain",
        Message::Cancel { .. } => "cancel",
        Message::ArenaOffer { .. } => "arena-offer",
        Message::ArenaAnswer { .. } => "arena-answer",
        Message::ArenaFree { .. } => "arena-free",
    };
    format!("{what}-{}-to-{}", envelope.src.0, envelope.dst.0)
}

fn frame(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(envelope, &mut out).expect("seed envelopes encode");
    out
}

fn concat(frames: &[Envelope]) -> Vec<u8> {
    frames.iter().flat_map(frame).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::{env, fs};

    fn corpus_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
    }

    /// The committed seeds are what [`super::all`] builds; with
    /// `CPY2PY_FUZZ_WRITE_SEEDS=1` this writes them instead.
    #[test]
    fn committed_corpus_matches_the_seeds() {
        let write = env::var_os("CPY2PY_FUZZ_WRITE_SEEDS").is_some_and(|v| v == "1");
        let seeds = super::all();
        let targets: BTreeSet<&str> = seeds.iter().map(|(target, _, _)| *target).collect();
        for target in targets {
            let dir = corpus_dir().join(target);
            let expected: BTreeSet<&str> = seeds
                .iter()
                .filter(|(t, _, _)| *t == target)
                .map(|(_, name, _)| name.as_str())
                .collect();
            if write {
                fs::create_dir_all(&dir).expect("create the corpus directory");
                for entry in fs::read_dir(&dir).expect("list the corpus").flatten() {
                    let name = entry.file_name();
                    if !expected.contains(name.to_string_lossy().as_ref()) {
                        fs::remove_file(entry.path()).expect("remove a stale seed");
                    }
                }
            }
            let committed: BTreeSet<String> = fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            for (_, name, bytes) in seeds.iter().filter(|(t, _, _)| *t == target) {
                let path = dir.join(name);
                if write {
                    fs::write(&path, bytes).expect("write a seed");
                } else {
                    let found = fs::read(&path).unwrap_or_default();
                    assert!(
                        found == *bytes,
                        "{} is stale or missing: rerun with CPY2PY_FUZZ_WRITE_SEEDS=1",
                        path.display()
                    );
                }
            }
            if !write {
                let extra: Vec<&String> = committed
                    .iter()
                    .filter(|name| !expected.contains(name.as_str()))
                    .collect();
                assert!(
                    extra.is_empty(),
                    "unexpected files in {}: {extra:?}",
                    dir.display()
                );
            }
        }
    }
}
