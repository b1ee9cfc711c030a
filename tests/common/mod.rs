//! Shared harness of the end-to-end tests: real `meridian` processes started from real config
//! files, real backends (`meridian-demo-backend`) and real HTTP clients, all on loopback with
//! ephemeral ports. Every wait is bounded.

#![allow(dead_code)]

pub mod browser;
pub mod load;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_demo_backend::{Backend, BackendSpec};

/// The `meridian` binary built by `cargo test` from the workspace root.
pub fn meridian_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/meridian
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("meridian");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test` from the workspace root, which builds it",
        bin.display()
    );
    bin
}

/// A loopback port that was free a moment ago, and not handed out before by this test
/// process: the port is released at once, so without the record two tests running in
/// parallel could be given the same one (the kernel may pick a just-released port again).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no ephemeral port that was not handed out already in 1,000 tries")
}

/// A loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Starts a demo backend on an ephemeral loopback port on the current runtime.
pub async fn backend(name: &str, region: &str) -> Backend {
    Backend::start(BackendSpec::new(
        name,
        region,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .expect("start backend")
}

/// A running `meridian run` process with its config file; killed on drop.
pub struct Meridian {
    child: Option<Child>,
    /// Temporary directory holding the config, logs, pid file and upgrade socket.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// How the processes are started (environment, a wrapping command, the grace).
    pub launch: Launch,
}

/// How `meridian run` is started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Extra environment of the processes started (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// A command the process is started under (e.g. `prlimit --nofile=200:200 --`).
    pub prefix: Vec<String>,
    /// `--grace-period` in seconds (2 when `None`).
    pub grace_period: Option<u64>,
}

/// Standard top of a test config: node, listeners, fast health checks.
pub fn header(region: &str, listen: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"threads = 2

[node]
region = "{region}"

[listeners]
http = ["{listen}"]
admin = "{admin}"

[logging]
level = "info"

[health_check]
interval = "400ms"
timeout = "400ms"
rise = 2
fall = 3
"#
    )
}

/// A `[regions.NAME]` table with the given backends.
pub fn region(name: &str, lat: f64, lon: f64, backends: &[&Backend], extra: &str) -> String {
    let mut s =
        format!("\n[regions.{name}]\nlatitude = {lat}\nlongitude = {lon}\n{extra}\nbackends = [\n");
    for b in backends {
        s.push_str(&format!("  {{ address = \"{}\" }},\n", b.addr()));
    }
    s.push_str("]\n");
    s
}

impl Meridian {
    /// Writes `config` and starts `meridian run`; waits until `/healthz` is 200 and every
    /// backend is up.
    pub fn start(config: &str, listen: SocketAddr, admin: SocketAddr) -> Meridian {
        let m = Meridian::start_ready(config, listen, admin);
        m.wait_all_up(Duration::from_secs(30));
        m
    }

    /// Like [`Meridian::start`], but only waits for `/healthz` (the first probe round),
    /// not for every backend to be up.
    pub fn start_ready(config: &str, listen: SocketAddr, admin: SocketAddr) -> Meridian {
        Meridian::start_with_env(config, listen, admin, Vec::new())
    }

    /// Like [`Meridian::start_ready`], with extra environment variables.
    pub fn start_with_env(
        config: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        env: Vec<(String, String)>,
    ) -> Meridian {
        let launch = Launch {
            env,
            ..Launch::default()
        };
        Meridian::start_with(config, listen, admin, launch)
    }

    /// Like [`Meridian::start_ready`], started as `launch` says.
    pub fn start_with(
        config: &str,
        listen: SocketAddr,
        admin: SocketAddr,
        launch: Launch,
    ) -> Meridian {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meridian.toml");
        std::fs::write(&path, config).expect("write config");
        let mut m = Meridian {
            child: None,
            config: path,
            dir,
            listen,
            admin,
            launch,
        };
        m.spawn(false);
        m.wait_ready(Duration::from_secs(30));
        m
    }

    /// `POST /reload` on the admin API: status and body.
    pub fn reload(&self) -> (u16, String) {
        blocking_request(self.admin, "POST", "/reload", &[], b"").expect("reload")
    }

    /// Waits until every configured backend reads `up` in `/status` (a first probe can
    /// fail on a loaded machine; then `rise` good probes are needed).
    pub fn wait_all_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status();
            let all_up = s["regions"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["backends"].as_array().into_iter().flatten())
                .all(|b| b["health"] == "up");
            if all_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "backends not all up after {limit:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts another process on the same config. With `upgrade` the new process takes over
    /// the listening sockets and the old one is handed back to the caller (still running).
    pub fn spawn(&mut self, upgrade: bool) -> Option<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("meridian.log"))
            .expect("log file");
        let mut cmd = match self.launch.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(meridian_bin());
                c
            }
            None => Command::new(meridian_bin()),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--pid-file")
            .arg(self.dir.path().join("meridian.pid"))
            .arg("--upgrade-sock")
            .arg(self.dir.path().join("upgrade.sock"))
            .arg("--grace-period")
            .arg(self.launch.grace_period.unwrap_or(2).to_string())
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log);
        if upgrade {
            cmd.arg("--upgrade");
            let child = cmd.spawn().expect("spawn meridian");
            return self.child.replace(child);
        }
        // A restart: the old process lets go of its listeners before the new one binds.
        if let Some(mut old) = self.child.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.child = Some(cmd.spawn().expect("spawn meridian"));
        None
    }

    /// Whether the current process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// The process ID of the current process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Waits until `/healthz` answers 200 (panics with the log after `limit`).
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "meridian exited ({exit}) before it was ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok((200, _)) = blocking_get(self.admin, "/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("meridian not ready after {limit:?}; log:\n{}", self.log());
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meridian.log")).unwrap_or_default()
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = blocking_get(self.admin, "/status").expect("status");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("status JSON")
    }

    /// The metrics text once every `(series, at_least)` has reached its value, or after
    /// 10 s (the caller's assertions then say what is missing). Request counters are
    /// bumped in pingora's logging phase, just after the client has its response, so a
    /// read right after the last response can be a moment early.
    pub fn metrics_when(&self, wanted: &[(&str, f64)]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics();
            let reached = wanted
                .iter()
                .all(|(series, want)| metric_value(&text, series).is_some_and(|v| v >= *want));
            if reached || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics` text.
    pub fn metrics(&self) -> String {
        blocking_get(self.admin, "/metrics").expect("metrics").1
    }

    /// The proxy's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// Rewrites the config file (atomically, by rename, as config managers do).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join(".meridian.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &self.config).expect("rename");
    }

    /// Sends a signal to the current process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the backend's health in `/status` to read `want` (bounded).
    pub fn wait_backend_health(&self, addr: SocketAddr, want: &str, limit: Duration) {
        self.wait_backend(addr, want, limit, |b| b["health"] == want);
    }

    /// Waits until the backend's entry in `/status` satisfies `cond`, described by
    /// `what` (bounded by `limit`).
    pub fn wait_backend(
        &self,
        addr: SocketAddr,
        what: &str,
        limit: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status();
            let found = s["regions"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["backends"].as_array().into_iter().flatten())
                .find(|b| b["address"] == addr.to_string())
                .cloned();
            if found.as_ref().is_some_and(&cond) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "backend {addr} not {what} after {limit:?}: {found:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Meridian {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Replaces `path` the way editors, ACME clients and geoipupdate do: a temporary file in
/// the same directory, renamed over it.
pub fn replace_by_rename(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write the replacement");
    std::fs::rename(&tmp, path).expect("rename it over the file");
}

/// A flat (DB-IP layout) IPv6 database placing each network in its country, without
/// IPv4 aliases (IPv4-mapped lookups are mapped by the locator).
pub fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    use mmdb_writer::{IpVersion, Ipv4Aliasing, Value, Writer};
    let mut w = Writer::builder("meridian-test-country")
        .ip_version(IpVersion::V6)
        .ipv4_aliasing(Ipv4Aliasing::Disabled)
        .build();
    for &(net, cc) in entries {
        w.insert_value(
            net.parse::<mmdb_writer::ipnet::IpNet>().expect("network"),
            Value::map([("country_code", Value::from(cc))]),
        )
        .expect("insert");
    }
    w.to_bytes().expect("serialize the database")
}

