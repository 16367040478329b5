//! The Python side of the build: interpreters, virtualenvs under `target/`, and the
//! `cpy2py._native` extension built by maturin once per interpreter flavour.
//!
//! Each flavour has its own virtualenv (`target/venv-cpython`, `target/venv-pypy`),
//! wheel directory (`target/wheels/<flavour>`) and cargo target directory
//! (`target/maturin-<flavour>`): PyO3's build configuration depends on the
//! interpreter, so a shared target directory would rebuild everything on every switch.
//! A rebuild with nothing changed costs a cargo freshness check, a re-pack of the wheel
//! and a pip reinstall.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{in_ci, run, succeeds};

/// Test dependencies installed into every virtualenv.
const TEST_DEPS: &[&str] = &["pytest", "pytest-timeout"];
/// The import that proves [`TEST_DEPS`] are installed.
const TEST_DEPS_IMPORT: &str = "import pytest, pytest_timeout";
/// maturin, installed into the CPython virtualenv only; it builds both flavours.
const MATURIN: &str = "maturin>=1.5,<2";
/// mypy (`--strict` and `stubtest` of `cpy2py._native`), CPython virtualenv only.
const MYPY: &str = "mypy>=1.10,<3";
/// numpy, CPython virtualenv only: the tests send arrays to a PyPy interpreter
/// that cannot import numpy (by reference) and between two CPython ones.
const NUMPY: &str = "numpy>=1.24";

/// A kind of Python interpreter we build for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavour {
    CPython,
    PyPy,
}

impl Flavour {
    /// The short name used in directory names under `target/`.
    fn name(self) -> &'static str {
        match self {
            Flavour::CPython => "cpython",
            Flavour::PyPy => "pypy",
        }
    }

    /// The system interpreter a virtualenv of this flavour is created from.
    fn base_interpreter(self) -> &'static str {
        match self {
            Flavour::CPython => "python3",
            Flavour::PyPy => "pypy3",
        }
    }

    fn venv_dir(self, root: &Path) -> PathBuf {
        root.join("target").join(format!("venv-{}", self.name()))
    }
}

/// The virtualenv interpreters that have cpy2py installed.
pub struct Venvs {
    /// `target/venv-cpython/bin/python`, absolute.
    pub cpython: PathBuf,
    /// `target/venv-pypy/bin/python`, absolute; `None` if PyPy is not installed.
    pub pypy: Option<PathBuf>,
}

impl Venvs {
    /// Tells the tests which interpreters to spawn twins from: sets
    /// `CPY2PY_TEST_CPYTHON` and (if PyPy was built) `CPY2PY_TEST_PYPY`.
    pub fn test_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("CPY2PY_TEST_CPYTHON", &self.cpython);
        if let Some(pypy) = &self.pypy {
            cmd.env("CPY2PY_TEST_PYPY", pypy);
        }
        cmd
    }
}

/// `cargo xtask build`: a virtualenv per interpreter found, with the test dependencies
/// and a freshly built and installed cpy2py wheel.
pub fn build(root: &Path) -> Result<Venvs> {
    let pypy_found = find_pypy()?;

    let cpython = ensure_venv(root, Flavour::CPython)?;
    let maturin = Flavour::CPython.venv_dir(root).join("bin").join("maturin");
    build_and_install(root, Flavour::CPython, &cpython, &maturin)?;

    let pypy = if pypy_found {
        let pypy = ensure_venv(root, Flavour::PyPy)?;
        build_and_install(root, Flavour::PyPy, &pypy, &maturin)?;
        Some(pypy)
    } else {
        None
    };

    eprintln!("\ncpy2py is built and installed in:");
    eprintln!("  CPython: {}", cpython.display());
    match &pypy {
        Some(pypy) => eprintln!("  PyPy:    {}", pypy.display()),
        None => eprintln!("  PyPy:    (skipped: `pypy3` not found)"),
    }
    Ok(Venvs { cpython, pypy })
}

/// Whether `pypy3` is on `PATH`. Missing is fatal in CI and loud everywhere else.
fn find_pypy() -> Result<bool> {
    if which(Flavour::CPython.base_interpreter()).is_none() {
        bail!("`python3` is not on PATH; cpy2py needs CPython >= 3.9 with venv and pip");
    }
    if which(Flavour::PyPy.base_interpreter()).is_some() {
        return Ok(true);
    }
    if in_ci() {
        bail!(
            "`pypy3` is not on PATH and CI=true: PyPy may not be skipped in CI \
             (Debian: apt-get install pypy3 pypy3-dev pypy3-venv)"
        );
    }
    warn_pypy_skipped();
    Ok(false)
}

/// The warning for a run without PyPy, hard to miss in a long log.
pub fn warn_pypy_skipped() {
    eprintln!(
        "\n\
         ************************************************************************\n\
         WARNING: `pypy3` not found on PATH; everything PyPy is SKIPPED.\n\
         Install it (Debian: apt-get install pypy3 pypy3-dev pypy3-venv) to build\n\
         and test cpy2py with PyPy twins. With CI=true this is an error.\n\
         ************************************************************************\n"
    );
}

/// Creates the flavour's virtualenv if it is missing or broken, and installs the test
/// dependencies (and, for CPython, maturin) unless they are already there. Returns the
/// virtualenv's absolute `bin/python`.
fn ensure_venv(root: &Path, flavour: Flavour) -> Result<PathBuf> {
    let dir = flavour.venv_dir(root);
    let python = dir.join("bin").join("python");

    if !succeeds(Command::new(&python).args(["-c", ""])) {
        if dir.exists() {
            eprintln!("{} is broken; recreating it", dir.display());
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        run(Command::new(flavour.base_interpreter())
            .args(["-m", "venv"])
            .arg(&dir))?;
    }

    let maturin = dir.join("bin").join("maturin");
    let installed = succeeds(Command::new(&python).args(["-c", TEST_DEPS_IMPORT]))
        && (flavour != Flavour::CPython
            || (succeeds(Command::new(&maturin).arg("--version"))
                && succeeds(Command::new(&python).args(["-c", "import mypy.stubtest, numpy"]))));
    if !installed {
        let mut pip = Command::new(&python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(TEST_DEPS);
        if flavour == Flavour::CPython {
            pip.args([MATURIN, MYPY, NUMPY]);
        }
        run(&mut pip)?;
    }
    Ok(python)
}

/// Builds the wheel for `python` with maturin and force-reinstalls it into its venv.
fn build_and_install(root: &Path, flavour: Flavour, python: &Path, maturin: &Path) -> Result<()> {
    let target = root.join("target");
    let wheels = target.join("wheels").join(flavour.name());
    for old in wheels_in(&wheels)? {
        fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }

    run(Command::new(maturin)
        .args(["build", "--release", "--interpreter"])
        .arg(python)
        .arg("--manifest-path")
        .arg(root.join("cpy2py-python").join("Cargo.toml"))
        .arg("--out")
        .arg(&wheels)
        .env(
            "CARGO_TARGET_DIR",
            target.join(format!("maturin-{}", flavour.name())),
        ))?;

    let wheel = match wheels_in(&wheels)?.as_slice() {
        [wheel] => wheel.clone(),
        found => bail!(
            "expected one wheel in {} after maturin, found {found:?}",
            wheels.display()
        ),
    };
    run(Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--force-reinstall", "--no-deps"])
        .arg(wheel))
}

/// The `.whl` files in `dir` (none if `dir` does not exist).
fn wheels_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            wheels.push(path);
        }
    }
    Ok(wheels)
}

/// The first executable called `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}
