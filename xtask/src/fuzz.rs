//! `cargo xtask fuzz`: coverage-guided fuzzing with cargo fuzz (libFuzzer).
//!
//! The targets live in `fuzz/`, a cargo project of its own (not a member of the
//! workspace: it is built with sanitizer and coverage flags that need a nightly
//! compiler). This task installs `cargo-fuzz` if it is missing, picks a compiler (the
//! `nightly` rustup toolchain if there is one, else the current one with
//! `RUSTC_BOOTSTRAP=1`), builds every target once with AddressSanitizer and debug
//! assertions, runs each for the given time, and reports executions and coverage per
//! target. A crash (panic, sanitizer report, deadline missed, hang) fails the task;
//! its input is kept in `target/fuzz/artifacts/<target>/`.
//!
//! libFuzzer starts from the committed seeds (`fuzz/corpus/<target>/`, read only) and
//! from what earlier runs on this machine found (`target/fuzz/corpus/<target>/`, where
//! new inputs go). Its full output is in `target/fuzz/logs/<target>.log`; only the
//! interesting lines are echoed.

use std::{
    collections::BTreeSet,
    env,
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::cli::{self, Cli};
use crate::{Phases, cargo, run, succeeds};
use lexopt::Arg;

/// The targets, in the order they run.
const TARGETS: [&str; 4] = ["wire_decode", "wire_stream", "kernel_peer", "kernel_shell"];

/// The target whose one kernel (and its threads) serves every input: what they
/// hold at exit is not a leak of one input.
const LONG_LIVED: &str = "kernel_shell";

/// The committed seeds a target starts from: `kernel_shell` plays `kernel_peer`'s
/// inputs (a twin's stream) against a real kernel.
fn seeds_of(target: &str) -> &str {
    if target == LONG_LIVED {
        "kernel_peer"
    } else {
        target
    }
}

/// The cargo-fuzz installed when there is none.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// The harness's notes on stderr (`cpy2py_fuzz::kernel::NOTE`).
const NOTE: &str = "cpy2py-fuzz note:";

/// How `cargo fuzz` is run.
enum Toolchain {
    /// `rustup run nightly cargo fuzz ...`.
    Nightly(String),
    /// `$CARGO fuzz ...` with `RUSTC_BOOTSTRAP=1`, so that a stable compiler accepts
    /// the `-Z` flags cargo fuzz passes.
    Bootstrapped(String),
}

impl Toolchain {
    /// The nightly toolchain if rustup has one (unless `CPY2PY_FUZZ_TOOLCHAIN=stable`),
    /// else the current compiler, bootstrapped.
    fn pick() -> Result<Toolchain> {
        let forced_stable = env::var("CPY2PY_FUZZ_TOOLCHAIN").is_ok_and(|t| t == "stable");
        if !forced_stable {
            if let Some(version) =
                output(Command::new("rustup").args(["run", "nightly", "rustc", "-V"]))
            {
                return Ok(Toolchain::Nightly(version));
            }
        }
        let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let version = output(Command::new(rustc).arg("-V"))
            .context("no rustc found to build the fuzz targets with")?;
        Ok(Toolchain::Bootstrapped(version))
    }

    fn describe(&self) -> String {
        match self {
            Toolchain::Nightly(version) => format!("the nightly toolchain ({version})"),
            Toolchain::Bootstrapped(version) => format!(
                "{version} with RUSTC_BOOTSTRAP=1 (not the nightly toolchain: none found, \
                 or CPY2PY_FUZZ_TOOLCHAIN=stable)"
            ),
        }
    }

    /// `cargo` of this toolchain.
    fn cargo(&self) -> Command {
        match self {
            Toolchain::Nightly(_) => {
                let mut cmd = Command::new("rustup");
                cmd.args(["run", "nightly", "cargo"]);
                cmd
            }
            Toolchain::Bootstrapped(_) => {
                let mut cmd = cargo();
                cmd.env("RUSTC_BOOTSTRAP", "1");
                cmd
            }
        }
    }

    /// `rustc -vV`'s host triple, where cargo fuzz puts the binaries.
    fn host(&self) -> Result<String> {
        let mut cmd = match self {
            Toolchain::Nightly(_) => {
                let mut cmd = Command::new("rustup");
                cmd.args(["run", "nightly", "rustc"]);
                cmd
            }
            Toolchain::Bootstrapped(_) => {
                Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            }
        };
        let info = output(cmd.arg("-vV")).context("`rustc -vV` failed")?;
        info.lines()
            .find_map(|line| line.strip_prefix("host: "))
            .map(str::to_owned)
            .context("`rustc -vV` names no host")
    }
}

/// What one target's run gave.
struct Report {
    target: &'static str,
    seconds: f64,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    corpus: Option<u64>,
    /// Inputs that crashed it (new files in its artifact directory).
    crashes: Vec<PathBuf>,
    /// Why it failed, if it did.
    failure: Option<String>,
    notes: BTreeSet<String>,
}

/// `cargo xtask fuzz [--seconds N] [TARGET...]`.
pub(crate) fn run_task(root: &Path, seconds: u64, targets: &[String]) -> Result<()> {
    let start = Instant::now();
    let mut phases = Phases::default();
    let toolchain = phases.run("cargo-fuzz and a compiler", || {
        ensure_cargo_fuzz()?;
        let toolchain = Toolchain::pick()?;
        eprintln!("fuzzing with {}", toolchain.describe());
        Ok(toolchain)
    })?;
    let target_dir = root.join("target").join("fuzz");
    phases.run("build the fuzz targets (ASan, debug assertions)", || {
        let mut cmd = toolchain.cargo();
        cmd.args(["fuzz", "build", "--fuzz-dir", "fuzz", "--debug-assertions"])
            .arg("--target-dir")
            .arg(&target_dir);
        run(&mut cmd)
    })?;
    let bin_dir = target_dir.join(toolchain.host()?).join("release");

    let mut reports = Vec::new();
    for target in TARGETS {
        if !targets.iter().any(|t| t == target) {
            continue;
        }
        eprintln!("\n==> fuzz {target} for {seconds} s");
        let report = fuzz_one(root, &bin_dir, target, seconds)?;
        let result = if report.failure.is_some() {
            "CRASH"
        } else {
            "ok"
        };
        eprintln!("<== fuzz {target}: {result} after {:.1} s", report.seconds);
        reports.push(report);
    }
    phases.summary();
    print_reports(&reports, &bin_dir);
    eprintln!(
        "\ncargo xtask fuzz took {:.0} s in all, with {}",
        start.elapsed().as_secs_f64(),
        toolchain.describe()
    );
    let failed: Vec<&Report> = reports.iter().filter(|r| r.failure.is_some()).collect();
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|r| r.target).collect();
        bail!("fuzzing found a crash in {}", names.join(", "));
    }
    Ok(())
}

