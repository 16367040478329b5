//! A master and a twin kernel in one process, joined by a socketpair: calls,
//! concurrency, reentrant callbacks and peer loss, without spawning processes.

mod common;

use common::local;
use cpy2py_kernel::{
    CallError, Handler, Kernel, KernelConfig, RequestContext, SocketTransport, TwinInfo,
};
use cpy2py_wire::{Op, Outcome, PeerId, RemoteError, RequestId, Value};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

const LIMIT: Option<Duration> = Some(Duration::from_secs(20));

/// Tags of tagged `sleep` calls that have started, and that have ended: a test
/// waits for its slow call to be running instead of guessing how long that takes.
static SLEEPS: Mutex<(Vec<String>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));
static SLEEPS_CHANGED: Condvar = Condvar::new();

fn note_sleep(tag: &str, ended: bool) {
    let mut sleeps = SLEEPS.lock().unwrap_or_else(PoisonError::into_inner);
    if ended {
        sleeps.1.push(tag.to_owned());
    } else {
        sleeps.0.push(tag.to_owned());
    }
    SLEEPS_CHANGED.notify_all();
}

/// Waits (at most 10 s) until the `sleep` call tagged `tag` has started, or
/// ended.
fn wait_for_sleep(tag: &str, ended: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sleeps = SLEEPS.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let seen = if ended { &sleeps.1 } else { &sleeps.0 };
        if seen.iter().any(|t| t == tag) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "sleep {tag:?} did not {}",
            if ended { "end" } else { "start" }
        );
        sleeps = SLEEPS_CHANGED
            .wait_timeout(sleeps, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Serves `add(a, b)`, `echo(x)`, `thread()` (the OS thread serving it),
/// `bounce(n)`: calls the other side's `bounce(n - 1)` until 0 and returns the
/// list of serving threads, and `fail()`.
struct Calc;

fn call_op(name: &str, args: Vec<Value>) -> Op {
    Op::CallGlobal {
        module: "calc".into(),
        qualname: name.into(),
        args,
        kwargs: vec![],
    }
}

fn thread_tag() -> Value {
    Value::Str(format!("{:?}", std::thread::current().id()))
}

impl Handler for Calc {
    fn handle(&self, ctx: &RequestContext<'_>, op: Op) -> Outcome {
        let Op::CallGlobal { qualname, args, .. } = op else {
            return Outcome::Ok(Value::None);
        };
        match (qualname.as_str(), args.as_slice()) {
            ("add", [Value::Int(a), Value::Int(b)]) => Outcome::Ok(Value::Int(a + b)),
            ("echo", [v]) => Outcome::Ok(v.clone()),
            ("thread", []) => Outcome::Ok(thread_tag()),
            ("bounce", [Value::Int(0)]) => Outcome::Ok(Value::List(vec![thread_tag()])),
            ("bounce", [Value::Int(n)]) => {
                match ctx
                    .kernel
                    .call(ctx.src, call_op("bounce", vec![Value::Int(n - 1)]), LIMIT)
                {
                    Ok(Outcome::Ok(Value::List(mut tags))) => {
                        tags.push(thread_tag());
                        Outcome::Ok(Value::List(tags))
                    }
                    other => Outcome::Err(error(&format!("nested call failed: {other:?}"))),
                }
            }
            ("sleep", [Value::Int(ms)]) => {
                std::thread::sleep(Duration::from_millis(*ms as u64));
                Outcome::Ok(Value::None)
            }
            ("sleep", [Value::Int(ms), Value::Str(tag)]) => {
                note_sleep(tag, false);
                std::thread::sleep(Duration::from_millis(*ms as u64));
                note_sleep(tag, true);
                Outcome::Ok(Value::None)
            }
            // Milliseconds left of this request's deadline (None: none).
            ("time_left", []) => Outcome::Ok(match ctx.deadline {
                Some(d) => {
                    Value::Int(d.saturating_duration_since(Instant::now()).as_millis() as i64)
                }
                None => Value::None,
            }),
            // A nested call to the requester, without a timeout of its own.
            ("nested", [Value::Str(name), rest @ ..]) => {
                match ctx.kernel.call(ctx.src, call_op(name, rest.to_vec()), None) {
                    Ok(outcome) => outcome,
                    Err(CallError::Timeout) => Outcome::Ok(Value::Str("timed out".into())),
                    Err(e) => Outcome::Err(error(&format!("nested call failed: {e}"))),
                }
            }
            // Waits until the requester cancels this very request.
            ("until_cancelled", []) => {
                let mine = (ctx.src, ctx.id);
                let mut cancels = CANCELS.lock().unwrap_or_else(PoisonError::into_inner);
                let started = Instant::now();
                while !cancels.contains(&mine) {
                    if started.elapsed() > Duration::from_secs(10) {
                        return Outcome::Ok(Value::Str("never cancelled".into()));
                    }
                    cancels = CANCELS_CHANGED
                        .wait_timeout(cancels, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Outcome::Ok(Value::Str("cancelled".into()))
            }
            _ => Outcome::Err(error(&format!("no function {qualname}"))),
        }
    }

    fn cancel(&self, from: PeerId, id: RequestId) {
        CANCELS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((from, id));
        CANCELS_CHANGED.notify_all();
    }
}

/// Requests cancelled by their senders, as `Calc::cancel` heard of them.
static CANCELS: Mutex<Vec<(PeerId, RequestId)>> = Mutex::new(Vec::new());
static CANCELS_CHANGED: Condvar = Condvar::new();

fn error(message: &str) -> RemoteError {
    RemoteError {
        refs: Vec::new(),
        type_path: "calc.Error".into(),
        message: message.into(),
        traceback: String::new(),
        pickle: None,
    }
}

fn pair() -> (Kernel, Kernel, TwinInfo) {
    let master = Kernel::start_master(local("master"), KernelConfig::default(), Arc::new(Calc))
        .expect("master");
    let (twin, info) = attach_twin(&master, "twin");
    (master, twin, info)
}

/// Connects a new in-process twin, serving on its own thread, to `master`.
fn attach_twin(master: &Kernel, name: &str) -> (Kernel, TwinInfo) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let ours = SocketTransport::new(a).expect("transport");
    let theirs = SocketTransport::new(b).expect("transport");
    common::join_twin(
        master,
        name,
        Box::new(ours),
        Box::new(theirs),
        Arc::new(Calc),
    )
}

fn int(outcome: Result<Outcome, CallError>) -> i64 {
    match outcome {
        Ok(Outcome::Ok(Value::Int(n))) => n,
        other => panic!("expected an int, got {other:?}"),
    }
}

#[test]
fn call_returns_the_twins_result_both_ways() {
    let (master, twin, info) = pair();
    assert_eq!(info.peer, PeerId(1));
    assert_eq!(twin.me(), PeerId(1));
    assert_eq!(twin.master_name(), "master");
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(2), Value::Int(40)]),
            LIMIT
        )),
        42
    );
    assert_eq!(
        int(twin.call(
            PeerId::MASTER,
            call_op("add", vec![Value::Int(1), Value::Int(2)]),
            LIMIT
        )),
        3
    );
    assert_eq!(master.pending_calls(), 0);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn a_twins_request_is_read_while_the_master_keeps_calling_another_twin() {
    // A master thread that stops reading a twin's socket leaves it out of the
    // poll (no epoll_ctl per call); a timer gives it back within the grace.
    // One thread calling twin A in a loop must not keep twin B's socket
    // unattended: B's own calls to the master still get through.
    let (master, twin_a, a) = pair();
    let (twin_b, _b) = attach_twin(&master, "twin-b");
    // B's socket is now unattended: the master read B's handshake last.
    assert_eq!(
        int(master.call(
            _b.peer,
            call_op("add", vec![Value::Int(1), Value::Int(1)]),
            LIMIT
        )),
        2
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let (master, stop) = (master.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sum = master.call(
                    a.peer,
                    call_op("add", vec![Value::Int(calls), Value::Int(1)]),
                    LIMIT,
                );
                assert_eq!(int(sum), calls + 1);
                calls += 1;
            }
            calls
        })
    };
    for i in 0..20 {
        let start = Instant::now();
        assert_eq!(
            int(twin_b.call(
                PeerId::MASTER,
                call_op("add", vec![Value::Int(i), Value::Int(2)]),
                LIMIT
            )),
            i + 2
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "call {i} from twin B took {:?}",
            start.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(looping.join().expect("looping thread") > 0);
    master.shutdown(Duration::from_secs(1));
    twin_a.shutdown(Duration::from_secs(1));
    twin_b.shutdown(Duration::from_secs(1));
}

#[test]
fn remote_errors_are_outcomes() {
    let (master, twin, info) = pair();
    match master.call(info.peer, call_op("nope", vec![]), LIMIT) {
        Ok(Outcome::Err(e)) => assert_eq!(e.message, "no function nope"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn many_threads_each_get_their_own_replies() {
    let (master, twin, info) = pair();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let master = master.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let got = int(master.call(
                        info.peer,
                        call_op("add", vec![Value::Int(t * 1000), Value::Int(i)]),
                        LIMIT,
                    ));
                    assert_eq!(got, t * 1000 + i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
    assert_eq!(master.pending_calls(), 0);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn callbacks_run_on_the_waiting_thread_at_any_depth() {
    let (master, twin, info) = pair();
    let depth = 50;
    let tags = match master.call(info.peer, call_op("bounce", vec![Value::Int(depth)]), LIMIT) {
        Ok(Outcome::Ok(Value::List(tags))) => tags,
        other => panic!("bounce failed: {other:?}"),
    };
    assert_eq!(tags.len() as i64, depth + 1);
    // Even depths ran here (bounce(depth) is served by the twin, bounce(depth-1)
    // by the master, ...): every master level ran on this very thread.
    let here = thread_tag();
    let master_levels: Vec<&Value> = tags.iter().rev().skip(1).step_by(2).collect();
    assert!(!master_levels.is_empty());
    assert!(
        master_levels.iter().all(|t| **t == here),
        "master levels ran on {master_levels:?}, caller is {here:?}"
    );
    // And all twin levels ran on one twin thread.
    let twin_levels: Vec<&Value> = tags.iter().rev().step_by(2).collect();
    assert!(
        twin_levels.windows(2).all(|w| w[0] == w[1]),
        "twin levels on several threads: {twin_levels:?}"
    );
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn a_slow_request_does_not_block_other_threads() {
    let (master, twin, info) = pair();
    let slow = {
        let master = master.clone();
        std::thread::spawn(move || {
            master.call(
                info.peer,
                call_op("sleep", vec![Value::Int(1500), Value::Str("slow".into())]),
                LIMIT,
            )
        })
    };
    wait_for_sleep("slow", false);
    let start = Instant::now();
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(1), Value::Int(1)]),
            LIMIT
        )),
        2
    );
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "blocked behind the slow call: {:?}",
        start.elapsed()
    );
    assert!(matches!(
        slow.join().expect("slow thread"),
        Ok(Outcome::Ok(Value::None))
    ));
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn a_slow_request_right_after_fast_ones_does_not_block_other_threads() {
    // The serving thread sets its watchdog timer at most every half grace, so
    // a slow request that starts just after a fast one has no timer of its
    // own: the expiry set for the fast one must still catch it.
    let (master, twin, info) = pair();
    let slow = {
        let master = master.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let sum = master.call(
                    info.peer,
                    call_op("add", vec![Value::Int(i), Value::Int(1)]),
                    LIMIT,
                );
                assert_eq!(int(sum), i + 1);
            }
            master.call(
                info.peer,
                call_op(
                    "sleep",
                    vec![Value::Int(1500), Value::Str("slow-after-fast".into())],
                ),
                LIMIT,
            )
        })
    };
    wait_for_sleep("slow-after-fast", false);
    let start = Instant::now();
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(2), Value::Int(2)]),
            LIMIT
        )),
        4
    );
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "blocked behind the slow call: {:?}",
        start.elapsed()
    );
    assert!(matches!(
        slow.join().expect("slow thread"),
        Ok(Outcome::Ok(Value::None))
    ));
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn losing_the_twin_fails_pending_and_later_calls() {
    let (master, twin, info) = pair();
    let waiting = {
        let master = master.clone();
        std::thread::spawn(move || {
            master.call(
                info.peer,
                call_op("sleep", vec![Value::Int(3000), Value::Str("lost".into())]),
                LIMIT,
            )
        })
    };
    wait_for_sleep("lost", false);
    let start = Instant::now();
    twin.shutdown(Duration::from_secs(0));
    // The twin kernel stopping closes nothing by itself; drop its socket by
    // stopping the master's side of the peer as a crash would.
    let _ = master.stop_twin(info.peer, Duration::from_millis(10));
    let result = waiting.join().expect("waiting thread");
    assert!(
        matches!(result, Err(CallError::PeerLost { .. })),
        "got {result:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    let later = master.call(
        info.peer,
        call_op("add", vec![Value::Int(1), Value::Int(1)]),
        LIMIT,
    );
    match later {
        Err(CallError::PeerLost { twin_id, .. }) => assert_eq!(twin_id, "twin"),
        other => panic!("expected PeerLost, got {other:?}"),
    }
    master.shutdown(Duration::from_secs(1));
}

