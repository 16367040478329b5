//! Helpers for the end-to-end tests of cpy2py: finding the test interpreters
//! (virtualenvs with cpy2py installed, prepared by `cargo xtask build`) and a
//! Rust host kernel to drive them.

use cpy2py_kernel::{Handler, Kernel, KernelConfig, LocalInfo, RequestContext};
use cpy2py_wire::{Op, Outcome, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The interpreters to test against: `(flavour, executable)` from the
/// `CPY2PY_TEST_CPYTHON` and `CPY2PY_TEST_PYPY` variables that
/// `cargo xtask test` sets.
///
/// A missing variable fails the test when `CI=true` (CI must test both) and
/// is reported and skipped otherwise.
pub fn interpreters() -> Vec<(&'static str, PathBuf)> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut out = Vec::new();
    for (flavour, var) in [
        ("cpython", "CPY2PY_TEST_CPYTHON"),
        ("pypy", "CPY2PY_TEST_PYPY"),
    ] {
        match std::env::var_os(var) {
            Some(path) => out.push((flavour, PathBuf::from(path))),
            None if ci => panic!("{var} is not set; in CI every interpreter must be tested"),
            None => eprintln!("{var} is not set: not testing {flavour} (run `cargo xtask test`)"),
        }
    }
    out
}

/// A host handler that echoes its arguments back as a list.
pub struct Echo;

impl Handler for Echo {
    fn handle(&self, _: &RequestContext<'_>, op: Op) -> Outcome {
        match op {
            Op::CallGlobal { args, .. } | Op::CallValue { args, .. } => {
                Outcome::Ok(Value::List(args))
            }
            _ => Outcome::Ok(Value::None),
        }
    }
}

/// Starts a Rust master kernel named `host`.
pub fn host() -> Kernel {
    let local = LocalInfo {
        name: "host".into(),
        interpreter: "rust".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pickle_protocol: 0,
    };
    Kernel::start_master(local, KernelConfig::default(), Arc::new(Echo)).expect("host kernel")
}

/// A call of `module.qualname(*args)`.
pub fn global(module: &str, qualname: &str, args: Vec<Value>) -> Op {
    Op::CallGlobal {
        module: module.into(),
        qualname: qualname.into(),
        args,
        kwargs: vec![],
    }
}

/// Children of this process that are still around (zombies included).
pub fn child_processes() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesized command: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            out.push(pid);
        }
    }
    out
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The value of a successful call; panics with the outcome otherwise.
pub fn ok(result: Result<cpy2py_wire::Outcome, cpy2py_kernel::CallError>) -> Value {
    match result {
        Ok(Outcome::Ok(v)) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}
