//! A Rust program embedding the cpy2py kernel: it starts a PyPy twin, runs a
//! computation there, serves a Rust function that the Python side calls back,
//! and times a round trip.
//!
//! ```sh
//! cargo xtask build   # a PyPy virtualenv with cpy2py: target/venv-pypy
//! cargo run -p cpy2py-kernel --release --example embed_pypy
//! ```
//!
//! `CPY2PY_EXAMPLE_PYPY` names another interpreter with cpy2py installed.

use cpy2py_kernel::{Host, TwinSpec};
use cpy2py_wire::{RemoteError, Value};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::var("CPY2PY_EXAMPLE_PYPY").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/venv-pypy/bin/python"
        )
        .into()
    });
    let host = Host::builder()
        .name("rust")
        .function("scale", |_, args, _| match args.as_slice() {
            [Value::Int(n)] => Ok(Value::Int(n * 10)),
            _ => Err(RemoteError {
                refs: Vec::new(),
                type_path: "builtins.TypeError".into(),
                message: "scale takes one int".into(),
                traceback: String::new(),
                pickle: None,
            }),
        })
        .build()?;

    let started = Instant::now();
    let twin = host.spawn(TwinSpec::python(&python, "pypy"))?;
    println!(
        "twin 'pypy' ({} {}, pid {}) started in {:.2} s",
        twin.info().interpreter,
        twin.info().version,
        twin.info().pid,
        started.elapsed().as_secs_f64()
    );

    let code = "sum(i * i % 7 for i in range(3_000_000))";
    let t = Instant::now();
    let sum = twin.call_global("builtins", "eval", [Value::from(code)], [])?;
    println!(
        "{code} = {:?}, computed in PyPy in {:.3} s",
        sum.value,
        t.elapsed().as_secs_f64()
    );

    let callback = "__import__('cpy2py.host').host.call('scale', 4) + 2";
    let r = twin.call_global("builtins", "eval", [Value::from(callback)], [])?;
    println!("Python called back into Rust: {callback} = {:?}", r.value);

    let counter = twin
        .call_global("collections", "Counter", [Value::from("mississippi")], [])?
        .into_object()?;
    let common = counter.call_method("most_common", [Value::Int(2)], [])?;
    println!(
        "a Counter living in PyPy, used by reference: most_common(2) = {:?}",
        common.value
    );
    drop(counter);

    for _ in 0..2_000 {
        twin.call_global("builtins", "int", [], [])?;
    }
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            twin.call_global("builtins", "int", [], [])
                .map(|_| t.elapsed())
        })
        .collect::<Result<_, _>>()?;
    samples.sort();
    println!(
        "round trip of a no-op call (builtins.int()): median {:.1} µs, p99 {:.1} µs over {} calls",
        samples[samples.len() / 2].as_secs_f64() * 1e6,
        samples[samples.len() * 99 / 100].as_secs_f64() * 1e6,
        samples.len()
    );

    println!("twin stopped: {}", twin.stop(Duration::from_secs(5))?);
    Ok(())
}
