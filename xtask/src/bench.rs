//! `cargo xtask bench`: the performance floor, and where cpy2py sits against it.
//!
//! The unit is the round trip of a no-op call from the master to a twin. Its floor is a
//! raw 1-byte ping-pong over a Unix socketpair between two processes, measured here
//! twice: with the scheduler free to put the processes on different CPUs (each round
//! trip then pays cross-CPU wake-ups) and with both pinned to one CPU. The echo process
//! is this very binary, re-run with the hidden task [`ECHO_CHILD`]; it inherits its end
//! of the socketpair and finds the descriptor's number in [`FD_VAR`].
//!
//! If `integration-tests/python/bench_noop.py` exists, the extension is built first and
//! the script is run with the CPython virtualenv's python, so the cpy2py figures land in
//! the same report, measured in the same run. Then `bench/peers.py` measures the peers
//! (RPyC, execnet, Pyro5, multiprocessing, the original cpy2py 0.17.1) in the same run:
//! their venvs under `target/` are created and filled from PyPI first, if need be (see
//! [`PEER_VENVS`]). The report is printed and written to `target/bench/report.md`.

use std::{
    env,
    fmt::Write as _,
    fs,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, RawFd},
        unix::net::UnixStream,
    },
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::python;

/// The hidden task that runs the echo side of the ping-pong.
pub const ECHO_CHILD: &str = "__bench-echo";
/// The environment variable carrying the echo child's socket descriptor.
const FD_VAR: &str = "CPY2PY_BENCH_ECHO_FD";
/// Round trips before measuring: page faults, lazy binding, CPU frequency.
const WARMUP: usize = 2_000;
/// Measured round trips.
const ROUND_TRIPS: usize = 20_000;

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

