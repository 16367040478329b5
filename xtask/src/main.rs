//! `cargo xtask`: build, test and benchmark orchestration for cpy2py.
//!
//! This is the rust-analyzer "xtask" pattern: a workspace member binary behind the
//! alias `xtask = "run --quiet --package xtask --"` in `.cargo/config.toml`, so that a
//! fresh checkout needs nothing but cargo and a Python to build and test everything.
//! Every task is a subcommand; cargo is called through `$CARGO`, from the workspace
//! root.
//!
//! ```text
//! cargo xtask build                    build cpy2py for CPython and PyPy into target/venv-*
//! cargo xtask test [-- PYTEST_ARGS]    fmt, clippy, build, mypy, cargo test, pytest (both masters)
//! cargo xtask example [-- ARGS]        run examples/hello_twins.py: CPython master, PyPy twin
//! cargo xtask bench [--quick] [--only NAME]  floors, cpy2py, peers and wire codec, side by side
//! cargo xtask fuzz [--seconds N]       cargo fuzz on the frame decoder and the kernel
//! cargo xtask soak [--seconds N]       mixed load on two twins; RSS and live objects
//! ```
//!
//! PyPy is optional on a developer machine (a loud warning, then its part is skipped)
//! and required when `CI=true`.

mod bench;
mod cli;
mod fuzz;
mod python;
#[cfg(test)]
mod tidy;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cli::Cli;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  build                    build the cpy2py extension for CPython (and PyPy, if found)
                           and install it into target/venv-cpython (target/venv-pypy)
  test [-- PYTEST_ARGS]    cargo fmt --check, clippy, build, mypy --strict and stubtest,
                           cargo test (the fuzz harnesses over their seeds too), then
                           pytest with a CPython master and with a PyPy master
  example [-- ARGS]        build, then run examples/hello_twins.py (CPython master, PyPy twin)
  bench [--quick] [--only NAME[,NAME...]]
                           in one run: the floors (socketpair ping-pong in Rust and in
                           Python), cpy2py with a CPython and a PyPy twin, the peers
                           (multiprocessing, execnet, RPyC, Pyro5, cpy2py 0.17.1 from
                           PyPI) and the wire codec; report in target/bench/report.md,
                           raw data in report.json, chart in report.svg.
                           --quick: fewer calls per metric (a few minutes in all).
                           --only: groups wire, floors, ours, peers (ours and peers
                           bring the floors along), or metrics noop, add, method,
                           attribute, bounce10, bytes_1mib, list_100k, dict_10k,
                           startup, threads, rust_host_noop (ours and peers, with
                           the floors)
  fuzz [--seconds N] [TARGET...]
                           libFuzzer (cargo fuzz) on each target for N s (default 60):
                           wire_decode, wire_stream, kernel_peer; fails on any crash
  soak [--seconds N]       mixed load (calls, objects, callbacks, threads) on a PyPy and
                           a CPython twin for N s (default 60): calls/s, RSS series, live
                           exported objects; fails if a process's RSS moves by more than
                           10 % after 60 s (or a third of the run); target/bench/soak.md

`cargo xtask TASK --help` tells more of each task.

environment:
  CI=true                  a missing PyPy is an error instead of a warning
";

