//! `meridian check` on every sample config (accepted) and the invalid corpus (rejected with
//! the expected messages), as CI and systemd's ExecStartPre use it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(common::meridian_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("meridian {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_sample_config_passes_check() {
    let samples = files("examples", "toml");
    assert!(
        samples.len() >= 3,
        "expected sample configs, found {samples:?}"
    );
    for f in samples {
        let out = Command::new(common::meridian_bin())
            .arg("check")
            .arg(&f)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} rejected:\n{}{}",
            f.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
        assert!(stdout.contains(": ok: "), "{stdout}");
    }
}

#[test]
fn every_invalid_config_is_rejected_with_its_message() {
    let corpus = files("tests/invalid-configs", "toml");
    assert!(
        corpus.len() >= 20,
        "invalid corpus too small: {}",
        corpus.len()
    );
    for f in corpus {
        let out = Command::new(common::meridian_bin())
            .arg("check")
            .arg(&f)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} accepted:\n{stderr}",
            f.display()
        );
        let expect = std::fs::read_to_string(f.with_extension("expect")).unwrap();
        for line in expect.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                stderr.contains(line.trim()),
                "{}: expected {line:?} in:\n{stderr}",
                f.display()
            );
        }
    }
}

#[test]
fn check_reports_every_file_and_fails_if_any_fails() {
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal.toml");
    let bad = files("tests/invalid-configs", "toml").remove(0);
    let out = Command::new(common::meridian_bin())
        .arg("check")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("minimal.toml: ok"));
}
