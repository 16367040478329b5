//! `cargo xtask bench [--quick] [--only NAME[,NAME...]]`: cpy2py against the physical
//! floor and against its peers, measured in one run.
//!
//! Groups, run in this order after everything is built (so no compiler competes for
//! the CPUs while we measure):
//!
//! - `wire`: `cargo bench -p cpy2py-wire --bench wire`, encode/decode per message kind
//!   and of the bulk payloads;
//! - `floors`: the Rust socketpair ping-pong ([`floor`]) with 1 byte and the bulk
//!   payloads' sizes, and `bench/floor.py`, the Python ping-pong (CPython master ⇄ a
//!   child of each twin interpreter);
//! - `ours`: `bench/ours.py`, cpy2py with a CPython and a PyPy twin;
//! - `peers`: `bench/peers.py`, RPyC, execnet, Pyro5, multiprocessing and cpy2py
//!   0.17.1 from PyPI, installed into venvs under `target/` ([`PEER_VENVS`]).
//!
//! Every script prints its rows as JSON (typed as [`data::Row`]); this module merges
//! them into `target/bench/report.json` ([`data::Report`]) and renders `report.md` (also printed) and `report.svg`
//! from them ([`report`]). Every subprocess runs under a timeout, in a process group
//! of its own that is killed when the timeout expires.

mod data;
mod floor;
mod report;

use std::{
    env, fs,
    io::Read,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Map, Value};

use data::{Report, Row, ScriptOutput};
pub use floor::{ECHO_CHILD, echo_child};

use crate::cli::{self, Cli};
use crate::python;
use lexopt::Arg;

/// The peers' venvs under `target/`: directory, the import that shows it is filled,
/// and the PyPI packages to install if it is not. The original cpy2py imports as
/// `cpy2py` like ours, hence a venv of its own.
const PEER_VENVS: [(&str, &str, &[&str]); 2] = [
    (
        "bench-venv-peers",
        "import rpyc, execnet, Pyro5",
        &["rpyc", "execnet", "Pyro5"],
    ),
    ("bench-venv-cpy2py017", "import cpy2py", &["cpy2py==0.17.1"]),
];

/// The groups `--only` accepts, in the order they run.
const GROUPS: [&str; 4] = ["wire", "floors", "ours", "peers"];
/// The metric names `--only` accepts (rows' `metric` in report.json).
const METRICS: [&str; 18] = [
    "noop",
    "add",
    "method",
    "attribute",
    "ref_attribute",
    "bounce10",
    "bytes_1mib",
    "list_100k",
    "dict_10k",
    "generator_100k",
    "numpy_64mib",
    "numpy_64mib_pickle4",
    "startup",
    "threads",
    "submit_10k",
    "gather_1k",
    "rust_host_noop",
    "ssh_noop",
];
/// The payloads of the bulk metrics as the wire bench names their reply frames.
const WIRE_PAYLOADS: [(&str, &str); 3] = [
    ("bytes_1mib", "encode Reply 1 MiB bytes"),
    ("list_100k", "encode Reply 100k-int list"),
    ("dict_10k", "encode Reply 10k str→float dict"),
];

/// `cargo xtask bench --help`.
const USAGE: &str = "\
usage: cargo xtask bench [--quick] [--only NAME[,NAME...]]

In one run: the floors (socketpair ping-pong in Rust and in Python), cpy2py with a
CPython and a PyPy twin, the peers (multiprocessing, execnet, RPyC, Pyro5, cpy2py
0.17.1 from PyPI) and the wire codec, side by side; report in
target/bench/report.md, raw data in report.json, chart in report.svg.

  --quick       fewer calls per metric (a few minutes in all)
  --only NAMES  groups (wire, floors, ours, peers) or metrics (noop, add, method,
                attribute, bounce10, bytes_1mib, list_100k, dict_10k, startup,
                threads, rust_host_noop, ssh_noop, for ours and peers); ours and
                peers bring
                the floors along
";

/// What to run, from the command line.
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    quick: bool,
    groups: Vec<&'static str>,
    /// Metrics to restrict `ours` and `peers` to; empty for all.
    metrics: Vec<&'static str>,
}

