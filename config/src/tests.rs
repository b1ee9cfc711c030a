//! Happy-path tests: a file with every key, and a minimal file getting all defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[node]
region = "a"

[regions.a]
latitude = 1.5
longitude = -2
backends = [{ address = "127.0.0.1:8080" }]
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn default_health() -> HealthCheck {
    HealthCheck {
        kind: ProbeKind::Http {
            path: "/healthz".to_owned(),
            host: None,
            expect: 200..=399,
        },
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
    }
}

#[test]
fn minimal_file_gets_all_defaults() {
    let config = parse(MINIMAL, "minimal.toml", None).unwrap();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(1024);
    let expected = Config {
        source: None,
        node: Node {
            region: "a".to_owned(),
            name: "meridian-a".to_owned(),
        },
        listeners: Listeners {
            http: vec![addr("0.0.0.0:8080")],
            admin: addr("127.0.0.1:9901"),
            proxy_protocol: false,
            https: vec![],
            redirect_http: vec![],
            hsts: None,
            preserve_header_case: false,
        },
        threads,
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            downstream_idle: Duration::from_secs(60),
            first_byte: Duration::from_secs(10),
            request_header: Duration::from_secs(10),
            client_write: Duration::from_secs(60),
            h2_idle: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(60),
        },
        logging: Logging {
            level: "info".to_owned(),
            format: LogFormat::Text,
            access_log: true,
        },
        regions: vec![Region {
            name: "a".to_owned(),
            latitude: 1.5,
            longitude: -2.0,
            backends: vec![Backend {
                address: BackendAddress::Static(addr("127.0.0.1:8080")),
                weight: 1,
                backup: false,
            }],
            balance: Balance::P2cPeakEwma,
            health: default_health(),
            tls: None,
            upstream: Upstream::default(),
            slow_start: None,
            instances: vec![],
            reach: Reach::Backends,
        }],
        geoip: GeoIp {
            database: None,
            overrides: vec![],
        },
        client: ClientIdentity {
            trusted_proxies: vec![],
        },
        steering: Steering {
            policy: SteeringPolicy::Default,
            countries: BTreeMap::new(),
            continents: BTreeMap::new(),
            order: vec![],
            residency_countries: BTreeMap::new(),
            residency_continents: BTreeMap::new(),
            expose_headers: false,
        },
        latency: Latency {
            decay: Duration::from_secs(10),
            tolerance: Duration::from_millis(20),
            rtt_per_100km: Duration::from_millis(1),
            rtt_base: Duration::from_millis(2),
        },
        outlier: Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            panic_threshold: None,
            max_ejection_percent: 100,
        },
        retry: Retry {
            attempts: 2,
            retry_after: Duration::from_secs(5),
            budget_percent: 20,
            min_per_second: 10,
            grpc_on: vec![14],
            grpc_idempotent: vec![],
        },
        reload: Reload {
            watch: true,
            debounce: Duration::from_millis(500),
        },
        dns: Dns {
            nameservers: vec![],
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
            allow_loopback: false,
        },
        limits: Limits {
            max_header_size: 32 * 1024,
            max_body_size: Some(1 << 30),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_requests_per_connection: 1_000,
            max_concurrent_streams: 128,
            max_inflight: 10_000,
            max_memory: None,
        },
        admin: Admin::default(),
        mesh: Mesh {
            secret: None,
            tls: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            rise: 2,
            fall: 3,
        },
        geodns: GeoDns::default(),
        services: vec![Service {
            name: "default".to_owned(),
            hosts: vec![],
            paths: vec!["/".to_owned()],
            default: false,
            implicit: true,
            pools: vec![Pool {
                region: 0,
                backends: vec![Backend {
                    address: BackendAddress::Static(addr("127.0.0.1:8080")),
                    weight: 1,
                    backup: false,
                }],
                balance: Balance::P2cPeakEwma,
                health: default_health(),
                tls: None,
                upstream: Upstream::default(),
                slow_start: None,
            }],
            sticky: None,
        }],
    };
    assert_eq!(config, expected);
    assert_eq!(config.local_region_index(), 0);
}

const FULL: &str = r#"
threads = 4

[node]
region = "eu-west"
name = "edge-1"

[listeners]
http = ["0.0.0.0:80", "[::]:8080"]
admin = "127.0.0.1:9000"

[timeouts]
connect = "1s"
read = "10s"
write = "11s"
idle = "90s"
downstream_idle = "2m"

[logging]
level = "meridian=debug,info"
format = "json"
access_log = false

[health_check]
kind = "http"
path = "/ready"
host = "api.internal"
expect_status = "200-299"
interval = "5s"
timeout = "2s"
rise = 3
fall = 4

