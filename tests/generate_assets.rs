//! `meridian generate-assets DIR` (hidden; the Debian package runs it): man pages and shell
//! completions for every visible subcommand, and nothing about itself.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::meridian_bin;

#[test]
fn man_pages_and_completions_cover_every_visible_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(meridian_bin())
        .arg("generate-assets")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8(out.stdout).unwrap();
    for file in [
        "man/meridian.1",
        "man/meridian-run.1",
        "man/meridian-check.1",
        "man/meridian-demo.1",
        "completions/meridian.bash",
        "completions/_meridian",
        "completions/meridian.fish",
    ] {
        let path = dir.path().join(file);
        assert!(
            listed.contains(&path.display().to_string()),
            "{file}: {listed}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("generate-assets"),
            "{file} offers the hidden command"
        );
    }
    let page = std::fs::read_to_string(dir.path().join("man/meridian.1")).unwrap();
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH SUBCOMMANDS",
        ".SH FILES",
        ".SH SIGNALS",
        ".SH SEE ALSO",
    ] {
        assert!(page.contains(section), "meridian.1 has no {section}");
    }
    let run = std::fs::read_to_string(dir.path().join("man/meridian-run.1")).unwrap();
    assert!(run.contains("grace\\-period"), "{run}");
    let bash = std::fs::read_to_string(dir.path().join("completions/meridian.bash")).unwrap();
    assert!(
        bash.contains("--grace-period") && bash.contains("check"),
        "{bash}"
    );
    // Not listed in --help either.
    let help = Command::new(meridian_bin()).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate-assets"));
}