impl Options {
    /// Parses `[--quick] [--only NAME[,NAME...]]` (or `--help`).
    pub(crate) fn parse(args: &[String]) -> Result<Cli<Options>> {
        let mut parser = lexopt::Parser::from_args(args.iter().cloned());
        let mut quick = false;
        let mut lists = Vec::new();
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => return Ok(Cli::Help(USAGE)),
                Arg::Long("quick") => quick = true,
                Arg::Long("only") => lists.push(cli::string(parser.value()?)?),
                other => bail!("{}\n\n{USAGE}", other.unexpected()),
            }
        }
        let names = lists
            .iter()
            .flat_map(|list| list.split(','))
            .filter(|name| !name.is_empty());
        let mut groups = Vec::new();
        let mut metrics = Vec::new();
        for name in names {
            if let Some(group) = GROUPS.iter().find(|group| **group == name) {
                groups.push(*group);
            } else if let Some(metric) = METRICS.iter().find(|metric| **metric == name) {
                metrics.push(*metric);
            } else {
                bail!(
                    "--only {name}: not a group ({}) nor a metric ({})",
                    GROUPS.join(", "),
                    METRICS.join(", ")
                );
            }
        }
        if groups.is_empty() {
            groups = if metrics.is_empty() {
                GROUPS.to_vec()
            } else {
                vec!["ours", "peers"]
            };
        }
        // Every ratio is to a floor measured in the same run.
        if groups.iter().any(|g| *g == "ours" || *g == "peers") && !groups.contains(&"floors") {
            groups.push("floors");
        }
        groups.sort_by_key(|group| GROUPS.iter().position(|g| g == group));
        Ok(Cli::Run(Options {
            quick,
            groups,
            metrics,
        }))
    }

    fn runs(&self, group: &str) -> bool {
        self.groups.contains(&group)
    }

    /// The environment of the Python scripts: counts (unless already set) and the
    /// metric filter.
    fn script_env(&self, cmd: &mut Command) {
        let counts: [(&str, &str, &str); 9] = [
            // (variable, full, quick)
            // Quick keeps a fresh CI machine under 3 minutes, peer venvs and
            // release builds included (189 s with twice these counts).
            ("CPY2PY_BENCH_CALLS", "20000", "1000"),
            ("CPY2PY_BENCH_BULK_CALLS", "200", "10"),
            ("CPY2PY_BENCH_BULK_SECONDS", "5", "0.5"),
            ("CPY2PY_BENCH_STARTUPS", "10", "2"),
            ("CPY2PY_BENCH_THREAD_CALLS", "5000", "500"),
            ("CPY2PY_BENCH_PINNED_BULK", "1", "0"),
            ("CPY2PY_BENCH_METRIC_TIMEOUT", "180", "60"),
            ("CPY2PY_BENCH_PEER_TIMEOUT", "600", "180"),
            ("CPY2PY_BENCH_TIMEOUT", "600", "180"),
        ];
        for (var, full, quick) in counts {
            if env::var_os(var).is_none() {
                cmd.env(var, if self.quick { quick } else { full });
            }
        }
        if !self.metrics.is_empty() {
            cmd.env("CPY2PY_BENCH_ONLY", self.metrics.join(","));
        }
    }

    /// Round trips of the Rust floor: (warm-up, measured) for 1 byte and for bulk.
    fn floor_rounds(&self) -> [(usize, usize); 2] {
        if self.quick {
            [(500, 5_000), (5, 50)]
        } else {
            [(2_000, 20_000), (20, 500)]
        }
    }
}

