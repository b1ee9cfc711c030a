//! The status page at the admin root, in a real headless Chromium (see
//! `common/browser.rs`) against real `meridian` processes: every region drawn, traffic
//! arcs, reload history, a killed backend shown down within 3 s, 1,000 backends, fields
//! the page does not know yet, the `#token=` fragment, and the demo. Skipped only where
//! there is no chromium and `CI` is unset.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::{chromium, Browser};
use common::*;
use meridian_demo_backend::{spawn_on_thread, BackendSpec};
use serde_json::{json, Value};

/// One browser at a time: the timing assertions must not compete with another Chromium.
static SERIAL: Mutex<()> = Mutex::new(());

const REGIONS: [(&str, f64, f64); 3] = [
    ("us-east", 39.04, -77.49),
    ("eu-west", 53.35, -6.26),
    ("ap-southeast", 1.29, 103.85),
];

fn config(listen: SocketAddr, admin: SocketAddr, regions: &str) -> String {
    format!(
        r#"threads = 1

[node]
region = "us-east"

[listeners]
http = ["{listen}"]
admin = "{admin}"

[health_check]
interval = "250ms"
timeout = "250ms"
rise = 2
fall = 2

[client]
trusted_proxies = ["127.0.0.1"]

[reload]
watch = false
{regions}"#
    )
}

