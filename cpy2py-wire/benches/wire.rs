//! Wire microbenchmarks: encode and decode of every message kind and of the bulk
//! payloads (1 MiB bytes, a 100,000-int list, a 10,000-entry str→float dict).
//!
//! A std-only harness (`harness = false`) rather than criterion, which would add its
//! build time to every `cargo test` in CI. Each case runs in batches sized to take
//! about a millisecond; the reported figure is the median over the batches of the
//! time per operation, with `std::hint::black_box` around inputs and outputs.
//!
//! ```text
//! cargo bench -p cpy2py-wire --bench wire [-- --quick] [-- --json PATH]
//! ```
//!
//! Prints a markdown table; `--json PATH` also writes the rows as JSON (read by
//! `cargo xtask bench`). `--quick` takes fewer batches. Other arguments (cargo passes
//! `--bench`) are ignored.

use std::{
    env,
    fmt::Write as _,
    fs,
    hint::black_box,
    time::{Duration, Instant},
};

use cpy2py_wire::{
    Bytes, ChainId, Envelope, FrameDecoder, Hello, Message, ObjectId, ObjectRef, Op, Outcome,
    PeerId, Release, RemoteError, Reply, Request, RequestId, Retain, Value, encode_frame,
};

/// One benchmarked envelope: its name and whether it is a bulk payload (for MB/s).
struct Case {
    name: &'static str,
    bulk: bool,
    envelope: Envelope,
}

/// The measured figures of one encode or decode.
struct Row {
    metric: String,
    frame_bytes: usize,
    median_ns: f64,
    bulk: bool,
}

fn request(op: Op) -> Message {
    Message::Request(Request {
        id: RequestId {
            index: 3,
            generation: 1,
        },
        chain: ChainId {
            origin: PeerId::MASTER,
            thread: 1,
        },
        op,
        time_left_us: None,
    })
}

fn reply(outcome: Outcome) -> Message {
    Message::Reply(Reply {
        id: RequestId {
            index: 3,
            generation: 1,
        },
        outcome,
    })
}

fn call_global(qualname: &str, args: Vec<Value>) -> Message {
    request(Op::CallGlobal {
        module: "__main__".into(),
        qualname: qualname.into(),
        args,
        kwargs: Vec::new(),
    })
}

fn object_ref() -> ObjectRef {
    ObjectRef {
        owner: PeerId(1),
        id: ObjectId(42),
        class: Some(("__main__".into(), "Bench".into())),
        kind: cpy2py_wire::RefKind::Twin,
    }
}

/// The payloads of the Python benchmarks. The bytes and the list are the
/// values the wire carries for them (the list packed, as the Python side sends
/// lists of 1,024 ints or more); the dict is its `Value` tree, which the
/// Python side would send as one pickle instead.
fn bulk_payloads() -> [(&'static str, &'static str, Value); 3] {
    let bytes = Value::Bytes(Bytes::from(vec![0xa5; 1 << 20]));
    let list = Value::int_list(&(0..100_000).collect::<Vec<i64>>());
    let dict = Value::Dict(
        (0..10_000)
            .map(|i| (Value::Str(format!("key{i}")), Value::Float(i as f64 * 0.5)))
            .collect(),
    );
    [
        ("Request echo(1 MiB bytes)", "Reply 1 MiB bytes", bytes),
        ("Request echo(100k-int list)", "Reply 100k-int list", list),
        (
            "Request echo(10k str→float dict)",
            "Reply 10k str→float dict",
            dict,
        ),
    ]
}