/// Asserts that `/status` shows a successful reload triggered by a file change, past
/// `generation`.
pub fn assert_reloaded_by_file_change(m: &Meridian, generation: u64) {
    let s = m.status();
    assert!(
        s["generation"].as_u64().expect("generation") > generation,
        "{s}"
    );
    assert_eq!(s["last_reload"]["trigger"], "file change", "{s}");
    assert_eq!(s["last_reload"]["result"], "ok", "{s}");
}

/// Sends raw request bytes (which should ask for `Connection: close`) and returns the whole
/// response as text, read until the server closes (at most 15 s per read).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    s.write_all(request).expect("write the request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the response");
    String::from_utf8_lossy(&out).into_owned()
}

/// A tiny blocking HTTP/1.1 GET (admin endpoints): status and body.
pub fn blocking_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    blocking_request(addr, "GET", path, &[], b"")
}

/// A tiny blocking HTTP/1.1 request with `Connection: close`.
pub fn blocking_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// An HTTP client for the proxy (keep-alive, no system proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Requests each backend received while `f` ran.
pub async fn hits_during<F: std::future::Future<Output = ()>>(
    backends: &[&Backend],
    f: F,
) -> Vec<u64> {
    let before: Vec<u64> = backends.iter().map(|b| b.hits()).collect();
    f.await;
    backends
        .iter()
        .zip(before)
        .map(|(b, h)| b.hits() - h)
        .collect()
}

/// A metric's value from the text exposition (exact series match), if the series is there.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A metric's value from the text exposition (exact series match). Panics when the
/// series is not there at all, so a renamed metric or label fails the test instead of
/// reading as 0.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or_else(|| {
        let family = series.split('{').next().unwrap_or(series);
        let seen: Vec<&str> = text.lines().filter(|l| l.starts_with(family)).collect();
        panic!(
            "no series {series} in the metrics; {family} has:\n{}",
            seen.join("\n")
        )
    })
}

/// Starts Meridian from an async test without blocking the runtime's workers.
pub async fn start(config: String, listen: SocketAddr, admin: SocketAddr) -> Meridian {
    tokio::task::spawn_blocking(move || Meridian::start(&config, listen, admin))
        .await
        .expect("start meridian")
}

/// Runs a blocking closure off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}
