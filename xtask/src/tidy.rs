//! House rules of the workspace, checked by plain `cargo test` (rust-analyzer's
//! "tidy" tests): rules that a reviewer would otherwise have to remember.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::project_root;

#[test]
fn every_rust_file_starts_with_module_docs() {
    let offenders: Vec<PathBuf> = files_with_extension("rs")
        .into_iter()
        .filter(|path| !read(path).starts_with("//!"))
        .collect();
    assert_none(
        &offenders,
        "these files must start with `//!` docs saying what they are (and are not)",
    );
}

#[test]
fn pyo3_only_in_cpy2py_python() {
    let root = project_root();
    let glue = root.join("cpy2py-python");
    let offenders: Vec<PathBuf> = files_with_extension("rs")
        .into_iter()
        .chain(files_with_extension("toml"))
        .filter(|path| !path.starts_with(&glue) && *path != root.join(file!()))
        .filter(|path| {
            let text = read(path);
            if path.file_name().is_some_and(|name| name == "Cargo.toml") {
                // The root manifest may pin pyo3 for the workspace; no member may use it.
                *path != root.join("Cargo.toml")
                    && text
                        .lines()
                        .any(|line| line.trim_start().starts_with("pyo3"))
            } else {
                text.contains("pyo3::") || text.contains("use pyo3")
            }
        })
        .collect();
    assert_none(
        &offenders,
        "only cpy2py-python may know Python (pyo3); these files use it",
    );
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    let root = project_root();
    let offenders: Vec<PathBuf> = files_with_extension("toml")
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "Cargo.toml"))
        .filter(|path| *path != root.join("Cargo.toml"))
        .filter(|path| !read(path).contains("[lints]\nworkspace = true"))
        .collect();
    assert_none(&offenders, "these crates lack `[lints] workspace = true`");
}

fn assert_none(offenders: &[PathBuf], rule: &str) {
    let list: Vec<String> = offenders
        .iter()
        .map(|path| format!("  {}", path.display()))
        .collect();
    assert!(offenders.is_empty(), "{rule}:\n{}", list.join("\n"));
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Source files of the workspace: everything but `target/` and hidden directories.
fn files_with_extension(extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![project_root()];
    while let Some(dir) = dirs.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || name == "target" || name == "__pycache__" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}