/// Requests from [`traffic`]'s clients, until dropped.
struct Traffic(Arc<AtomicBool>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Sends requests as clients at `xffs` (X-Forwarded-For; "" for none) until the result
/// is dropped (at most 60 s).
fn traffic(listen: SocketAddr, xffs: &'static [&'static str]) -> Traffic {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while !flag.load(Ordering::Relaxed) && Instant::now() < end {
            for xff in xffs {
                let headers: Vec<(&str, &str)> = if xff.is_empty() {
                    vec![]
                } else {
                    vec![("X-Forwarded-For", xff)]
                };
                let _ = blocking_request(listen, "GET", "/", &headers, b"");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Traffic(stop)
}

fn renders(b: &mut Browser) -> u64 {
    b.eval("window.meridianPage ? window.meridianPage.renders : 0")
        .as_u64()
        .unwrap_or(0)
}

/// Opens `url` and waits for the page's first render of `/status`.
fn open(url: &str) -> Option<(Browser, std::sync::MutexGuard<'static, ()>)> {
    let chromium = chromium()?;
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Browser::launch(&chromium);
    b.goto(url);
    b.wait_for("the first render", Duration::from_secs(15), |b| {
        renders(b) >= 1
    });
    Some((b, guard))
}

fn assert_no_errors(b: &mut Browser) {
    let errors = b.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    assert_eq!(b.eval("window.meridianPage.error"), Value::Null);
    let text = b
        .eval("document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    for junk in ["null", "undefined", "NaN", "[object Object]"] {
        assert!(!text.contains(junk), "the page shows {junk:?}:\n{text}");
    }
}

fn eval_json(b: &mut Browser, expr: &str) -> Value {
    let text = b.eval(&format!("JSON.stringify({expr})"));
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

#[test]
fn the_page_draws_every_region_and_shows_a_killed_backend_down_within_3s() {
    let mut specs = Vec::new();
    for (region, n) in [("us-east", 2), ("eu-west", 2), ("ap-southeast", 1)] {
        for i in 1..=n {
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            specs.push(BackendSpec::new(format!("{region}-{i}"), region, addr));
        }
    }
    let backends = spawn_on_thread(specs).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let mut regions = String::new();
    for (name, lat, lon) in REGIONS {
        let members: Vec<_> = backends.iter().filter(|b| b.region() == name).collect();
        regions.push_str(&region(name, lat, lon, &members, ""));
    }
    let m = Meridian::start(&config(listen, admin, &regions), listen, admin);
    let Some((mut b, _serial)) = open(&format!("http://{admin}/")) else {
        return;
    };
    assert_no_errors(&mut b);

    // Every region at its coordinates (equirectangular, 1000 x 500), coloured by health.
    let drawn = eval_json(
        &mut b,
        "[...document.querySelectorAll('#regions-map g.region')].map(g => \
         [g.dataset.region, g.dataset.health, g.transform.baseVal[0].matrix.e, g.transform.baseVal[0].matrix.f])",
    );
    let drawn = drawn.as_array().unwrap();
    assert_eq!(drawn.len(), REGIONS.len(), "{drawn:?}");
    for ((name, lat, lon), g) in REGIONS.iter().zip(drawn) {
        assert_eq!(g[0], *name);
        assert_eq!(g[1], "up", "{g}");
        let (x, y) = ((lon + 180.0) / 360.0 * 1000.0, (90.0 - lat) / 180.0 * 500.0);
        assert!((g[2].as_f64().unwrap() - x).abs() < 0.2, "{g} vs x {x}");
        assert!((g[3].as_f64().unwrap() - y).abs() < 0.2, "{g} vs y {y}");
    }
    let rows = eval_json(
        &mut b,
        "[...document.querySelectorAll('tr[data-backend]')].map(r => [r.dataset.backend, r.dataset.health])",
    );
    assert_eq!(rows.as_array().unwrap().len(), backends.len(), "{rows}");

    // Traffic from three continents becomes three arcs.
    let load = traffic(listen, &["81.2.69.160", "1.0.16.1", "8.8.8.8"]);
    b.wait_for("arcs for EU, AS and NA", Duration::from_secs(15), |b| {
        let flows = eval_json(
            b,
            "[...document.querySelectorAll('#arcs path.arc')].map(p => p.dataset.flow)",
        );
        ["EU>eu-west", "AS>ap-southeast", "NA>us-east"]
            .iter()
            .all(|f| flows.as_array().unwrap().contains(&json!(f)))
    });
    drop(load);
    let s = m.status();
    let eu = &s["regions"][1];
    assert_eq!(eu["name"], "eu-west");
    assert!(eu["by_continent"]["EU"].as_u64().unwrap() > 0, "{eu}");
    assert_eq!(
        metric(
            &m.metrics(),
            "meridian_geoip_database_build_timestamp_seconds"
        ),
        s["geoip"]["build_epoch"].as_f64().unwrap()
    );

    // Reloads, good and bad, listed newest first.
    let last_ok = "meridian_config_last_reload_successful";
    assert_eq!(m.reload().0, 200);
    assert_eq!(metric(&m.metrics(), last_ok), 1.0);
    let good = std::fs::read_to_string(&m.config).unwrap();
    m.write_config("[node]\nregion = 1\n");
    assert_eq!(m.reload().0, 422);
    assert_eq!(metric(&m.metrics(), last_ok), 0.0);
    m.write_config(&good);
    b.wait_for("two reloads listed", Duration::from_secs(5), |b| {
        eval_json(
            b,
            "[...document.querySelectorAll('#reloads tr[data-result]')].map(r => r.dataset.result)",
        ) == json!(["invalid", "ok"])
    });
    let s = m.status();
    assert_eq!(s["reloads"][0]["result"], "invalid", "{s}");
    assert_eq!(s["reloads"][1]["result"], "ok", "{s}");
    assert_eq!(s["last_reload"], s["reloads"][0]);

    // Kill the only ap-southeast backend: its row and its region turn down on the page.
    let victim = backends
        .iter()
        .find(|b| b.region() == "ap-southeast")
        .unwrap();
    let id = format!("ap-southeast/{}", victim.addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(victim.kill());
    let took = b.wait_for("the killed backend down", Duration::from_secs(3), |b| {
        let seen = eval_json(
            b,
            &format!(
                "[document.querySelector('tr[data-backend=\"{id}\"]')?.dataset.health, \
                 document.querySelector('#regions-map g[data-region=\"ap-southeast\"]')?.dataset.health]"
            ),
        );
        seen == json!(["down", "down"])
    });
    eprintln!("killed backend shown down after {took:?}");
    assert_no_errors(&mut b);
}

#[test]
fn the_page_stays_readable_with_1000_backends() {
    let (listen, admin) = (free_addr(), free_addr());
    let mut regions = String::new();
    let mut first = None;
    let mut taken = std::collections::HashSet::new();
    for r in 0..10usize {
        let (lat, lon) = (-40.0 + 9.0 * r as f64, -150.0 + 30.0 * r as f64);
        regions.push_str(&format!(
            "\n[regions.r{r}]\nlatitude = {lat}\nlongitude = {lon}\nbackends = [\n"
        ));
        while taken.len() < 100 * (r + 1) {
            // Nothing listens there: every backend goes down.
            let addr = free_addr();
            if !taken.insert(addr) {
                continue;
            }
            first.get_or_insert(addr);
            regions.push_str(&format!("  {{ address = \"{addr}\" }},\n"));
        }
        regions.push_str("]\n");
    }
    let cfg = config(listen, admin, &regions)
        .replace("interval = \"250ms\"", "interval = \"1s\"")
        .replace("region = \"us-east\"", "region = \"r0\"");
    let _m = Meridian::start_ready(&cfg, listen, admin);
    let Some((mut b, _serial)) = open(&format!("http://{admin}/")) else {
        return;
    };
    assert_eq!(
        b.eval("document.querySelectorAll('#regions-map g.region').length"),
        json!(10)
    );
    // Collapsed: one line per region, no backend rows.
    assert_eq!(
        b.eval("document.querySelectorAll('details.region').length"),
        json!(10)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('tr[data-backend]').length"),
        json!(0)
    );
    let ms = b.eval("window.meridianPage.lastRenderMs").as_f64().unwrap();
    eprintln!("1,000 backends, collapsed: render {ms:.1} ms");
    assert!(ms < 500.0, "render took {ms} ms");

    // The search box finds one backend among 1,000.
    let first = first.unwrap().to_string();
    b.eval(&format!(
        "(() => {{ const q = document.getElementById('q'); q.value = '{first}'; \
         q.dispatchEvent(new Event('input')); }})()"
    ));
    let rows = eval_json(
        &mut b,
        "[...document.querySelectorAll('tr[data-backend]')].map(r => r.cells[0].textContent)",
    );
    assert_eq!(rows, json!([first]));

    // Searching for "down" matches all of them; only MAX_ROWS are drawn.
    b.eval(
        "(() => { const q = document.getElementById('q'); q.value = 'down'; \
         q.dispatchEvent(new Event('input')); })()",
    );
    b.wait_for("300 rows of down backends", Duration::from_secs(20), |b| {
        b.eval("document.querySelectorAll('tr[data-backend][data-health=down]').length")
            == json!(300)
    });
    let before = renders(&mut b);
    b.wait_for("two more renders", Duration::from_secs(10), |b| {
        renders(b) >= before + 2
    });
    let ms = b.eval("window.meridianPage.lastRenderMs").as_f64().unwrap();
    eprintln!("1,000 backends, 300 rows shown: render {ms:.1} ms");
    assert!(ms < 1000.0, "render with 300 rows took {ms} ms");
    assert_no_errors(&mut b);
}

/// Serves the real page and the real `/status` of `admin` with `extra` merged in, and
/// records the `Authorization` header of every `/status` request.
fn fake_admin(admin: SocketAddr, extra: fn(&mut Value)) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = Arc::new(Mutex::new(Vec::new()));
    let seen = auth.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut path, mut authorization) = (String::new(), String::new());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if path.is_empty() {
                    path = line.split(' ').nth(1).unwrap_or("").to_string();
                } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization:") {
                    authorization = line[line.len() - v.len()..].trim().to_string();
                }
                line.clear();
            }
            let (kind, body) = match path.as_str() {
                "/" => ("text/html", blocking_get(admin, "/").unwrap().1),
                "/status" => {
                    seen.lock().unwrap().push(authorization);
                    let mut s: Value =
                        serde_json::from_str(&blocking_get(admin, "/status").unwrap().1).unwrap();
                    extra(&mut s);
                    ("application/json", s.to_string())
                }
                _ => ("text/plain", String::new()),
            };
            let code = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, auth)
}