/// `cargo xtask bench [--quick] [--only NAME[,NAME...]]`.
pub(crate) fn run(root: &Path, options: Options) -> Result<()> {
    let began = Instant::now();
    let out_dir = root.join("target").join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;

    // Build (and install) everything first.
    let venvs = if options.runs("ours") || options.runs("floors") {
        Some(python::build(root)?)
    } else {
        None
    };
    let mut notes = Vec::new();
    if options.runs("peers") {
        for (dir, import, packages) in PEER_VENVS {
            // A venv that cannot be filled is reported by peers.py as that peer's failure.
            if let Err(error) = ensure_peer_venv(&root.join("target").join(dir), import, packages) {
                eprintln!("warning: {dir}: {error:#}");
                notes.push(format!(
                    "Peer venv `target/{dir}` could not be set up: {error:#}."
                ));
            }
        }
    }
    let rust_host = options.metrics.is_empty() || options.metrics.contains(&"rust_host_noop");
    if options.runs("ours") && rust_host {
        build_embed_example(root)?;
    }
    if options.runs("wire") {
        crate::run(cargo(root).args([
            "bench",
            "--no-run",
            "-p",
            "cpy2py-wire",
            "--bench",
            "wire",
        ]))?;
    }

    let mut rows = Vec::new();
    let mut versions = Map::new();
    versions.insert(
        "rustc".to_owned(),
        Value::from(command_line(Command::new("rustc").arg("--version"))),
    );
    versions.insert(
        "kernel".to_owned(),
        Value::from(command_line(Command::new("uname").arg("-sr"))),
    );

    if options.runs("wire") {
        eprintln!("\n==> wire microbenchmarks");
        let path = out_dir.join("wire.json");
        let _ = fs::remove_file(&path);
        let mut cmd = cargo(root);
        cmd.args([
            "bench",
            "-p",
            "cpy2py-wire",
            "--bench",
            "wire",
            "--",
            "--json",
        ])
        .arg(&path);
        if options.quick {
            cmd.arg("--quick");
        }
        match run_captured(&mut cmd, Duration::from_secs(900)) {
            Ok(_) => match read_output(&path) {
                Ok(wire) => rows.extend(wire.rows),
                Err(error) => {
                    rows.push(error_row("wire", "cpy2py-wire", "", &format!("{error:#}")))
                }
            },
            Err(error) => rows.push(error_row("wire", "cpy2py-wire", "", &format!("{error:#}"))),
        }
    }

    if options.runs("floors") {
        eprintln!("\n==> floors");
        rows.extend(rust_floors(&options, &rows));
        if let Some(venvs) = &venvs {
            let mut cmd = Command::new(&venvs.cpython);
            cmd.arg(root.join("bench").join("floor.py"))
                .arg(format!("CPython={}", venvs.cpython.display()));
            if let Some(pypy) = &venvs.pypy {
                cmd.arg(format!("PyPy={}", pypy.display()));
            }
            options.script_env(&mut cmd);
            rows.extend(script_rows(
                &mut cmd,
                "floor",
                "Python socketpair",
                &mut versions,
            ));
        }
    }

    if options.runs("ours") {
        eprintln!("\n==> cpy2py");
        if let Some(venvs) = &venvs {
            let mut cmd = Command::new(&venvs.cpython);
            cmd.arg(root.join("bench").join("ours.py"));
            venvs.test_env(&mut cmd);
            options.script_env(&mut cmd);
            rows.extend(script_rows(&mut cmd, "ours", "cpy2py", &mut versions));
        }
    }

    if options.runs("peers") {
        eprintln!("\n==> peers");
        let python = root
            .join("target")
            .join(PEER_VENVS[0].0)
            .join("bin")
            .join("python");
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("bench").join("peers.py"));
        options.script_env(&mut cmd);
        rows.extend(script_rows(&mut cmd, "peer", "peers", &mut versions));
    }

    let seconds = began.elapsed().as_secs_f64();
    let targets = report::targets(&rows);
    let data = Report {
        quick: options.quick,
        groups: options.groups.iter().map(|g| (*g).to_owned()).collect(),
        only_metrics: options.metrics.iter().map(|m| (*m).to_owned()).collect(),
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seconds,
        versions: Some(versions),
        notes,
        rows,
        targets,
    };

    let markdown = report::markdown(&data);
    print!("{markdown}");
    let json = serde_json::to_string_pretty(&data).context("cannot serialize the report")?;
    for (name, text) in [
        ("report.json", json + "\n"),
        ("report.md", markdown),
        ("report.svg", report::svg(&data)),
    ] {
        let path = out_dir.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("written: {}", path.display());
    }
    eprintln!("bench took {seconds:.0} s");
    Ok(())
}

