//! The one argument parser of every task (lexopt), and each task's `--help`.

use anyhow::{Result, anyhow, bail};
use lexopt::{Arg, Parser, ValueExt};
use std::ffi::OsString;

/// What a task's command line asked for.
#[derive(Debug, PartialEq)]
pub(crate) enum Cli<T> {
    /// Run the task with these options.
    Run(T),
    /// Print this usage text and stop.
    Help(&'static str),
}

/// `cargo xtask build`.
pub(crate) const BUILD: &str = "\
usage: cargo xtask build

Builds the cpy2py extension for CPython (and PyPy, if found) and installs it into
target/venv-cpython (target/venv-pypy).
";

/// `cargo xtask test`.
pub(crate) const TEST: &str = "\
usage: cargo xtask test [-- PYTEST_ARGS...]

cargo fmt --check, clippy, the build, mypy --strict on the Python package and
stubtest of cpy2py._native, cargo test, then pytest with a CPython master and with
a PyPy master. Arguments after `--` go to both pytest runs (e.g. `-- -k
compat -x`).
";

/// `cargo xtask example`.
pub(crate) const EXAMPLE: &str = "\
usage: cargo xtask example [-- ARGS...]

Builds, then runs examples/hello_twins.py with a CPython master and a PyPy twin;
arguments after `--` go to the script.
";

/// `cargo xtask soak`.
pub(crate) const SOAK: &str = "\
usage: cargo xtask soak [--seconds N]

Mixed load (calls, objects, callbacks, threads) on a PyPy and a CPython twin for N
seconds (default 60): calls/s, RSS series, live exported objects; the report also
goes to target/bench/soak.md. Fails if a call fails, objects stay exported, or a
process's RSS moves by more than 10 % after 60 s (or a third of the run).
";

/// Parses a task that takes only `--help` and, after `--`, arguments passed on.
pub(crate) fn passthrough(args: Vec<String>, usage: &'static str) -> Result<Cli<Vec<String>>> {
    let mut parser = Parser::from_args(args);
    let mut rest = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Cli::Help(usage)),
            Arg::Value(value) => rest.push(string(value)?),
            other => bail!("{}\n\n{usage}", other.unexpected()),
        }
    }
    Ok(Cli::Run(rest))
}

/// Parses a task that takes nothing but `--help`.
pub(crate) fn nothing(args: Vec<String>, usage: &'static str) -> Result<Cli<()>> {
    match passthrough(args, usage)? {
        Cli::Help(usage) => Ok(Cli::Help(usage)),
        Cli::Run(rest) if rest.is_empty() => Ok(Cli::Run(())),
        Cli::Run(rest) => bail!("unexpected arguments {rest:?}\n\n{usage}"),
    }
}

/// Parses `[--seconds N]` (N a positive number of seconds, default `default`).
pub(crate) fn seconds(args: Vec<String>, usage: &'static str, default: u64) -> Result<Cli<u64>> {
    let mut parser = Parser::from_args(args);
    let mut seconds = default;
    while let Some(arg) = parser.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Cli::Help(usage)),
            Arg::Long("seconds") => seconds = positive(&mut parser, "--seconds")?,
            other => bail!("{}\n\n{usage}", other.unexpected()),
        }
    }
    Ok(Cli::Run(seconds))
}

/// The value of an option that must be a whole number of at least 1.
pub(crate) fn positive(parser: &mut Parser, option: &str) -> Result<u64> {
    let value: u64 = parser
        .value()?
        .parse()
        .map_err(|e| anyhow!("{option}: {e}"))?;
    if value == 0 {
        bail!("{option} must be at least 1");
    }
    Ok(value)
}

/// An argument as UTF-8.
pub(crate) fn string(value: OsString) -> Result<String> {
    Ok(value.string()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn every_task_answers_help() {
        assert_eq!(nothing(args(&["--help"]), BUILD).unwrap(), Cli::Help(BUILD));
        assert_eq!(passthrough(args(&["-h"]), TEST).unwrap(), Cli::Help(TEST));
        assert_eq!(
            seconds(args(&["--help"]), SOAK, 60).unwrap(),
            Cli::Help(SOAK)
        );
    }

    #[test]
    fn arguments_after_a_double_dash_are_passed_on_and_options_before_it_are_not() {
        assert_eq!(
            passthrough(args(&["--", "-k", "compat", "-x"]), TEST).unwrap(),
            Cli::Run(args(&["-k", "compat", "-x"]))
        );
        let error = passthrough(args(&["-k", "compat"]), TEST).unwrap_err();
        assert!(error.to_string().contains("-k"), "{error}");
        assert!(nothing(args(&["extra"]), BUILD).is_err());
    }

    #[test]
    fn seconds_are_whole_and_positive() {
        assert_eq!(seconds(args(&[]), SOAK, 60).unwrap(), Cli::Run(60));
        assert_eq!(
            seconds(args(&["--seconds", "5"]), SOAK, 60).unwrap(),
            Cli::Run(5)
        );
        assert_eq!(
            seconds(args(&["--seconds=7"]), SOAK, 60).unwrap(),
            Cli::Run(7)
        );
        for bad in [
            &["--seconds", "0"][..],
            &["--seconds", "x"],
            &["--seconds"],
            &["--minutes", "1"],
        ] {
            assert!(seconds(args(bad), SOAK, 60).is_err(), "{bad:?}");
        }
    }
}