#[test]
fn the_page_shows_fields_it_does_not_know_and_sends_the_token() {
    let backends = spawn_on_thread(vec![BackendSpec::new("b1", "us-east", free_addr())]).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let regions = region("us-east", 39.04, -77.49, &[&backends[0]], "");
    let _m = Meridian::start(&config(listen, admin, &regions), listen, admin);
    let (fake, auth) = fake_admin(admin, |s| {
        s["peers"] = json!([
            { "name": "meridian-eu-1", "region": "eu-west", "address": "10.0.0.2:9901", "state": "alive", "rtt_ms": 12.5 },
            { "name": "meridian-ap-1", "region": "ap-southeast", "address": "10.0.0.3:9901", "state": "suspect" },
        ]);
        s["services"] = json!([{ "name": "api", "hosts": ["api.example.com"] }]);
        s["mesh"] = json!({ "epoch": 7, "gossip_interval_ms": 500 });
        s["future_flag"] = json!(true);
        s["regions"][0]["backends"][0]["state"] = json!("draining");
        s["regions"][0]["zone"] = json!({ "name": "a" });
    });
    let Some((mut b, _serial)) = open(&format!("http://{fake}/#token=s3cret")) else {
        return;
    };
    assert!(
        auth.lock().unwrap().iter().all(|a| a == "Bearer s3cret"),
        "{auth:?}"
    );
    let text = |b: &mut Browser, sel: &str| {
        b.eval(&format!(
            "document.querySelector('{sel}')?.textContent ?? ''"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let peers = text(&mut b, "[data-section=\"peers\"]");
    assert!(
        peers.contains("meridian-eu-1") && peers.contains("suspect"),
        "{peers}"
    );
    assert!(text(&mut b, "[data-section=\"services\"]").contains("api.example.com"));
    let more = text(&mut b, "[data-section=\"more\"]");
    assert!(
        more.contains("future_flag") && more.contains("epoch"),
        "{more}"
    );
    let row = text(&mut b, "tr[data-backend]");
    assert!(row.contains("draining"), "{row}");
    assert_no_errors(&mut b);
}

#[test]
fn the_demo_page_shows_traffic_from_every_continent() {
    let (listen, admin) = (free_addr(), free_addr());
    let mut demo = Command::new(meridian_bin())
        .args([
            "demo",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--dns",
            &free_addr().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut demo);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = blocking_get(admin, "/status")
            .ok()
            .is_some_and(|(code, body)| {
                code == 200
                    && serde_json::from_str::<Value>(&body).is_ok_and(|s| {
                        s["regions"]
                            .as_array()
                            .is_some_and(|r| r.iter().all(|r| r["health"] == "up"))
                    })
            });
        if up {
            break;
        }
        assert!(Instant::now() < deadline, "demo not up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _load = traffic(
        listen,
        &[
            "",
            "8.8.8.8",
            "81.2.69.160",
            "1.0.16.1",
            "200.160.2.3",
            "41.0.0.1",
            "1.1.1.1",
        ],
    );
    let Some((mut b, _serial)) = open(&format!("http://{admin}/")) else {
        return;
    };
    b.wait_for("arcs from six continents", Duration::from_secs(20), |b| {
        let flows = eval_json(
            b,
            "[...new Set([...document.querySelectorAll('#arcs path.arc')].map(p => p.dataset.flow.split('>')[0]))].sort()",
        );
        flows == json!(["AF", "AS", "EU", "NA", "OC", "SA"])
    });
    // The demo's GeoDNS and mesh have sections of their own.
    let text = |b: &mut Browser, sel: &str| {
        b.eval(&format!(
            "document.querySelector(\"{sel}\")?.textContent ?? ''"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let geo = text(&mut b, "section[data-section*='continents answered from']");
    assert!(geo.contains("EU") && geo.contains("eu-west"), "{geo}");
    let mesh = text(&mut b, "section[data-section^='Mesh']");
    assert!(mesh.contains("eu-1") && mesh.contains("ap-1"), "{mesh}");
    // Each service with its pools' usable backends by region.
    let services = text(&mut b, "section[data-section='services']");
    assert!(
        services.contains("default") && services.contains("us-east 2/2"),
        "{services}"
    );
    // Let the rates settle over the page's window before a picture is taken.
    std::thread::sleep(Duration::from_secs(3));
    assert_no_errors(&mut b);
    if let Some(path) = std::env::var_os("MERIDIAN_SCREENSHOT") {
        b.screenshot(std::path::Path::new(&path));
    }
}
