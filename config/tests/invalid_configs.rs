//! Loads every config in `tests/invalid-configs/` and checks that it fails with the
//! errors its `.expect` file lists (one substring per non-empty line).
//!
//! When every line of an `.expect` file starts with the case's own file name (`NN-x.toml:`),
//! the file is the complete output: the config must fail with exactly those errors, whole
//! lines, in that order, and nothing else.

use std::path::{Path, PathBuf};

const MIN_CASES: usize = 24;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/invalid-configs")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_invalid_config_fails_with_the_expected_errors() {
    let cases = cases();
    assert!(
        cases.len() >= MIN_CASES,
        "expected at least {MIN_CASES} invalid configs, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let expect_path = case.with_extension("expect");
        let expect = match std::fs::read_to_string(&expect_path) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!("{}: {e}", expect_path.display()));
                continue;
            }
        };
        let output = match meridian_config::load(case) {
            Ok(_) => {
                failures.push(format!("{}: loaded without errors", case.display()));
                continue;
            }
            Err(errors) => errors.to_string(),
        };
        if std::env::var_os("SHOW_CONFIG_ERRORS").is_some() {
            println!("== {}\n{output}", case.display());
        }
        let lines: Vec<&str> = expect
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            failures.push(format!("{}: no expectations", expect_path.display()));
        }
        for line in &lines {
            if !output.contains(line) {
                failures.push(format!(
                    "{}: missing {line:?} in:\n{output}",
                    case.display()
                ));
            }
        }
        if let Some(problem) = exact_mismatch(case, &lines, &output) {
            failures.push(format!("{}: {problem} in:\n{output}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// For an `.expect` file that lists the complete output (every line starts with the
/// case's file name): how the output differs from it, if it does.
fn exact_mismatch(case: &Path, expected: &[&str], output: &str) -> Option<String> {
    let name = case.file_name()?.to_str()?;
    let prefix = format!("{name}:");
    if expected.is_empty() || !expected.iter().all(|l| l.starts_with(&prefix)) {
        return None;
    }
    let got: Vec<&str> = output.lines().collect();
    if got.len() != expected.len() {
        return Some(format!(
            "expected exactly {} errors, got {}",
            expected.len(),
            got.len()
        ));
    }
    for (want, line) in expected.iter().zip(&got) {
        // The output names the file by its full path; the expectation by its name.
        let whole = line
            .strip_suffix(want)
            .is_some_and(|dir| dir.ends_with('/'));
        if !whole {
            return Some(format!("expected the line {want:?}, got {line:?}"));
        }
    }
    None
}

#[test]
fn several_errors_are_reported_at_once() {
    let errors = meridian_config::load(&corpus_dir().join("31-several-errors.toml"))
        .expect_err("the file is invalid");
    assert!(errors.len() >= 2, "{errors}");
    assert_eq!(errors.to_string().lines().count(), errors.len());
}

#[test]
fn every_file_layer_error_is_reported_at_once() {
    for (case, count) in [
        ("58-several-unknown-keys.toml", 3),
        ("59-several-file-errors.toml", 6),
    ] {
        let errors =
            meridian_config::load(&corpus_dir().join(case)).expect_err("the file is invalid");
        assert_eq!(errors.len(), count, "{case}:\n{errors}");
    }
}