fn main() -> Result<()> {
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();

    let root = project_root();
    env::set_current_dir(&root)
        .with_context(|| format!("cannot enter the workspace root {}", root.display()))?;

    match task.as_deref() {
        Some("build") => match cli::nothing(rest, cli::BUILD)? {
            Cli::Run(()) => python::build(&root).map(drop),
            Cli::Help(usage) => help(usage),
        },
        Some("test") => match cli::passthrough(rest, cli::TEST)? {
            Cli::Run(pytest_args) => test(&root, pytest_args),
            Cli::Help(usage) => help(usage),
        },
        Some("example") => match cli::passthrough(rest, cli::EXAMPLE)? {
            Cli::Run(script_args) => example(&root, script_args),
            Cli::Help(usage) => help(usage),
        },
        Some("bench") => match bench::Options::parse(&rest)? {
            Cli::Run(options) => bench::run(&root, options),
            Cli::Help(usage) => help(usage),
        },
        Some("fuzz") => match fuzz::parse_args(&rest)? {
            Cli::Run((seconds, targets)) => fuzz::run_task(&root, seconds, &targets),
            Cli::Help(usage) => help(usage),
        },
        Some("soak") => match cli::seconds(rest, cli::SOAK, 60)? {
            Cli::Run(seconds) => soak(&root, seconds),
            Cli::Help(usage) => help(usage),
        },
        Some(bench::ECHO_CHILD) => bench::echo_child(),
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

/// `cargo xtask test`: everything CI runs, failing at the first failing phase.
fn test(root: &Path, pytest_args: Vec<String>) -> Result<()> {
    let mut phases = Phases::default();
    phases.run("cargo fmt --check", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run(cargo()
            .args(["fmt", "--all", "--manifest-path"])
            .arg(root.join("fuzz").join("Cargo.toml"))
            .args(["--", "--check"]))
    })?;
    phases.run("cargo clippy", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    let venvs = phases.run("build (maturin, both interpreters)", || python::build(root))?;
    phases.run("mypy --strict, stubtest cpy2py._native", || {
        let package = root.join("cpy2py-python").join("python");
        run(Command::new(&venvs.cpython)
            .args(["-m", "mypy", "--strict", "--cache-dir"])
            .arg(root.join("target").join("mypy"))
            .arg(package.join("cpy2py"))
            .env("MYPYPATH", &package))?;
        // The installed extension against its installed stub.
        run(Command::new(&venvs.cpython)
            .args(["-m", "mypy.stubtest", "cpy2py._native"])
            .current_dir(root.join("target")))
    })?;
    phases.run("cargo test", || {
        run(venvs.test_env(cargo().args(["test", "--workspace"])))
    })?;
    // fuzz/ is a project of its own: its harnesses run over the committed seeds here,
    // each seed with the fate its name says, on any toolchain.
    phases.run("cargo test, fuzz harnesses over the seeds", || {
        let manifest = root.join("fuzz").join("Cargo.toml");
        run(cargo().arg("test").arg("--manifest-path").arg(&manifest))?;
        run(cargo()
            .args(["clippy", "--all-targets", "--manifest-path"])
            .arg(&manifest)
            .args(["--", "-D", "warnings"]))
    })?;
    let suite = root.join("integration-tests").join("python");
    phases.run("pytest, CPython master", || {
        run(venvs.test_env(&mut pytest(&venvs.cpython, &suite, &pytest_args)))
    })?;
    if let Some(pypy) = &venvs.pypy {
        phases.run("pytest, PyPy master", || {
            run(venvs.test_env(&mut pytest(pypy, &suite, &pytest_args)))
        })?;
    }
    phases.summary();
    if venvs.pypy.is_none() {
        python::warn_pypy_skipped();
    }
    Ok(())
}

/// `cargo xtask example`: the newcomer's first run, a CPython master with a PyPy twin.
fn example(root: &Path, args: Vec<String>) -> Result<()> {
    let script = root.join("examples").join("hello_twins.py");
    if !script.is_file() {
        bail!("{} does not exist (yet)", script.display());
    }
    let venvs = python::build(root)?;
    let mut cmd = Command::new(&venvs.cpython);
    cmd.arg(&script).args(args);
    if let Some(pypy) = &venvs.pypy {
        cmd.env("CPY2PY_EXAMPLE_PYPY", pypy);
    }
    run(&mut cmd)
}

/// `cargo xtask soak [--seconds N]`: mixed load on a PyPy and a CPython twin
/// (`integration-tests/python/soak.py`), reported as a table on stdout and in
/// `target/bench/soak.md`. Fails if a call failed, objects stayed exported, or a
/// process's RSS moved by more than 10 % after it settled.
fn soak(root: &Path, seconds: u64) -> Result<()> {
    let seconds = seconds.to_string();
    let venvs = python::build(root)?;
    if venvs.pypy.is_none() {
        bail!("the soak needs PyPy (pypy3) for its PyPy twin");
    }
    let script = root
        .join("integration-tests")
        .join("python")
        .join("soak.py");
    let output = venvs
        .test_env(Command::new(&venvs.cpython).arg(&script).arg(&seconds))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run soak.py")?;
    let report = String::from_utf8_lossy(&output.stdout);
    print!("{report}");
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("soak.md"), report.as_bytes())?;
    if !output.status.success() {
        bail!("the soak failed ({})", output.status);
    }
    Ok(())
}

fn pytest(python: &Path, suite: &Path, extra: &[String]) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest"]).arg(suite).args(extra);
    cmd
}

/// The workspace root: the parent of this crate's directory.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo` as the one that runs us (`$CARGO`), so the toolchain stays the same.
fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Whether we run in CI, where nothing may be skipped for lack of an interpreter.
pub(crate) fn in_ci() -> bool {
    env::var("CI").is_ok_and(|ci| ci == "true")
}

/// Runs a command with inherited stdio, echoing it first; a non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Whether a command succeeds; its output is discarded. For cheap "is it there?" probes.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A command line as a shell would show it, with the environment variables we set.
fn show(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        let value = value?;
        Some(format!(
            "{}={}",
            key.to_string_lossy(),
            value.to_string_lossy()
        ))
    });
    let program = std::iter::once(cmd.get_program().to_string_lossy().into_owned());
    let args = cmd.get_args().map(|arg| arg.to_string_lossy().into_owned());
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cargo xtask TASK --help`.
fn help(usage: &str) -> Result<()> {
    print!("{usage}");
    Ok(())
}

/// Named, timed phases of a long task, with a summary at the end.
#[derive(Default)]
struct Phases {
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn run<T>(&mut self, name: &'static str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        let result = phase();
        let took = start.elapsed();
        match result {
            Ok(value) => {
                eprintln!("<== {name}: ok in {:.1} s", took.as_secs_f64());
                self.done.push((name, took));
                Ok(value)
            }
            Err(error) => {
                self.summary();
                Err(error.context(format!("{name} failed after {:.1} s", took.as_secs_f64())))
            }
        }
    }

    fn summary(&self) {
        if self.done.is_empty() {
            return;
        }
        eprintln!("\nphases passed:");
        for (name, took) in &self.done {
            eprintln!("  {:>7.1} s  {name}", took.as_secs_f64());
        }
    }
}
