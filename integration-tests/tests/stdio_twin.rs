//! Twins whose frames travel over a child's stdin and stdout ([`Channel::Stdio`]),
//! with `env` as the child that carries the stream: what `ssh` does for a remote
//! twin, without ssh. The kernel knows only "a child process whose stdio carries
//! frames".

use cpy2py_kernel::{CallError, Channel, Kernel, KernelError, TwinEnv, TwinSpec};
use cpy2py_wire::{Bytes, Value};
use integration_tests::{global, host, interpreters, ok};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Option<Duration> = Some(Duration::from_secs(30));

/// `env VARS... python -m cpy2py.twin`, over the child's stdio.
fn through_env(kernel: &Kernel, python: &Path, twin_id: &str) -> TwinSpec {
    let mut spec = TwinSpec::python("env", twin_id);
    spec.args = TwinEnv::stdio_vars(twin_id, kernel.name())
        .into_iter()
        .map(|(name, value)| format!("{name}={value}").into())
        .collect();
    spec.args.extend([
        python.as_os_str().to_owned(),
        "-m".into(),
        "cpy2py.twin".into(),
    ]);
    spec.channel = Channel::Stdio;
    spec.location = Some("the far side of env".into());
    spec
}

#[test]
fn calls_large_frames_and_stray_prints_cross_a_child_s_stdio() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let info = kernel
            .spawn(through_env(&kernel, &python, flavour))
            .expect("spawn");
        assert_eq!(
            ok(kernel.call(
                info.peer,
                global("math", "factorial", vec![Value::Int(20)]),
                LIMIT
            )),
            Value::Int(2432902008176640000),
            "{flavour}"
        );
        // A print goes to the twin's fd 1, which is no longer the stream.
        ok(kernel.call(
            info.peer,
            global("builtins", "print", vec![Value::Str("stray".into())]),
            LIMIT,
        ));
        // Several times a pipe's buffer, both ways.
        let data: Vec<u8> = (0..(4 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let echoed = ok(kernel.call(
            info.peer,
            global(
                "builtins",
                "bytes",
                vec![Value::Bytes(Bytes::from(data.clone()))],
            ),
            LIMIT,
        ));
        assert_eq!(echoed, Value::Bytes(Bytes::from(data)), "{flavour}");
        let status = kernel
            .stop_twin(info.peer, Duration::from_secs(5))
            .expect("stop");
        assert!(
            status.contains("exited with status 0"),
            "{flavour}: {status}"
        );
        kernel.shutdown(Duration::ZERO);
    }
}

#[test]
fn a_killed_stdio_twin_fails_its_pending_call_naming_where_it_ran() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let info = kernel
            .spawn(through_env(&kernel, &python, flavour))
            .expect("spawn");
        let caller = {
            let kernel = kernel.clone();
            std::thread::spawn(move || {
                kernel.call(
                    info.peer,
                    global("time", "sleep", vec![Value::Float(60.0)]),
                    LIMIT,
                )
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while kernel.pending_calls() < 1 {
            assert!(
                Instant::now() < deadline,
                "{flavour}: the call was never sent"
            );
            std::thread::yield_now();
        }
        let started = Instant::now();
        // SAFETY: kill(2) of our own child (env exec'd the interpreter, so the
        // twin's pid is the child's), not reaped yet.
        assert_eq!(unsafe { libc::kill(info.pid as i32, libc::SIGKILL) }, 0);
        match caller.join().expect("caller") {
            Err(CallError::PeerLost { reason, .. }) => {
                assert!(reason.contains("killed by signal 9"), "{flavour}: {reason}");
                assert!(
                    reason.contains("the far side of env"),
                    "{flavour}: {reason}"
                );
            }
            other => panic!("{flavour}: expected the twin lost, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{flavour}");
        kernel.shutdown(Duration::ZERO);
    }
}

#[test]
fn a_greeting_of_another_protocol_is_refused_naming_both_versions() {
    let kernel = host();
    let mut spec = TwinSpec::python("sh", "older");
    spec.args = vec![
        "-c".into(),
        "echo 'Welcome!'; echo 'cpy2py-stdio protocol=999 version=0.0.1'; exec cat >/dev/null"
            .into(),
    ];
    spec.channel = Channel::Stdio;
    match kernel.spawn(spec) {
        Err(e @ KernelError::Handshake { .. }) => {
            let text = e.to_string();
            assert!(text.contains("cpy2py 0.0.1 (protocol 999)"), "{text}");
            let ours = format!("(protocol {})", cpy2py_wire::PROTOCOL_VERSION);
            assert!(text.contains(&ours), "{text}");
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    kernel.shutdown(Duration::ZERO);
}

#[test]
fn a_child_that_ends_before_greeting_gives_its_status_and_stderr() {
    let kernel = host();
    let mut spec = TwinSpec::python("sh", "quitter");
    spec.args = vec!["-c".into(), "echo 'no cpy2py here' >&2; exit 3".into()];
    spec.channel = Channel::Stdio;
    match kernel.spawn(spec) {
        Err(KernelError::ExitedEarly { code, stderr, .. }) => {
            assert_eq!(code, Some(3));
            assert_eq!(stderr, "no cpy2py here\n");
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
    kernel.shutdown(Duration::ZERO);
}

#[test]
fn stdout_noise_past_the_limit_without_a_greeting_is_refused() {
    let kernel = host();
    let mut spec = TwinSpec::python("sh", "chatty");
    spec.args = vec![
        "-c".into(),
        "yes 'Welcome to the host' | head -c 200000; exec cat >/dev/null".into(),
    ];
    spec.channel = Channel::Stdio;
    match kernel.spawn(spec) {
        Err(e @ KernelError::Handshake { .. }) => {
            let text = e.to_string();
            assert!(text.contains("without cpy2py's greeting"), "{text}");
            assert!(text.contains("Welcome to the host"), "{text}");
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
    kernel.shutdown(Duration::ZERO);
}
