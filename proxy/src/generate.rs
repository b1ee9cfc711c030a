//! `meridian generate-assets DIR` (a hidden subcommand): the man pages and the bash, zsh
//! and fish completions, generated from the CLI definition for the Debian package
//! (`packaging/deb/build.sh`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;

/// Sections of `meridian(1)` that the CLI definition does not hold (roff).
const MORE: &str = r#".SH FILES
.TP
\fI/etc/meridian/meridian.toml\fR
The configuration (TOML; every key in /usr/share/doc/meridian/configuration.md when
installed from the package, else docs/configuration.md). Check it with
\fBmeridian check\fR; apply changes with \fBsystemctl reload meridian\fR, SIGHUP, or by
saving the file (it is watched).
.TP
\fI/run/meridian/meridian.pid\fR, \fI/run/meridian/upgrade.sock\fR
The PID file and the socket the listening sockets are handed over on in a graceful
upgrade.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration; a bad file is rejected and the running one stays.
.TP
\fBSIGTERM\fR
Stop accepting, let requests in flight finish (\fB\-\-grace\-period\fR), exit.
.TP
\fBSIGQUIT\fR
Hand the listening sockets to a new process started with \fB\-\-upgrade\fR, then drain
and exit.
.TP
\fBSIGUSR2\fR
Start the binary on disk again with \fB\-\-upgrade\fR and hand it the sockets (binary
upgrade without dropping a connection).
.SH ADMIN API
On 127.0.0.1:9901 by default: \fB/\fR (the live status page), \fB/status\fR (JSON),
\fB/metrics\fR (Prometheus), \fB/healthz\fR, \fBPOST /reload\fR.
.SH EXIT STATUS
0 on success; 1 when a configuration is invalid, a listener cannot be bound, or the
process fails to start.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBmeridian\-run\fR(1), \fBmeridian\-check\fR(1),
\fBmeridian\-demo\fR(1)
"#;

/// What `meridian(1)` says under DESCRIPTION.
const DESCRIPTION: &str = "Meridian routes every HTTP request by the client's geography \
(GeoIP) and by measured latency to a healthy backend in one of several regions; when a \
backend or a whole region goes down, traffic fails over to the next region without \
client-visible errors. One instance runs in each region. Backends are probed actively \
and ejected passively; the configuration is reloaded without dropping a connection, \
and a new binary takes over the listening sockets of the old one.";

/// `cli` as users see it: without hidden subcommands (completion generators would offer
/// them) and without `help`.
fn visible(cli: &Command) -> Command {
    let subcommands: Vec<Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = Command::new("meridian")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .long_about(DESCRIPTION)
        .subcommands(subcommands)
        .subcommand_required(true)
        .disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Writes `DIR/man/meridian*.1` and `DIR/completions/{meridian.bash,_meridian,meridian.fish}`
/// for the command line `cli`; returns the files written.
pub fn assets(cli: &Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut cmd = visible(cli);
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut written = Vec::new();
    // One page per visible subcommand (meridian-run.1, …), then meridian.1 itself.
    for sub in cmd.get_subcommands() {
        written.push(Man::new(sub.clone()).generate_to(&man_dir)?);
    }
    let man = Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.write_all(MORE.as_bytes())?;
    man.render_version_section(&mut page)?;
    let path = man_dir.join("meridian.1");
    std::fs::write(&path, page)?;
    written.push(path);

    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [
        (Shell::Bash, "meridian.bash"),
        (Shell::Zsh, "_meridian"),
        (Shell::Fish, "meridian.fish"),
    ] {
        let path = completions.join(file);
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "meridian", &mut out);
        std::fs::write(&path, out)?;
        written.push(path);
    }
    Ok(written)
}
