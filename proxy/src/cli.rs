//! The command line: `run`, `check`, `ctl`, `demo`, `--version` (and the hidden
//! `generate-assets` for packaging).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::control::instance::{build_locator, Instance};
use crate::control::readiness::preflight;
use crate::control::upgrade::{PidFile, Relaunch, Signals};
use crate::observe::logging;
use crate::server::{self, ProcessOptions};

/// Meridian: a geo-distributed HTTP load balancer and reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a config file.
    Run {
        /// The TOML config file.
        #[arg(short, long, default_value = "/etc/meridian/meridian.toml")]
        config: PathBuf,
        /// Which instance of the config's instance lists this process is (overrides
        /// `node.name`; default: the `MERIDIAN_NODE` environment variable).
        #[arg(long)]
        node: Option<String>,
        /// Take over the listening sockets of the running instance (graceful upgrade):
        /// start the new process with --upgrade, then send SIGQUIT to the old one.
        #[arg(long)]
        upgrade: bool,
        /// Unix socket used to hand listening sockets over during an upgrade.
        #[arg(long, default_value = "/run/meridian/upgrade.sock")]
        upgrade_sock: String,
        /// PID file.
        #[arg(long, default_value = "/run/meridian/meridian.pid")]
        pid_file: String,
        /// Seconds in-flight requests get to finish after SIGTERM, SIGQUIT or SIGUSR2
        /// (default: `timeouts.shutdown_grace` of the config).
        #[arg(long)]
        grace_period: Option<u64>,
    },
    /// Validate config files like `nginx -t`: exit 0 with a summary, or 1 with every error.
    Check {
        /// Config files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check as this instance (overrides `node.name`; default: `MERIDIAN_NODE`).
        #[arg(long)]
        node: Option<String>,
    },
    /// Start a three-region demo world on loopback, with no files needed.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Where the demo GeoDNS listens (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:8053")]
        dns: SocketAddr,
    },
    /// Drive a running instance through its admin API: drain, maintenance, ready and
    /// weight for a backend or a service's region, reload, status.
    Ctl {
        /// Where the admin API is.
        #[command(flatten)]
        connection: crate::ctl::Connection,
        /// What to do.
        #[command(subcommand)]
        command: crate::ctl::CtlCommand,
    },
    /// Write the man pages and shell completions into a directory (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// The directory (`man/` and `completions/` are made in it).
        dir: PathBuf,
    },
}

/// Ends this process when its parent is gone (the demo's instances: they must not outlive
/// the demo, however it ended).
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    });
}

/// The overrides of `--node` (or `MERIDIAN_NODE`).
fn overrides(node: Option<String>) -> meridian_config::Overrides {
    meridian_config::Overrides {
        node_name: node.or_else(|| {
            std::env::var("MERIDIAN_NODE")
                .ok()
                .filter(|n| !n.is_empty())
        }),
    }
}

/// Validates one file; prints the summary or the errors.
pub fn check(path: &std::path::Path, overrides: &meridian_config::Overrides) -> bool {
    match meridian_config::load_with(path, overrides) {
        Ok(config) => match build_locator(&config) {
            Ok(locator) => {
                let backends = config.backends().count();
                let services = match config.services.as_slice() {
                    [one] if one.implicit => String::new(),
                    all => format!("{} services, ", all.len()),
                };
                let db = locator
                    .info()
                    .path
                    .as_ref()
                    .map_or_else(|| "built-in DB-IP".to_string(), |p| p.display().to_string());
                println!(
                    "{}: ok: node {} in {}, {} regions, {services}{} backends, {} listeners, geoip {}",
                    path.display(),
                    config.node.name,
                    config.node.region,
                    config.regions.len(),
                    backends,
                    config.listeners.http.len() + config.listeners.https.len(),
                    db
                );
                true
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                false
            }
        },
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.errors.len());
            false
        }
    }
}

/// Runs the CLI.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files, node } => {
            let overrides = overrides(node);
            let mut ok = true;
            for f in &files {
                ok &= check(f, &overrides);
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::GenerateAssets { dir } => match crate::generate::assets(&Cli::command(), &dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meridian generate-assets {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Command::Ctl {
            connection,
            command,
        } => match crate::ctl::run(&connection, &command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian ctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { listen, admin, dns } => match crate::demo::run(listen, admin, dns) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian demo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            node,
            upgrade,
            upgrade_sock,
            pid_file,
            grace_period,
        } => {
            if std::env::var_os(crate::demo::EXIT_WITH_PARENT).is_some() {
                exit_with_parent();
            }
            let overrides = overrides(node);
            let cfg = match meridian_config::load_with(&config, &overrides) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("meridian: not starting: {} has errors", config.display());
                    return ExitCode::FAILURE;
                }
            };
            if !upgrade {
                if let Err(e) = preflight(&cfg) {
                    eprintln!("{}: {e}", config.display());
                    eprintln!("meridian: not starting: listeners unavailable");
                    return ExitCode::FAILURE;
                }
            }
            logging::init(&cfg.logging);
            let inst = match Instance::new(cfg) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::FAILURE;
                }
            };
            let relaunch = Relaunch::current(&upgrade_sock);
            let opts = ProcessOptions {
                upgrade,
                upgrade_sock,
                pid_file,
                grace_period: grace_period.map(std::time::Duration::from_secs),
            };
            tracing::info!(config = %config.display(), version = env!("CARGO_PKG_VERSION"), "meridian starting");
            // `build` returns once the listening sockets are held (after the handover in an
            // upgrade): from here on the PID file names this process.
            let server = match server::build(inst, &opts) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::FAILURE;
                }
            };
            let pid_file = PidFile::write(&opts.pid_file);
            server.run(pingora::server::RunArgs {
                shutdown_signal: Box::new(Signals::new(relaunch)),
            });
            drop(pid_file);
            ExitCode::SUCCESS
        }
    }
}