/// `cargo` as the one that runs us, from the workspace root.
fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// Builds the Rust host example whose no-op `bench/ours.py` reports.
fn build_embed_example(root: &Path) -> Result<()> {
    crate::run(cargo(root).args([
        "build",
        "--release",
        "-p",
        "cpy2py-kernel",
        "--example",
        "embed_pypy",
    ]))
}

/// The subject of the Rust floor rows whose sockets have a wide send buffer.
pub const WIDE_FLOOR: &str = "Rust socketpair, 4 MiB SO_SNDBUF";

/// The Rust socketpair floors: 1 byte, and the bulk payloads' sizes (the list's and
/// the dict's as the wire encodes them, if the wire bench ran), each unpinned and
/// pinned to one CPU.
fn rust_floors(options: &Options, rows: &[Row]) -> Vec<Row> {
    let mut sizes = vec![("noop", 1usize)];
    for (metric, wire_name) in WIRE_PAYLOADS {
        let wire_size = rows
            .iter()
            .find(|row| row.metric == wire_name)
            .and_then(|row| row.bytes);
        match (metric, wire_size) {
            (_, Some(bytes)) => sizes.push((metric, bytes as usize)),
            ("bytes_1mib", None) => sizes.push((metric, 1 << 20)),
            _ => {} // unknown without the wire bench
        }
    }
    let [small, bulk] = options.floor_rounds();
    let mut out = Vec::new();
    // Bulk payloads also cross with the send buffer cpy2py's sockets ask for.
    let variants = sizes.into_iter().flat_map(|(payload, size)| {
        let wide = if size > 1 {
            &[false, true][..]
        } else {
            &[false][..]
        };
        wide.iter().map(move |&wide| (payload, size, wide))
    });
    for (payload, size, wide) in variants {
        for pinned in [false, true] {
            let (warmup, rounds) = if size == 1 { small } else { bulk };
            let subject = if wide { WIDE_FLOOR } else { "Rust socketpair" };
            eprintln!(
                "measuring: {subject}, {size} bytes, {}",
                if pinned { "pinned" } else { "unpinned" }
            );
            let mut row = Row {
                group: "floor".into(),
                subject: subject.into(),
                // The far side is Rust, written as no interpreter.
                twin: Some(String::new()),
                pinned: Some(pinned),
                metric: format!("rtt_{size}B"),
                payload: Some(payload.into()),
                payload_bytes: Some(size as u64),
                ..Row::default()
            };
            match floor::ping_pong(pinned, size, wide, warmup, rounds) {
                Ok(samples) => {
                    let stats = Stats::new(samples);
                    row.median_us = Some(stats.median_us());
                    row.p99_us = Some(stats.p99_us());
                    row.samples = Some(stats.len() as u64);
                    if size > 1 {
                        row.mb_s = Some(size as f64 / stats.median_us());
                    }
                }
                Err(error) => row.error = Some(format!("{error:#}")),
            }
            out.push(row);
        }
    }
    out
}

/// Runs a bench script and returns its rows; a script that fails or prints no JSON
/// becomes one error row. Its `versions` are merged into `versions` under `key`.
fn script_rows(
    cmd: &mut Command,
    group: &str,
    key: &str,
    versions: &mut Map<String, Value>,
) -> Vec<Row> {
    let script = cmd
        .get_args()
        .next()
        .map(|arg| arg.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The scripts bound their own children; this is the backstop.
    let output = match run_captured(cmd, Duration::from_secs(3600)) {
        Ok(output) => output,
        Err(error) => return vec![error_row(group, &script, "", &format!("{error:#}"))],
    };
    let parsed = output
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .context("no JSON line in its output")
        .and_then(|line| {
            serde_json::from_str::<ScriptOutput>(line).context("its JSON line is not rows")
        });
    match parsed {
        Ok(output) => {
            if let Some(found) = output.versions {
                versions.insert(key.to_owned(), found);
            }
            output.rows
        }
        Err(error) => vec![error_row(group, &script, "", &format!("{error:#}"))],
    }
}

/// The row that stands for a whole run of `subject` that failed.
fn error_row(group: &str, subject: &str, metric: &str, error: &str) -> Row {
    Row {
        group: group.into(),
        subject: subject.into(),
        metric: metric.into(),
        error: Some(error.into()),
        ..Row::default()
    }
}

/// The rows (and versions) a bench wrote to the file `path`.
fn read_output(path: &Path) -> Result<ScriptOutput> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not rows as JSON", path.display()))
}

