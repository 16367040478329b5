//! A Rust host embedding the kernel drives real CPython and PyPy twins: values,
//! remote errors, a twin killed mid-call, start/stop cycles and bad executables.

use cpy2py_kernel::{CallError, KernelError, TwinSpec};
use cpy2py_wire::{Bytes, Op, Outcome, Value};
use integration_tests::{global, host, interpreters, ok};
use std::time::{Duration, Instant};

const LIMIT: Option<Duration> = Some(Duration::from_secs(30));

#[test]
fn values_round_trip_through_every_interpreter() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        assert_eq!(
            ok(kernel.call(
                twin.peer,
                global("math", "factorial", vec![Value::Int(20)]),
                LIMIT
            )),
            Value::Int(2432902008176640000)
        );
        // 30! needs more than 64 bits: a BigInt, little-endian two's complement.
        let big = ok(kernel.call(
            twin.peer,
            global("math", "factorial", vec![Value::Int(30)]),
            LIMIT,
        ));
        let Value::BigInt(bytes) = big else {
            panic!("{flavour}: expected a BigInt, got {big:?}")
        };
        let mut n: u128 = 0;
        for b in bytes.iter().rev() {
            n = (n << 8) | u128::from(*b);
        }
        assert_eq!(n, 265252859812191058636308480000000);
        let all = Value::Tuple(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
            Value::Str("ünïcode ✓".into()),
            Value::Bytes(Bytes::from(vec![0, 255, 1])),
            Value::List(vec![Value::Int(1)]),
            Value::Dict(vec![(Value::Str("k".into()), Value::Float(1.0))]),
            Value::Set(vec![Value::Int(3)]),
            Value::FrozenSet(vec![Value::Int(4)]),
        ]);
        // builtins.tuple(x) returns x's items as a tuple: an identity for tuples.
        assert_eq!(
            ok(kernel.call(
                twin.peer,
                global("builtins", "tuple", vec![all.clone()]),
                LIMIT
            )),
            all,
            "{flavour}"
        );
        // Lists of 1024 numbers or more come back packed, whatever the twin.
        let ints: Vec<i64> = (0..3000).map(|i| (i - 1500) << 40).collect();
        let floats: Vec<f64> = (0..3000).map(|i| f64::from(i) * 0.5 - 7.0).collect();
        for packed in [Value::int_list(&ints), Value::float_list(&floats)] {
            assert_eq!(
                ok(kernel.call(
                    twin.peer,
                    global("builtins", "list", vec![packed.clone()]),
                    LIMIT
                )),
                packed,
                "{flavour}"
            );
        }
        assert_eq!(
            ok(kernel.call(
                twin.peer,
                global("platform", "python_implementation", vec![]),
                LIMIT
            )),
            Value::Str(if flavour == "pypy" { "PyPy" } else { "CPython" }.into())
        );
        kernel.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn remote_exceptions_are_typed_outcomes_with_tracebacks() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        match kernel.call(
            twin.peer,
            global("math", "sqrt", vec![Value::Int(-1)]),
            LIMIT,
        ) {
            Ok(Outcome::Err(e)) => {
                assert_eq!(e.type_path, "builtins.ValueError", "{flavour}");
                assert!(
                    e.message.contains("math domain error"),
                    "{flavour}: {}",
                    e.message
                );
                assert!(
                    e.traceback.contains("ValueError"),
                    "{flavour}: {}",
                    e.traceback
                );
            }
            other => panic!("{flavour}: expected a remote error, got {other:?}"),
        }
        match kernel.call(twin.peer, global("no_such_module_xyz", "f", vec![]), LIMIT) {
            Ok(Outcome::Err(e)) => assert!(
                e.type_path.ends_with("ModuleNotFoundError"),
                "{flavour}: {e:?}"
            ),
            other => panic!("{flavour}: expected an import error, got {other:?}"),
        }
        // The twin is still usable after both.
        assert_eq!(
            ok(kernel.call(
                twin.peer,
                global("operator", "add", vec![Value::Int(1), Value::Int(2)]),
                LIMIT
            )),
            Value::Int(3)
        );
        kernel.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_twin_killed_mid_call_fails_every_pending_call_promptly() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let kernel = kernel.clone();
                std::thread::spawn(move || {
                    kernel.call(
                        twin.peer,
                        global("time", "sleep", vec![Value::Int(20)]),
                        LIMIT,
                    )
                })
            })
            .collect();
        // Kill it once all four calls are in flight.
        let deadline = Instant::now() + Duration::from_secs(10);
        while kernel.pending_calls() < 4 {
            assert!(
                Instant::now() < deadline,
                "{flavour}: the calls were never sent"
            );
            std::thread::yield_now();
        }
        let killed = Instant::now();
        // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
        assert_eq!(unsafe { libc::kill(twin.pid as i32, libc::SIGKILL) }, 0);
        for caller in callers {
            match caller.join().expect("caller") {
                Err(CallError::PeerLost {
                    twin_id, reason, ..
                }) => {
                    assert_eq!(twin_id, flavour);
                    assert!(reason.contains("signal 9"), "{flavour}: {reason}");
                }
                other => panic!("{flavour}: expected PeerLost, got {other:?}"),
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "{flavour}: took {:?}",
            killed.elapsed()
        );
        assert!(!kernel.is_alive(twin.peer));
        let later = kernel.call(
            twin.peer,
            global("math", "factorial", vec![Value::Int(3)]),
            LIMIT,
        );
        assert!(
            matches!(later, Err(CallError::PeerLost { .. })),
            "{flavour}: {later:?}"
        );
        kernel.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn bad_executables_are_named_in_the_error() {
    let kernel = host();
    match kernel.spawn(TwinSpec::python("/nonexistent/python9", "ghost")) {
        Err(e @ KernelError::Spawn { .. }) => {
            assert!(e.to_string().contains("/nonexistent/python9"), "{e}")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    match kernel.spawn(TwinSpec::python("/bin/false", "liar")) {
        Err(e @ KernelError::ExitedEarly { .. }) => {
            assert!(e.to_string().contains("exited with status 1"), "{e}");
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
    kernel.shutdown(Duration::ZERO);
}

#[test]
fn an_interpreter_without_cpy2py_shows_its_stderr() {
    let Some((_, python)) = interpreters().into_iter().next() else {
        return;
    };
    // The base interpreter of the test venv has no cpy2py; -I ignores user site.
    let kernel = host();
    let mut spec = TwinSpec::python(&python, "bare");
    spec.args = vec!["-I".into(), "-S".into(), "-m".into(), "cpy2py.twin".into()];
    match kernel.spawn(spec) {
        Err(e @ KernelError::ExitedEarly { .. }) => {
            let text = e.to_string();
            assert!(text.contains("No module named 'cpy2py'"), "{text}");
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
    kernel.shutdown(Duration::ZERO);
}

#[test]
fn op_variants_reach_python() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        let op = Op::GetAttr {
            target: Value::Global {
                module: "math".into(),
                qualname: "pi".into(),
            },
            name: "real".into(),
        };
        assert_eq!(
            ok(kernel.call(twin.peer, op, LIMIT)),
            Value::Float(std::f64::consts::PI)
        );
        let op = Op::CallValue {
            callable: Value::Global {
                module: "builtins".into(),
                qualname: "len".into(),
            },
            args: vec![Value::Str("four".into())],
            kwargs: vec![],
        };
        assert_eq!(ok(kernel.call(twin.peer, op, LIMIT)), Value::Int(4));
        let op = Op::CallGlobal {
            module: "builtins".into(),
            qualname: "int".into(),
            args: vec![Value::Str("ff".into())],
            kwargs: vec![("base".into(), Value::Int(16))],
        };
        assert_eq!(ok(kernel.call(twin.peer, op, LIMIT)), Value::Int(255));
        kernel.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_twin_started_by_a_rust_host_knows_its_id_and_hides_the_kernels_variables() {
    for (flavour, python) in interpreters() {
        let kernel = host();
        let twin = kernel
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        let call = |module: &str, name: &str, args| {
            ok(kernel.call(twin.peer, global(module, name, args), LIMIT))
        };
        let ids = "cpy2py.kernel_state";
        assert_eq!(
            call(ids, "is_twinterpreter", vec![Value::Str(flavour.into())]),
            Value::Bool(true),
            "{flavour}"
        );
        assert_eq!(
            call(ids, "is_master", vec![]),
            Value::Bool(false),
            "{flavour}"
        );
        for name in cpy2py_kernel::TWIN_ENV {
            assert_eq!(
                call("os", "getenv", vec![Value::Str(name.into())]),
                Value::None,
                "{flavour}: {name}"
            );
        }
        kernel.shutdown(Duration::from_secs(5));
    }
}