/// `cargo xtask bench`.
pub fn run(root: &Path) -> Result<()> {
    let noop_script = root
        .join("integration-tests")
        .join("python")
        .join("bench_noop.py");
    // Build before measuring anything, so that no compiler competes for the CPUs.
    let venvs = if noop_script.is_file() {
        Some(python::build(root)?)
    } else {
        None
    };
    let peers_script = root.join("bench").join("peers.py");
    if peers_script.is_file() {
        for (dir, import, packages) in PEER_VENVS {
            // A venv that cannot be filled is reported by peers.py as that peer's failure.
            if let Err(error) = ensure_peer_venv(&root.join("target").join(dir), import, packages) {
                eprintln!("warning: {dir}: {error:#}");
            }
        }
    }
    // The Rust host's figure comes from the embedding example.
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "cpy2py-kernel",
            "--example",
            "embed_pypy",
        ])
        .status()
        .context("cannot build the embed_pypy example")?;
    if !status.success() {
        bail!("building the embed_pypy example failed ({status})");
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = String::new();
    writeln!(report, "# cpy2py benchmarks\n")?;
    writeln!(
        report,
        "{cpus} CPUs available. Round trips of 1-byte messages over a Unix socketpair \
         between two processes; {ROUND_TRIPS} measured after {WARMUP} warm-up.\n"
    )?;
    writeln!(report, "| floor | median (µs) | p99 (µs) |")?;
    writeln!(report, "| --- | ---: | ---: |")?;
    for (what, pinned) in [
        ("socketpair ping-pong, processes on any CPU", false),
        ("socketpair ping-pong, both pinned to one CPU", true),
    ] {
        eprintln!("measuring: {what}");
        let stats = Stats::new(ping_pong(pinned)?);
        writeln!(
            report,
            "| {what} | {:.1} | {:.1} |",
            stats.median_us(),
            stats.p99_us()
        )?;
    }

    writeln!(
        report,
        "\n## No-op cpy2py call (`integration-tests/python/bench_noop.py`)\n"
    )?;
    match &venvs {
        Some(venvs) => {
            eprintln!("running {}", noop_script.display());
            let output = venvs
                .test_env(Command::new(&venvs.cpython).arg(&noop_script))
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .context("cannot run bench_noop.py")?;
            if !output.status.success() {
                bail!("bench_noop.py failed ({})", output.status);
            }
            report.push_str(&String::from_utf8_lossy(&output.stdout));
        }
        None => writeln!(report, "Not measured: the script does not exist yet.")?,
    }

    if peers_script.is_file() {
        writeln!(report, "\n## Peers (`bench/peers.py`)\n")?;
        eprintln!("running {}", peers_script.display());
        let python = root
            .join("target")
            .join(PEER_VENVS[0].0)
            .join("bin")
            .join("python");
        let output = Command::new(&python)
            .arg(&peers_script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run bench/peers.py with {}", python.display()))?;
        report.push_str(&String::from_utf8_lossy(&output.stdout));
        if !output.status.success() {
            writeln!(report, "\nbench/peers.py failed ({})", output.status)?;
        }
    }

    print!("{report}");
    let dir = root.join("target").join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("report.md");
    fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

/// Creates the venv `dir` from `python3` unless it exists, and pip-installs `packages`
/// into it unless `import` already succeeds there.
fn ensure_peer_venv(dir: &Path, import: &str, packages: &[&str]) -> Result<()> {
    let python = dir.join("bin").join("python");
    let ok = |cmd: &mut Command| cmd.status().is_ok_and(|status| status.success());
    if !python.is_file() {
        eprintln!("creating {}", dir.display());
        ensure!(
            ok(Command::new("python3").arg("-m").arg("venv").arg(dir)),
            "python3 -m venv {} failed",
            dir.display()
        );
    }
    if !ok(Command::new(&python)
        .args(["-c", import])
        .stderr(Stdio::null()))
    {
        eprintln!("installing {} into {}", packages.join(" "), dir.display());
        ensure!(
            ok(Command::new(&python)
                .args(["-m", "pip", "install", "--quiet"])
                .args(packages)),
            "pip install {} failed",
            packages.join(" ")
        );
    }
    Ok(())
}

/// Runs the ping-pong against a fresh echo child and returns the measured round trips.
fn ping_pong(pinned: bool) -> Result<Vec<Duration>> {
    // Affinity is inherited by the child, and restored for us when the guard drops.
    let _pin = if pinned {
        Some(Pin::to_one_cpu()?)
    } else {
        None
    };

    let (mut ours, theirs) = UnixStream::pair().context("socketpair")?;
    set_inheritable(&theirs)?;
    let mut child = Command::new(env::current_exe().context("cannot find our own binary")?)
        .arg(ECHO_CHILD)
        .env(FD_VAR, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start the echo child")?;
    // Only the child may hold its end: if it dies, our reads must see end-of-file.
    drop(theirs);

    let mut byte = [0u8; 1];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for round in 0..WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        ours.write_all(&byte).context("ping")?;
        ours.read_exact(&mut byte).context("pong")?;
        if round >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    drop(ours); // end-of-file tells the child to exit
    let status = child.wait().context("waiting for the echo child")?;
    ensure!(status.success(), "the echo child failed ({status})");
    Ok(samples)
}

/// The hidden task [`ECHO_CHILD`]: echo every byte on the inherited socket until
/// end-of-file.
pub fn echo_child() -> Result<()> {
    let fd: RawFd = env::var(FD_VAR)
        .with_context(|| format!("{FD_VAR} is not set; this task is run by `cargo xtask bench`"))?
        .parse()
        .with_context(|| format!("{FD_VAR} is not a file descriptor number"))?;
    // SAFETY: F_GETFD only reads the descriptor flags; it fails on a closed descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    ensure!(flags >= 0, "{FD_VAR}={fd} is not an open descriptor");
    // SAFETY: the descriptor is open (checked above), is the socket our parent made
    // inheritable for us, and nothing else in this process knows it: the stream
    // becomes its only owner.
    let mut stream = unsafe { UnixStream::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => stream.write_all(&byte)?,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// Clears `FD_CLOEXEC`, so that the descriptor survives into a spawned child.
fn set_inheritable(socket: &UnixStream) -> Result<()> {
    let fd = socket.as_raw_fd();
    // SAFETY: F_GETFD/F_SETFD on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error()).context("fcntl(FD_CLOEXEC)");
    }
    Ok(())
}

/// Pins the calling thread to the first CPU it may run on, until dropped.
struct Pin {
    saved: libc::cpu_set_t,
}

impl Pin {
    fn to_one_cpu() -> Result<Pin> {
        let size = size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; `saved` is a live cpu_set_t of `size` bytes.
        if unsafe { libc::sched_getaffinity(0, size, &mut saved) } != 0 {
            return Err(io::Error::last_os_error()).context("sched_getaffinity");
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: CPU_ISSET only reads bit `cpu` (< CPU_SETSIZE) of a valid set.
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &saved) })
            .context("this thread may run on no CPU at all")?;
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET only writes bit `cpu` (< CPU_SETSIZE) of a valid set.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: pid 0 is the calling thread; `one` is a live cpu_set_t of `size` bytes.
        if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
            return Err(io::Error::last_os_error()).context("sched_setaffinity");
        }
        Ok(Pin { saved })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        // SAFETY: pid 0 is the calling thread; `saved` is the set it had before.
        // Failing to widen the affinity again only makes later measurements pinned.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.saved) };
    }
}

/// Order statistics of measured round trips.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Stats { sorted: samples }
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
    }
}
