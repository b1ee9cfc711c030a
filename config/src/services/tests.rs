//! Services: what a pool inherits (region → service → pool), the implicit service of the
//! regions' backends, routes and sticky settings.

use std::time::Duration;

use crate::model::{Balance, DrainingSessions, HashKey, HostPattern, ProbeKind, SameSite};
use crate::parse;

const REGIONS: &str = r#"
[node]
region = "a"

[health_check]
interval = "5s"

[regions.a]
latitude = 1.0
longitude = 2.0
balance = "least_connections"
slow_start = "30s"
health_check = { path = "/ready" }

[regions.b]
latitude = 3.0
longitude = 4.0
"#;

#[test]
fn pools_inherit_region_then_service_then_their_own_keys() {
    let text = format!(
        r#"{REGIONS}
[services.api]
hosts = ["api.example.com", "*.api.example.com"]
paths = ["/v1"]
health_check = {{ timeout = "2s" }}
[services.api.regions.a]
backends = [{{ address = "127.0.0.1:1" }}]
[services.api.regions.b]
balance = "consistent_hash"
hash_key = "header:X-User"
slow_start = "0s"
health_check = {{ path = "/b" }}
backends = [{{ address = "127.0.0.1:2" }}]

[services.web]
sticky = {{ cookie = "w", draining = "move", same_site = "strict", max_age = "1d" }}
[services.web.regions.b]
backends = [{{ address = "127.0.0.1:3" }}]
"#
    );
    let c = parse(&text, "m.toml", None).unwrap();
    assert_eq!(
        c.services.len(),
        2,
        "no implicit service: no region lists backends"
    );
    let api = &c.services[0];
    assert_eq!(
        api.hosts,
        [
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Wildcard("api.example.com".into())
        ]
    );
    assert_eq!(api.paths, ["/v1"]);
    let (a, b) = (&api.pools[0], &api.pools[1]);
    assert_eq!((a.region, b.region), (0, 1));
    // Region a's own keys, the global and the service's health check merged key by key.
    assert_eq!(a.balance, Balance::LeastConnections);
    assert_eq!(a.slow_start, Some(Duration::from_secs(30)));
    assert_eq!(a.health.interval, Duration::from_secs(5));
    assert_eq!(a.health.timeout, Duration::from_secs(2));
    assert!(matches!(&a.health.kind, ProbeKind::Http { path, .. } if path == "/ready"));
    // The pool's own keys win.
    assert_eq!(
        b.balance,
        Balance::ConsistentHash(HashKey::Header("x-user".into()))
    );
    assert_eq!(b.slow_start, None, "0s turns slow start off");
    assert!(matches!(&b.health.kind, ProbeKind::Http { path, .. } if path == "/b"));
    assert_eq!(b.health.timeout, Duration::from_secs(2));
    let web = &c.services[1];
    assert!(web.hosts.is_empty() && web.paths == ["/"]);
    let sticky = web.sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie, "w");
    assert_eq!(sticky.draining, DrainingSessions::Move);
    assert_eq!(sticky.same_site, Some(SameSite::Strict));
    assert_eq!(sticky.max_age, Some(Duration::from_secs(86_400)));
    assert!(api.sticky.is_none());
    assert_eq!(c.backends().count(), 3);
}

#[test]
fn region_backends_stay_the_implicit_service_beside_explicit_ones() {
    let text = r#"
[node]
region = "a"

[sticky]
secure = true

[regions.a]
latitude = 1.0
longitude = 2.0
backends = [{ address = "127.0.0.1:1" }]

[regions.b]
latitude = 3.0
longitude = 4.0

[regions.c]
latitude = 5.0
longitude = 6.0
backends = [{ address = "127.0.0.1:3" }]

[services.api]
hosts = ["api.example.com"]
sticky = { enabled = false }
[services.api.regions.b]
backends = [{ address = "127.0.0.1:2" }]
"#;
    let c = parse(text, "m.toml", None).unwrap();
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", "api"]);
    let implicit = &c.services[0];
    assert!(implicit.implicit && implicit.hosts.is_empty());
    // Regions a and c list backends; b only serves api.
    let regions: Vec<usize> = implicit.pools.iter().map(|p| p.region).collect();
    assert_eq!(regions, [0, 2]);
    let sticky = implicit.sticky.as_ref().unwrap();
    assert_eq!(
        (sticky.cookie.as_str(), sticky.secure),
        ("meridian_default", Some(true))
    );
    assert!(c.services[1].sticky.is_none(), "enabled = false wins");
}