#[test]
fn timeouts_abandon_the_call_and_the_late_reply_is_discarded() {
    let (master, twin, info) = pair();
    let result = master.call(
        info.peer,
        call_op("sleep", vec![Value::Int(300), Value::Str("late".into())]),
        Some(Duration::from_millis(50)),
    );
    assert!(matches!(result, Err(CallError::Timeout)), "got {result:?}");
    // The late reply must not complete the next call.
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(5), Value::Int(6)]),
            LIMIT
        )),
        11
    );
    // Once the slow call has ended its late reply is on its way: it must not
    // complete the next call either.
    wait_for_sleep("late", true);
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(7), Value::Int(8)]),
            LIMIT
        )),
        15
    );
    assert_eq!(master.pending_calls(), 0);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn a_deadline_travels_with_the_request_and_nested_calls_inherit_it() {
    let (master, twin, info) = pair();
    let left = master.call(
        info.peer,
        call_op("time_left", vec![]),
        Some(Duration::from_secs(5)),
    );
    match left {
        Ok(Outcome::Ok(Value::Int(ms))) => assert!((1..=5000).contains(&ms), "{ms} ms left"),
        other => panic!("expected the time left, got {other:?}"),
    }
    let none = master.call(info.peer, call_op("time_left", vec![]), None);
    assert!(matches!(none, Ok(Outcome::Ok(Value::None))), "{none:?}");
    // The twin calls back into the master without a timeout of its own, and
    // the master's side sleeps well past the deadline: the twin's nested call
    // times out at the deadline instead, and the twin answers before the
    // sleep ends. (Submitted with a callback, so that the sleep runs on the
    // master's pool, not on a thread waiting for the answer.)
    let (sender, outcomes) = std::sync::mpsc::channel();
    let started = Instant::now();
    master
        .submit_with_callback(
            info.peer,
            call_op(
                "nested",
                vec![
                    Value::Str("sleep".into()),
                    Value::Int(3000),
                    Value::Str("nested".into()),
                ],
            ),
            Instant::now().checked_add(Duration::from_millis(300)),
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        )
        .expect("submitted");
    let nested = outcomes.recv_timeout(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        matches!(&nested, Ok(Ok(Outcome::Ok(Value::Str(s)))) if s == "timed out"),
        "{nested:?} after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "answered after the master's sleep ended ({took:?}), not at the deadline"
    );
    // And the nested call's own deadline reached the master's handler.
    let inherited = master.call(
        info.peer,
        call_op("nested", vec![Value::Str("time_left".into())]),
        Some(Duration::from_secs(3)),
    );
    match inherited {
        Ok(Outcome::Ok(Value::Int(ms))) => assert!((1..=3000).contains(&ms), "{ms} ms left"),
        other => panic!("expected the inherited time left, got {other:?}"),
    }
    wait_for_sleep("nested", true);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn a_cancel_reaches_the_running_request_and_its_callback_still_runs_once() {
    let (master, twin, info) = pair();
    let (sender, outcomes) = std::sync::mpsc::channel();
    let id = master
        .submit_with_callback(
            info.peer,
            call_op("until_cancelled", vec![]),
            None,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        )
        .expect("submitted");
    master.cancel(info.peer, id).expect("cancel sent");
    let first = outcomes.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(&first, Ok(Ok(Outcome::Ok(Value::Str(s)))) if s == "cancelled"),
        "{first:?}"
    );
    assert!(outcomes.recv_timeout(Duration::from_millis(100)).is_err());
    // Cancelling what has finished changes nothing.
    master.cancel(info.peer, id).expect("cancel sent");
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(1), Value::Int(2)]),
            LIMIT
        )),
        3
    );
    assert_eq!(master.pending_calls(), 0);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn a_timeout_holds_while_frames_for_other_threads_keep_arriving() {
    let (master, twin, info) = pair();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Replies for this thread arrive every few hundred microseconds on the
    // socket the timed call's thread reads.
    let chatter = {
        let (master, stop) = (master.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = master.call(
                    info.peer,
                    call_op("add", vec![Value::Int(1), Value::Int(1)]),
                    LIMIT,
                );
            }
        })
    };
    let started = Instant::now();
    let result = master.call(
        info.peer,
        call_op(
            "sleep",
            vec![Value::Int(3000), Value::Str("chatter".into())],
        ),
        Some(Duration::from_millis(200)),
    );
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    chatter.join().expect("chatter thread");
    assert!(matches!(result, Err(CallError::Timeout)), "got {result:?}");
    assert!(
        took < Duration::from_millis(2500),
        "timed out only after the call ended ({took:?})"
    );
    wait_for_sleep("chatter", true);
    master.shutdown(Duration::from_secs(1));
    twin.shutdown(Duration::from_secs(1));
}