/// The first line of a command's output, or why there is none.
fn command_line(cmd: &mut Command) -> String {
    match run_captured(cmd, Duration::from_secs(30)) {
        Ok(out) => out.lines().next().unwrap_or("").trim().to_owned(),
        Err(error) => format!("unknown ({error:#})"),
    }
}

/// Runs `cmd` in a process group of its own with stdout captured and stderr shown,
/// killing the whole group if it runs longer than `timeout`. A non-zero exit is an
/// error. Returns stdout.
fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut stdout = child.stdout.take().context("stdout was piped")?;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: kill(2) with a negative pid signals the process group we created
            // for the child (process_group(0) made its pid the group id); no memory is
            // passed.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            bail!(
                "{shown} timed out after {} s and was killed",
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let text = reader.join().unwrap_or_default();
    ensure!(status.success(), "{shown} failed ({status})");
    Ok(text)
}

/// Creates the venv `dir` from `python3` unless it exists, and pip-installs `packages`
/// into it unless `import` already succeeds there.
fn ensure_peer_venv(dir: &Path, import: &str, packages: &[&str]) -> Result<()> {
    let python = dir.join("bin").join("python");
    let minutes = Duration::from_secs(600);
    if !python.is_file() {
        eprintln!("creating {}", dir.display());
        run_captured(
            Command::new("python3").arg("-m").arg("venv").arg(dir),
            minutes,
        )?;
    }
    // A missing package is expected on a fresh machine: no traceback for it.
    let probe = format!("try:\n    {import}\nexcept ImportError:\n    raise SystemExit(1)");
    if run_captured(Command::new(&python).args(["-c", &probe]), minutes).is_err() {
        eprintln!("installing {} into {}", packages.join(" "), dir.display());
        run_captured(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(packages),
            minutes,
        )?;
    }
    Ok(())
}

/// Order statistics of measured round trips.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    /// Sorts the samples; there must be at least one.
    fn new(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Stats { sorted: samples }
    }

    fn len(&self) -> usize {
        self.sorted.len()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        let index = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted[index].as_secs_f64() * 1e6
    }

    fn median_us(&self) -> f64 {
        self.quantile_us(0.5)
    }

    fn p99_us(&self) -> f64 {
        self.quantile_us(0.99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_one_to_hundred() {
        let samples = (1..=100).rev().map(Duration::from_micros).collect();
        let stats = Stats::new(samples);
        assert_eq!(stats.median_us().round(), 51.0); // index 49.5 rounds to 50
        assert_eq!(stats.p99_us().round(), 99.0);
        assert_eq!(stats.len(), 100);
    }

    fn parse(args: &[&str]) -> Result<Options> {
        match Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())? {
            Cli::Run(options) => Ok(options),
            Cli::Help(_) => anyhow::bail!("help"),
        }
    }

    #[test]
    fn only_selects_groups_and_metrics() {
        let all = parse(&[]).unwrap();
        assert_eq!(all.groups, GROUPS.to_vec());
        assert!(!all.quick && all.metrics.is_empty());

        let wire = parse(&["--only", "wire", "--quick"]).unwrap();
        assert_eq!(wire.groups, vec!["wire"]);
        assert!(wire.quick);

        // Ratios need the floors of the same run.
        let ours = parse(&["--only", "ours"]).unwrap();
        assert_eq!(ours.groups, vec!["floors", "ours"]);

        let metric = parse(&["--only", "noop,startup"]).unwrap();
        assert_eq!(metric.groups, vec!["floors", "ours", "peers"]);
        assert_eq!(metric.metrics, vec!["noop", "startup"]);

        assert!(parse(&["--only", "nonsense"]).is_err());
        assert!(parse(&["--only"]).is_err());
        assert!(parse(&["--fast"]).is_err());
        assert_eq!(parse(&["--only=wire"]).unwrap().groups, vec!["wire"]);
        assert!(matches!(
            Options::parse(&["--help".to_owned()]).unwrap(),
            Cli::Help(USAGE)
        ));
    }
}
