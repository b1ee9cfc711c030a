//! `meridian ctl`: the runtime API from the command line, as `haproxyctl` or `nginx -s`
//! are: drain, maintenance, ready and weight for a backend or a service's region, reload,
//! and a status table. It finds the admin API and its token in the config file (or is
//! told them), speaks plain HTTP/1.1 to it, prints the outcome and exits 1 on refusal.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct Connection {
    /// The admin API's address (default: `listeners.admin` of the config file, else
    /// 127.0.0.1:9901).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The config file to take the admin address and token from.
    #[arg(short, long, default_value = "/etc/meridian/meridian.toml")]
    pub config: PathBuf,
    /// The bearer token (default: `MERIDIAN_ADMIN_TOKEN`, else the config's
    /// `admin.token` or `admin.token_file`).
    #[arg(long)]
    pub token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Which backends a state change is for: one backend, or a service's whole region.
#[derive(Debug, Args)]
pub struct Which {
    /// The backend: its address (`10.0.0.1:8080`) or ID (`us-east/10.0.0.1:8080`).
    #[arg(required_unless_present = "region", conflicts_with = "region")]
    pub backend: Option<String>,
    /// A whole region of a service instead of one backend.
    #[arg(long)]
    pub region: Option<String>,
    /// The service of `--region` (needed when there are several).
    #[arg(long, requires = "region")]
    pub service: Option<String>,
}

/// What `meridian ctl` does.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Services, regions and backends: health, state, weight, in-flight requests.
    Status,
    /// No new requests for a backend (or region); in-flight ones finish.
    Drain(Which),
    /// Take a backend (or region) out at once.
    Maintenance(Which),
    /// Back to taking requests.
    Ready(Which),
    /// Set a backend's weight (1..=1000), or `default` for the configured one.
    Weight {
        /// The backend: its address or ID.
        backend: String,
        /// The weight, or `default`.
        weight: String,
    },
    /// Reload the config file (like SIGHUP).
    Reload,
    /// The runtime settings in force (JSON).
    Runtime,
}

/// The admin address and token to use.
fn connection(c: &Connection) -> Result<(SocketAddr, Option<String>), String> {
    let explicit = c.config != Path::new("/etc/meridian/meridian.toml");
    let config = match meridian_config::load(&c.config) {
        Ok(cfg) => Some(cfg),
        Err(e) if explicit => return Err(format!("{}:\n{e}", c.config.display())),
        Err(_) => None,
    };
    let admin = c
        .admin
        .or(config.as_ref().map(|cfg| cfg.listeners.admin))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    // An admin API bound to every address is reached on loopback.
    let admin = if admin.ip().is_unspecified() {
        SocketAddr::new(
            if admin.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            admin.port(),
        )
    } else {
        admin
    };
    let token = match (&c.token, &c.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => std::env::var("MERIDIAN_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| {
                let cfg = config.as_ref()?;
                Some(cfg.admin.token.as_ref()?.expose().to_owned())
            }),
    };
    Ok((admin, token))
}

/// One request to the admin API: its status and JSON (or text) body.
fn call(
    admin: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("admin API at {admin}: {e}");
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(fail)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).map_err(fail)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(fail)?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("admin API at {admin}: not an HTTP answer"))?;
    Ok((status, body.to_owned()))
}

/// The body of a state change.
fn state_body(which: &Which, state: &str) -> (&'static str, Value) {
    match (&which.backend, &which.region) {
        (Some(b), _) => ("/runtime/backend", json!({ "backend": b, "state": state })),
        (None, region) => (
            "/runtime/region",
            json!({ "service": which.service, "region": region, "state": state }),
        ),
    }
}

/// Prints a runtime change's answer.
fn print_change(v: &Value) {
    for b in v["backends"].as_array().into_iter().flatten() {
        println!(
            "{} (service {}): {}, weight {}",
            b["id"].as_str().unwrap_or("?"),
            b["service"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?"),
            b["weight"]
        );
    }
    match (&v["saved"], &v["save_error"]) {
        (Value::Bool(false), Value::String(e)) => eprintln!("warning: not saved: {e}"),
        (Value::Bool(true), _) => println!("saved to the state file"),
        _ => {}
    }
}

/// Prints `/status` as a table.
fn print_status(v: &Value) {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    println!(
        "node {} in {}, generation {}",
        s(&v["node"]["name"]),
        s(&v["node"]["region"]),
        s(&v["generation"])
    );
    for svc in v["services"].as_array().into_iter().flatten() {
        let hosts: Vec<String> = svc["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let hosts = if hosts.is_empty() {
            "any host".to_owned()
        } else {
            hosts.join(" ")
        };
        println!("service {}: {hosts} {}", s(&svc["name"]), s(&svc["paths"]));
    }
    println!(
        "{:<12} {:<28} {:<10} {:<8} {:<12} {:>6} {:>8}",
        "SERVICE", "BACKEND", "REGION", "HEALTH", "STATE", "WEIGHT", "INFLIGHT"
    );
    for r in v["regions"].as_array().into_iter().flatten() {
        for b in r["backends"].as_array().into_iter().flatten() {
            println!(
                "{:<12} {:<28} {:<10} {:<8} {:<12} {:>6} {:>8}",
                s(&b["service"]),
                s(&b["address"]),
                s(&r["name"]),
                s(&b["health"]),
                s(&b["state"]),
                s(&b["weight"]),
                s(&b["inflight"])
            );
        }
    }
}

/// Runs `meridian ctl`; `Err` is the message to print (exit 1).
pub fn run(conn: &Connection, cmd: &CtlCommand) -> Result<(), String> {
    let (admin, token) = connection(conn)?;
    let token = token.as_deref();
    let (method, path, body) = match cmd {
        CtlCommand::Status => ("GET", "/status", None),
        CtlCommand::Runtime => ("GET", "/runtime", None),
        CtlCommand::Reload => ("POST", "/reload", None),
        CtlCommand::Drain(w) => (
            "POST",
            state_body(w, "drain").0,
            Some(state_body(w, "drain").1),
        ),
        CtlCommand::Maintenance(w) => {
            let (p, b) = state_body(w, "maintenance");
            ("POST", p, Some(b))
        }
        CtlCommand::Ready(w) => {
            let (p, b) = state_body(w, "ready");
            ("POST", p, Some(b))
        }
        CtlCommand::Weight { backend, weight } => {
            let w: Value = match weight.as_str() {
                "default" => Value::Null,
                n => n.parse::<u32>().map(Value::from).map_err(|_| {
                    format!("weight \"{n}\": give a number from 1 to 1000, or default")
                })?,
            };
            (
                "POST",
                "/runtime/backend",
                Some(json!({ "backend": backend, "weight": w })),
            )
        }
    };
    let (status, text) = call(admin, token, method, path, body.as_ref())?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.trim().to_owned()));
    if !(200..300).contains(&status) {
        let message = v["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| match &v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        return Err(format!("{status}: {message}"));
    }
    match cmd {
        CtlCommand::Status => print_status(&v),
        CtlCommand::Runtime | CtlCommand::Reload => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        _ => print_change(&v),
    }
    Ok(())
}