/// `cargo xtask fuzz --help`.
const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [TARGET...]

libFuzzer (cargo fuzz) on each TARGET (default: all of wire_decode, wire_stream,
kernel_peer, kernel_shell) for N seconds each (default 60), starting from the committed seeds in
fuzz/corpus and what earlier runs here found; fails on any crash.
";

/// `[--seconds N] [TARGET...]`.
pub(crate) fn parse_args(args: &[String]) -> Result<Cli<(u64, Vec<String>)>> {
    let mut parser = lexopt::Parser::from_args(args.iter().cloned());
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Cli::Help(USAGE)),
            Arg::Long("seconds") => seconds = cli::positive(&mut parser, "--seconds")?,
            Arg::Value(value) => {
                let target = cli::string(value)?;
                if !TARGETS.contains(&target.as_str()) {
                    bail!(
                        "`cargo xtask fuzz`: no target `{target}`; targets: {}",
                        TARGETS.join(", ")
                    );
                }
                targets.push(target);
            }
            other => bail!("{}\n\n{USAGE}", other.unexpected()),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(Cli::Run((seconds, targets)))
}

/// Installs cargo-fuzz unless `cargo fuzz` already works.
fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(version) = output(cargo().args(["fuzz", "--version"])) {
        eprintln!("found {version}");
        return Ok(());
    }
    eprintln!("cargo-fuzz is not installed: installing {CARGO_FUZZ_VERSION} from crates.io");
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    if !succeeds(cargo().args(["fuzz", "--version"])) {
        bail!("cargo-fuzz was installed but `cargo fuzz` does not run: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// Runs one target for `seconds`, echoing libFuzzer's interesting lines.
fn fuzz_one(root: &Path, bin_dir: &Path, target: &'static str, seconds: u64) -> Result<Report> {
    let fuzz_dir = root.join("target").join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = root.join("fuzz").join("corpus").join(seeds_of(target));
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let before = list(&artifacts)?;
    let log_path = logs.join(format!("{target}.log"));
    let mut log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;

    let mut cmd = Command::new(bin_dir.join(target));
    cmd.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // Far above any harness deadline: a hang, not a slow input.
        .arg("-timeout=60")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if target == LONG_LIVED {
        cmd.arg("-detect_leaks=0")
            .env("ASAN_OPTIONS", "detect_leaks=0");
    }
    eprintln!(
        "$ {} {}  (seeds: {} files; found earlier: {} files; full log: {})",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        count_files(&seeds),
        count_files(&corpus),
        log_path.display()
    );

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin_dir.join(target).display()))?;
    let mut report = Report {
        target,
        seconds: 0.0,
        executions: None,
        exec_per_sec: None,
        cov: None,
        ft: None,
        corpus: None,
        crashes: Vec::new(),
        failure: None,
        notes: BTreeSet::new(),
    };
    let stderr = child.stderr.take().context("libFuzzer's stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        let _ = writeln!(log, "{line}");
        parse_line(&line, &mut report);
        if interesting(&line) {
            eprintln!("{line}");
        }
    }
    let status = child.wait().context("waiting for libFuzzer")?;
    report.seconds = start.elapsed().as_secs_f64();
    report.crashes = list(&artifacts)?.difference(&before).cloned().collect();
    if !status.success() || !report.crashes.is_empty() {
        report.failure = Some(format!("libFuzzer exited with {status}"));
    }
    Ok(report)
}