fn cases() -> Vec<Case> {
    let small = |name, message| Case {
        name,
        bulk: false,
        envelope: Envelope {
            src: PeerId::MASTER,
            dst: PeerId(1),
            message,
        },
    };
    let mut cases = vec![
        small(
            "Hello",
            Message::Hello(Hello {
                protocol: cpy2py_wire::PROTOCOL_VERSION,
                peer: PeerId(1),
                twin_id: "pypy3".into(),
                pid: 4242,
                interpreter: "PyPy".into(),
                version: "3.9.16".into(),
                pickle_protocol: 5,
            }),
        ),
        small("Request CallGlobal noop()", call_global("noop", Vec::new())),
        small(
            "Request CallGlobal add(1, 2)",
            call_global("add", vec![Value::Int(1), Value::Int(2)]),
        ),
        small(
            "Request CallValue",
            request(Op::CallValue {
                callable: Value::Global {
                    module: "__main__".into(),
                    qualname: "noop".into(),
                },
                args: Vec::new(),
                kwargs: vec![("flag".into(), Value::Bool(true))],
            }),
        ),
        small(
            "Request CallMethod",
            request(Op::CallMethod {
                target: object_ref(),
                name: "noop".into(),
                args: Vec::new(),
                kwargs: Vec::new(),
            }),
        ),
        small(
            "Request GetAttr",
            request(Op::GetAttr {
                target: Value::Ref(object_ref()),
                name: "x".into(),
            }),
        ),
        small(
            "Request SetAttr",
            request(Op::SetAttr {
                target: Value::Ref(object_ref()),
                name: "x".into(),
                value: Value::Int(2),
            }),
        ),
        small(
            "Request DelAttr",
            request(Op::DelAttr {
                target: Value::Ref(object_ref()),
                name: "x".into(),
            }),
        ),
        small(
            "Request Instantiate",
            request(Op::Instantiate {
                class: Value::Global {
                    module: "__main__".into(),
                    qualname: "Bench".into(),
                },
                args: vec![Value::Int(1)],
                kwargs: Vec::new(),
            }),
        ),
        small("Reply Ok(None)", reply(Outcome::Ok(Value::None))),
        small("Reply Ok(3)", reply(Outcome::Ok(Value::Int(3)))),
        small(
            "Reply Err",
            reply(Outcome::Err(RemoteError {
                type_path: "builtins.ValueError".into(),
                message: "bad value".into(),
                traceback: "Traceback (most recent call last):\n  ...\nValueError: bad value\n"
                    .into(),
                pickle: Some(Bytes::from(vec![0x80; 64])),
                refs: Vec::new(),
            })),
        ),
        small(
            "Release (8 objects)",
            Message::Release(Release {
                objects: (0..8).map(|i| (ObjectId(i), 1)).collect(),
            }),
        ),
        small(
            "Retain (8 objects)",
            Message::Retain(Retain {
                objects: (0..8).map(|i| (ObjectId(i), PeerId(2), 1)).collect(),
            }),
        ),
        small("Shutdown", Message::Shutdown),
        small(
            "PeerGone",
            Message::PeerGone {
                peer: PeerId(2),
                reason: "exited with status 0".into(),
            },
        ),
    ];
    for (request_name, reply_name, payload) in bulk_payloads() {
        let mut request = small(request_name, call_global("echo", vec![payload.clone()]));
        request.bulk = true;
        let mut reply = small(reply_name, reply(Outcome::Ok(payload)));
        reply.bulk = true;
        cases.push(request);
        cases.push(reply);
    }
    cases
}

/// Median time per operation of `op`, run in batches that each take about `target`.
fn measure(mut op: impl FnMut(), batches: usize, target: Duration) -> f64 {
    // Warm up and find how many operations fill one batch.
    let mut per_batch = 1usize;
    loop {
        let start = Instant::now();
        for _ in 0..per_batch {
            op();
        }
        if start.elapsed() >= target || per_batch >= 1 << 24 {
            break;
        }
        per_batch *= 2;
    }
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            start.elapsed().as_secs_f64() * 1e9 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn run(batches: usize, target: Duration) -> Vec<Row> {
    let decoder = FrameDecoder::default();
    let mut rows = Vec::new();
    for case in cases() {
        let mut frame = Vec::new();
        if let Err(error) = encode_frame(&case.envelope, &mut frame) {
            panic!("{}: cannot encode: {error}", case.name);
        }
        let mut buf = Vec::with_capacity(frame.len());
        let encode_ns = measure(
            || {
                buf.clear();
                // Errors are impossible here: the same envelope encoded above.
                let _ = black_box(encode_frame(black_box(&case.envelope), &mut buf));
            },
            batches,
            target,
        );
        let decode_ns = measure(
            || {
                let _ = black_box(decoder.decode(black_box(&frame)));
            },
            batches,
            target,
        );
        match decoder.decode(&frame) {
            Ok(Some((decoded, used))) if decoded == case.envelope && used == frame.len() => {}
            other => panic!("{}: decoding does not round-trip: {other:?}", case.name),
        }
        for (verb, ns) in [("encode", encode_ns), ("decode", decode_ns)] {
            rows.push(Row {
                metric: format!("{verb} {}", case.name),
                frame_bytes: frame.len(),
                median_ns: ns,
                bulk: case.bulk,
            });
        }
    }
    rows
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn mb_per_s(row: &Row) -> f64 {
    row.frame_bytes as f64 / row.median_ns * 1e3
}

fn to_json(rows: &[Row], batches: usize) -> String {
    let mut out = format!("{{\"batches\": {batches}, \"rows\": [\n");
    for (i, row) in rows.iter().enumerate() {
        let sep = if i + 1 == rows.len() { "" } else { "," };
        let mb_s = if row.bulk {
            format!(", \"mb_s\": {:.1}", mb_per_s(row))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {{\"group\": \"wire\", \"subject\": \"cpy2py-wire\", \"metric\": {}, \
             \"median_ns\": {:.1}, \"bytes\": {}{mb_s}}}{sep}",
            json_str(&row.metric),
            row.median_ns,
            row.frame_bytes
        );
    }
    out.push_str("]}\n");
    out
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let json_path = args
        .iter()
        .position(|arg| arg == "--json")
        .and_then(|i| args.get(i + 1));
    let (batches, target) = if quick {
        (11, Duration::from_micros(300))
    } else {
        (51, Duration::from_millis(2))
    };
    let rows = run(batches, target);
    println!("| operation | frame bytes | median ns/op | MB/s |");
    println!("| --- | ---: | ---: | ---: |");
    for row in &rows {
        let mb_s = if row.bulk {
            format!("{:.0}", mb_per_s(row))
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {:.0} | {mb_s} |",
            row.metric, row.frame_bytes, row.median_ns
        );
    }
    if let Some(path) = json_path {
        if let Err(error) = fs::write(path, to_json(&rows, batches)) {
            eprintln!("cannot write {path}: {error}");
            std::process::exit(1);
        }
    }
}
