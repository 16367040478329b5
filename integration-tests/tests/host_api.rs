//! The `Host` API: a Rust program starts real CPython and PyPy twins, calls
//! them, holds their objects by reference (released on drop), raises their
//! exceptions as typed errors and serves Rust functions to them, reentrantly.

use cpy2py_kernel::{Host, HostError, TwinSpec};
use cpy2py_wire::{Op, Outcome, RemoteError, Value};
use integration_tests::interpreters;
use std::time::{Duration, Instant};

fn host() -> Host {
    Host::builder()
        .name("rusthost")
        .function("double", |_, args, _| match args.as_slice() {
            [Value::Int(n)] => Ok(Value::Int(n * 2)),
            _ => Err(RemoteError {
                refs: Vec::new(),
                type_path: "builtins.TypeError".into(),
                message: "double takes one int".into(),
                traceback: String::new(),
                pickle: None,
            }),
        })
        .function("bounce", |ctx, args, _| {
            // bounce(n): ask Python for bounce(n - 1) until 0; count the levels.
            let [Value::Int(n)] = args.as_slice() else {
                return Ok(Value::None);
            };
            if *n == 0 {
                return Ok(Value::Int(0));
            }
            let op = eval(&format!(
                "__import__('cpy2py.host').host.call('bounce', {}) + 1",
                n - 1
            ));
            match ctx.kernel.call(ctx.src, op, Some(Duration::from_secs(30))) {
                Ok(Outcome::Ok(Value::Int(depth))) => Ok(Value::Int(depth + 1)),
                other => Err(RemoteError {
                    refs: Vec::new(),
                    type_path: "builtins.RuntimeError".into(),
                    message: format!("nested call failed: {other:?}"),
                    traceback: String::new(),
                    pickle: None,
                }),
            }
        })
        .build()
        .expect("host")
}

fn eval(expr: &str) -> Op {
    Op::CallGlobal {
        module: "builtins".into(),
        qualname: "eval".into(),
        args: vec![Value::Str(expr.into())],
        kwargs: vec![],
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => panic!("expected an int, got {other:?}"),
    }
}

#[test]
fn objects_are_held_by_reference_and_released_on_drop() {
    for (flavour, python) in interpreters() {
        let host = host();
        let twin = host
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        let fact = twin
            .call_global("math", "factorial", [Value::Int(20)], [])
            .expect("factorial");
        assert_eq!(fact.value, Value::Int(2432902008176640000));
        let counter = twin
            .call_global("collections", "Counter", [Value::from("hello")], [])
            .expect("Counter")
            .into_object()
            .expect("an object");
        let common = counter
            .call_method("most_common", [Value::Int(1)], [])
            .expect("most_common");
        assert_eq!(
            common.value,
            Value::List(vec![Value::Tuple(vec![Value::from("l"), Value::Int(2)])])
        );
        let total = counter.call_method("total", [], []);
        // Counter.total exists from Python 3.10: PyPy 3.9 raises AttributeError.
        match (flavour, total) {
            ("cpython", Ok(r)) => assert_eq!(r.value, Value::Int(5)),
            ("pypy", Err(HostError::Remote(e))) => {
                assert_eq!(e.type_path, "builtins.AttributeError")
            }
            (f, other) => panic!("{f}: unexpected {other:?}"),
        }
        let exported = || {
            int(&twin
                .call_global("cpy2py._native", "exported_count", [], [])
                .expect("count")
                .value)
        };
        assert_eq!(
            exported(),
            1,
            "{flavour}: the Counter is exported while held"
        );
        drop(counter);
        // Releases are sent before the next call (the count query itself).
        assert_eq!(exported(), 0, "{flavour}: the Counter was not released");
        host.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn remote_exceptions_are_typed_errors() {
    for (flavour, python) in interpreters() {
        let host = host();
        let twin = host
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        match twin.call_global("math", "sqrt", [Value::Int(-1)], []) {
            Err(HostError::Remote(e)) => {
                assert_eq!(e.type_path, "builtins.ValueError");
                assert!(
                    e.traceback.contains("math domain error"),
                    "{flavour}: {}",
                    e.traceback
                );
            }
            other => panic!("{flavour}: expected a remote error, got {other:?}"),
        }
        host.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn python_calls_host_functions_reentrantly() {
    for (flavour, python) in interpreters() {
        let host = host();
        let twin = host
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        let r = twin
            .call_global(
                "builtins",
                "eval",
                [Value::from(
                    "__import__('cpy2py.host').host.call('double', 21)",
                )],
                [],
            )
            .expect("callback");
        assert_eq!(r.value, Value::Int(42), "{flavour}");
        // Python -> Rust -> Python ... 20 levels deep on one chain.
        let r = twin
            .call_global(
                "builtins",
                "eval",
                [Value::from(
                    "__import__('cpy2py.host').host.call('bounce', 20)",
                )],
                [],
            )
            .expect("bounce");
        assert_eq!(
            r.value,
            Value::Int(40),
            "{flavour}: 20 host levels + 20 Python levels"
        );
        host.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn many_threads_call_at_once() {
    for (flavour, python) in interpreters() {
        let host = host();
        let twin = host
            .spawn(TwinSpec::python(&python, flavour))
            .expect("spawn");
        let start = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let twin = twin.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let r = twin
                            .call_global(
                                "operator",
                                "add",
                                [Value::Int(t * 1000), Value::Int(i)],
                                [],
                            )
                            .expect("add");
                        assert_eq!(r.value, Value::Int(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("caller thread");
        }
        eprintln!("{flavour}: 4 x 500 calls in {:?}", start.elapsed());
        host.shutdown(Duration::from_secs(5));
    }
}