#[test]
fn stopping_a_twin_ends_its_serving_thread_blocked_reading_an_idle_master() {
    let master = Kernel::start_master(local("master"), KernelConfig::default(), Arc::new(Calc))
        .expect("master");
    let (a, b) = UnixStream::pair().expect("socketpair");
    let ours = SocketTransport::new(a).expect("transport");
    let theirs = SocketTransport::new(b).expect("transport");
    let (served_tx, served_rx) = std::sync::mpsc::channel();
    let joining = std::thread::spawn(move || {
        let twin = Kernel::connect_transport(
            Box::new(theirs),
            local("idle"),
            KernelConfig::default(),
            Arc::new(Calc),
        )
        .expect("twin connects");
        let serving = twin.clone();
        std::thread::spawn(move || {
            serving.serve();
            let _ = served_tx.send(());
        });
        twin
    });
    let info = master
        .attach_transport(Box::new(ours), "idle")
        .expect("handshake");
    let twin = joining.join().expect("twin thread");
    // A call shows the serving thread reads; then it blocks reading an idle
    // socket, and only the stop can end that read.
    assert_eq!(
        int(master.call(
            info.peer,
            call_op("add", vec![Value::Int(1), Value::Int(2)]),
            LIMIT
        )),
        3
    );
    assert!(
        served_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the serving thread returned while its master was there"
    );
    twin.shutdown(Duration::from_secs(0));
    served_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the serving thread ended after the stop");
    master.shutdown(Duration::from_secs(1));
}
