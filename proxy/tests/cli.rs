//! The binary's command line (this integration test also makes `cargo test` build the
//! `meridian` binary that the workspace's end-to-end tests run).

use std::process::Command;

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--help")
        .output()
        .expect("run meridian");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "demo"] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
}

#[test]
fn check_of_a_missing_file_names_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "/nonexistent/meridian.toml"])
        .output()
        .expect("run meridian");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/meridian.toml"), "{err}");
}