[regions.us-east]
latitude = 39.04
longitude = -77.49
balance = "consistent_hash"
hash_key = "header:X-User-Id"
backends = [
  { address = "10.0.1.10:8080", weight = 2 },
  { address = "10.0.1.11:8080" },
]
[regions.us-east.health_check]
kind = "tcp"
timeout = "3s"

[regions.eu-west]
latitude = 53.35
longitude = -6.26
balance = "least_connections"
[[regions.eu-west.backends]]
address = "[2001:db8::1]:8080"
weight = 1000
[regions.eu-west.health_check]
expect_status = 204
rise = 1

[regions.ap-southeast]
latitude = 1.29
longitude = 103.85
balance = "weighted"
backends = [{ address = "10.0.3.10:8080" }]

[geoip]
database = "GeoLite2-City.mmdb"
[[geoip.overrides]]
cidr = "10.0.0.0/8"
country = "de"
latitude = 50.1
longitude = 8.7
[[geoip.overrides]]
cidr = "192.0.2.7"
country = "US"

[client]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]

[steering]
policy = "failover"
order = ["eu-west", "us-east"]
expose_headers = true
[steering.countries]
DE = ["eu-west", "us-east"]
sg = ["ap-southeast"]
[steering.continents]
EU = ["eu-west"]
na = ["us-east"]

[residency]
countries = { DE = ["eu-west"], FR = ["eu-west"] }
continents = { EU = ["eu-west"] }

[latency]
decay = "30s"
tolerance = "5ms"
rtt_per_100km = "2ms"
rtt_base = "0s"

[outlier]
consecutive_failures = 7
base_ejection = "30s"
max_ejection = "10m"
panic_threshold = 40

[retry]
attempts = 0
retry_after = "10s"
budget_percent = 50
min_per_second = 3

[reload]
watch = false
debounce = "1s"
"#;

/// A scratch directory holding a stand-in GeoIP database file.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("GeoLite2-City.mmdb"), b"stand-in").unwrap();
    dir
}