/// Takes libFuzzer's figures from a line of its output.
fn parse_line(line: &str, report: &mut Report) {
    // `#12345  NEW    cov: 1234 ft: 5678 corp: 90/12Kb ...`: the last one wins.
    if let Some(rest) = line.strip_prefix('#') {
        let mut words = rest.split_whitespace();
        let runs = words.next().and_then(|n| n.parse().ok());
        let figure = |name: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .iter()
                .position(|w| *w == name)
                .and_then(|i| words.get(i + 1))
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse().ok())
        };
        if let (Some(runs), Some(cov)) = (runs, figure("cov:")) {
            report.executions = Some(runs);
            report.cov = Some(cov);
            report.ft = figure("ft:");
            report.corpus = figure("corp:");
        }
    } else if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
        report.executions = value.trim().parse().ok().or(report.executions);
    } else if let Some(value) = line.strip_prefix("stat::average_exec_per_sec:") {
        report.exec_per_sec = value.trim().parse().ok();
    } else if let Some(note) = line.strip_prefix(NOTE) {
        report.notes.insert(note.trim().to_owned());
    }
}

/// Whether a line of libFuzzer's output is worth showing live: not the stream of new
/// corpus entries, new functions and dictionary entries.
fn interesting(line: &str) -> bool {
    let noise = line.starts_with('#')
        && matches!(line.split_whitespace().nth(1), Some("NEW" | "REDUCE"))
        || line.starts_with("\tNEW_FUNC")
        || line.starts_with('"')
        || line.starts_with("###### ");
    !noise
}

fn print_reports(reports: &[Report], bin_dir: &Path) {
    let figure = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    eprintln!("\n| target | seconds | executions | exec/s | cov | ft | corpus | result |");
    eprintln!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in reports {
        let result = match &r.failure {
            None => "ok".to_owned(),
            Some(_) if r.crashes.is_empty() => "FAILED (no input saved)".to_owned(),
            Some(_) => format!("CRASH ({} input(s))", r.crashes.len()),
        };
        eprintln!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {result} |",
            r.target,
            r.seconds,
            figure(r.executions),
            figure(r.exec_per_sec),
            figure(r.cov),
            figure(r.ft),
            figure(r.corpus),
        );
    }
    for r in reports {
        for note in &r.notes {
            eprintln!("{}: note: {note}", r.target);
        }
    }
    for r in reports.iter().filter(|r| r.failure.is_some()) {
        eprintln!(
            "\n{} FAILED: {}",
            r.target,
            r.failure.as_deref().unwrap_or_default()
        );
        for crash in &r.crashes {
            let env = if r.target == LONG_LIVED {
                "ASAN_OPTIONS=detect_leaks=0 "
            } else {
                ""
            };
            eprintln!(
                "  input: {}\n  reproduce: {env}RUST_BACKTRACE=1 {} {}",
                crash.display(),
                bin_dir.join(r.target).display(),
                crash.display()
            );
        }
        if r.target == LONG_LIVED {
            eprintln!(
                "  (one kernel serves every input: a timing-dependent crash may need the input \
                 replayed many times in one process, e.g. `$(yes INPUT | head -500)`)"
            );
        }
        eprintln!("  the output is in target/fuzz/logs/{}.log", r.target);
    }
}

/// Trimmed stdout of a command that succeeded, or `None`.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn list(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    Ok(fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .collect())
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[cfg(test)]
mod tests {
    use super::{Report, interesting, parse_line};
    use std::collections::BTreeSet;

    #[test]
    fn libfuzzer_figures_are_read() {
        let mut report = Report {
            target: "t",
            seconds: 0.0,
            executions: None,
            exec_per_sec: None,
            cov: None,
            ft: None,
            corpus: None,
            crashes: Vec::new(),
            failure: None,
            notes: BTreeSet::new(),
        };
        for line in [
            "#27\tINITED cov: 1975 ft: 4470 corp: 26/3230b exec/s: 0 rss: 51Mb",
            "#125130\tDONE   cov: 3666 ft: 11427 corp: 1323/351Kb lim: 590 exec/s: 2051 rss: 468Mb",
            "Done 125130 runs in 61 second(s)",
            "stat::number_of_executed_units: 125131",
            "stat::average_exec_per_sec:     2051",
            "cpy2py-fuzz note: the other twin ended",
        ] {
            parse_line(line, &mut report);
        }
        assert_eq!(report.executions, Some(125131));
        assert_eq!(report.exec_per_sec, Some(2051));
        assert_eq!(
            (report.cov, report.ft, report.corpus),
            (Some(3666), Some(11427), Some(1323))
        );
        assert!(report.notes.contains("the other twin ended"));
        assert!(!interesting(
            "#610\tNEW    cov: 2957 ft: 7128 corp: 142/24Kb"
        ));
        assert!(interesting(
            "#8192\tpulse  cov: 3341 ft: 9445 corp: 585/154Kb"
        ));
        assert!(interesting("==1== ERROR: libFuzzer: deadly signal"));
    }
}