#[test]
fn full_file_maps_every_key() {
    let dir = scratch_dir("full");
    let c = parse(FULL, "full.toml", Some(&dir)).unwrap();
    assert_eq!(c.threads, 4);
    assert_eq!(
        c.node,
        Node {
            region: "eu-west".to_owned(),
            name: "edge-1".to_owned()
        }
    );
    assert_eq!(c.local_region_index(), 1);
    assert_eq!(
        c.listeners.http,
        vec![addr("0.0.0.0:80"), addr("[::]:8080")]
    );
    assert_eq!(c.listeners.admin, addr("127.0.0.1:9000"));
    assert_eq!(
        c.timeouts,
        Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(10),
            write: Duration::from_secs(11),
            idle: Duration::from_secs(90),
            downstream_idle: Duration::from_secs(120),
            first_byte: Duration::from_secs(10),
            request_header: Duration::from_secs(10),
            client_write: Duration::from_secs(60),
            h2_idle: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(60),
        }
    );
    assert_eq!(
        c.logging,
        Logging {
            level: "meridian=debug,info".to_owned(),
            format: LogFormat::Json,
            access_log: false
        }
    );

    let names: Vec<&str> = c.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["us-east", "eu-west", "ap-southeast"], "file order");
    let us = &c.regions[0];
    assert_eq!((us.latitude, us.longitude), (39.04, -77.49));
    assert_eq!(
        us.balance,
        Balance::ConsistentHash(HashKey::Header("x-user-id".to_owned()))
    );
    assert_eq!(
        us.backends,
        vec![
            Backend {
                address: BackendAddress::Static(addr("10.0.1.10:8080")),
                weight: 2,
                backup: false,
            },
            Backend {
                address: BackendAddress::Static(addr("10.0.1.11:8080")),
                weight: 1,
                backup: false,
            },
        ]
    );
    let global_interval = Duration::from_secs(5);
    assert_eq!(
        us.health,
        HealthCheck {
            kind: ProbeKind::Tcp,
            interval: global_interval,
            timeout: Duration::from_secs(3),
            rise: 3,
            fall: 4,
        }
    );
    let eu = &c.regions[1];
    assert_eq!(eu.balance, Balance::LeastConnections);
    assert_eq!(
        eu.backends[0].address.as_static(),
        Some(addr("[2001:db8::1]:8080"))
    );
    assert_eq!(eu.backends[0].weight, 1000);
    assert_eq!(
        eu.health,
        HealthCheck {
            kind: ProbeKind::Http {
                path: "/ready".to_owned(),
                host: Some("api.internal".to_owned()),
                expect: 204..=204,
            },
            interval: global_interval,
            timeout: Duration::from_secs(2),
            rise: 1,
            fall: 4,
        }
    );
    assert_eq!(c.regions[2].balance, Balance::Weighted);

    assert_eq!(c.geoip.database, Some(dir.join("GeoLite2-City.mmdb")));
    assert_eq!(
        c.geoip.overrides,
        vec![
            GeoOverride {
                network: "10.0.0.0/8".parse().unwrap(),
                country: "DE".to_owned(),
                coordinates: Some((50.1, 8.7)),
            },
            GeoOverride {
                network: "192.0.2.7/32".parse().unwrap(),
                country: "US".to_owned(),
                coordinates: None,
            },
        ]
    );
    let proxies: Vec<String> = c
        .client
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(proxies, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);

    let map = |pairs: &[(&str, &[usize])]| -> BTreeMap<String, Vec<usize>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    };
    assert_eq!(
        c.steering,
        Steering {
            policy: SteeringPolicy::Failover,
            countries: map(&[("DE", &[1, 0]), ("SG", &[2])]),
            continents: map(&[("EU", &[1]), ("NA", &[0])]),
            order: vec![1, 0],
            residency_countries: map(&[("DE", &[1]), ("FR", &[1])]),
            residency_continents: map(&[("EU", &[1])]),
            expose_headers: true,
        }
    );
    assert_eq!(
        c.latency,
        Latency {
            decay: Duration::from_secs(30),
            tolerance: Duration::from_millis(5),
            rtt_per_100km: Duration::from_millis(2),
            rtt_base: Duration::ZERO,
        }
    );
    assert_eq!(
        c.outlier,
        Outlier {
            consecutive_failures: 7,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(600),
            panic_threshold: Some(40),
            max_ejection_percent: 100,
        }
    );
    assert_eq!(
        c.retry,
        Retry {
            attempts: 0,
            retry_after: Duration::from_secs(10),
            budget_percent: 50,
            min_per_second: 3,
            grpc_on: vec![14],
            grpc_idempotent: vec![],
        }
    );
    assert_eq!(
        c.reload,
        Reload {
            watch: false,
            debounce: Duration::from_secs(1)
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_sets_source_and_resolves_relative_to_the_file() {
    let dir = scratch_dir("load");
    let text = format!("{MINIMAL}\n[geoip]\ndatabase = \"GeoLite2-City.mmdb\"\n");
    let path = dir.join("meridian.toml");
    std::fs::write(&path, text).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(c.geoip.database, Some(dir.join("GeoLite2-City.mmdb")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_file_is_one_error_naming_the_path() {
    let errors = load(Path::new("/nonexistent/meridian.toml")).unwrap_err();
    assert_eq!(errors.len(), 1);
    let text = errors.to_string();
    assert!(
        text.starts_with("/nonexistent/meridian.toml: cannot read config file: "),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

#[test]
fn error_display_and_positions() {
    let text = "[node]\nregion = \"a\"\n[regions.a]\nlatitude = 1\nlongitude = 2\nbackends = [\n  { address = \"10.0.0.1:80\" },\n  { address = \"10.0.0.2:80\", weight = 0 },\n]\n";
    let errors = parse(text, "meridian.toml", None).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "meridian.toml:8:39: regions.a.backends[1].weight = 0: weight must be at least 1"
    );
    let e = &errors.errors[0];
    assert_eq!((e.line, e.column), (Some(8), Some(39)));
    assert_eq!(e.field.as_deref(), Some("regions.a.backends[1].weight"));
    assert_eq!(e.value.as_deref(), Some("0"));
}

#[test]
fn unknown_keys_get_hints() {
    let errors = parse("[listeners]\nhtpp = []\n", "m.toml", None).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "m.toml:2:1: listeners.htpp: unknown key `htpp` (hint: did you mean `http`?)"
    );
    let errors = parse("lisen = 1\n", "m.toml", None).unwrap_err();
    assert!(
        errors.to_string().contains("did you mean `listeners`?"),
        "{errors}"
    );
}

#[test]
fn type_errors_name_the_path() {
    let text = "[regions.a]\nbackends = [{ address = \"1.2.3.4:5\", weight = \"2\" }]\n";
    let errors = parse(text, "m.toml", None).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "m.toml:2:47: regions.a.backends[0].weight = \"2\": invalid type: string \"2\", expected an integer"
    );
}

#[test]
fn backup_backends_are_marked() {
    let text = "[node]\nregion = \"a\"\n[regions.a]\nlatitude = 1.0\nlongitude = 2.0\nbackends = [\n  { address = \"10.0.0.1:80\" },\n  { address = \"10.0.0.2:80\", backup = true },\n  { srv = \"_http._tcp.b.example\", backup = false },\n]\n";
    let config = parse(text, "m.toml", None).unwrap();
    let backup: Vec<bool> = config.regions[0]
        .backends
        .iter()
        .map(|b| b.backup)
        .collect();
    assert_eq!(backup, [false, true, false]);
}
