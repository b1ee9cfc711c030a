//! Upper bounds: values past them would break the proxy, so they are errors.

use std::fmt::Write;
use std::time::Duration;

use crate::parse;

const REGION: &str = "\
[node]
region = \"a\"

[regions.a]
latitude = 1.0
longitude = 2.0
backends = [{ address = \"10.0.0.1:80\" }]
";

/// The errors `parse` reports for `text`, one per line.
fn errors(text: &str) -> String {
    parse(text, "m.toml", None).unwrap_err().to_string()
}

#[test]
fn ejection_times_are_at_most_an_hour() {
    let text = format!("{REGION}\n[outlier]\nbase_ejection = \"61m\"\nmax_ejection = \"2h\"\n");
    assert_eq!(
        errors(&text),
        "\
m.toml:10:17: outlier.base_ejection = \"61m\": base_ejection must be at most 1h
m.toml:11:16: outlier.max_ejection = \"2h\": max_ejection must be at most 1h"
    );
    let text = format!("{REGION}\n[outlier]\nbase_ejection = \"1h\"\nmax_ejection = \"60m\"\n");
    let outlier = parse(&text, "m.toml", None).unwrap().outlier;
    assert_eq!(outlier.base_ejection, Duration::from_secs(3600));
    assert_eq!(outlier.max_ejection, Duration::from_secs(3600));
}

#[test]
fn probe_intervals_and_timeouts_are_at_most_an_hour() {
    let text = format!(
        "[health_check]\ninterval = \"2h\"\n\n{REGION}\n[regions.a.health_check]\ntimeout = \"3601s\"\n"
    );
    assert_eq!(
        errors(&text),
        "\
m.toml:2:12: health_check.interval = \"2h\": interval must be at most 1h
m.toml:13:11: regions.a.health_check.timeout = \"3601s\": timeout must be at most 1h"
    );
    let text = format!("{REGION}\n[health_check]\ninterval = \"1h\"\ntimeout = \"1h\"\n");
    let health = &parse(&text, "m.toml", None).unwrap().regions[0].health;
    assert_eq!(health.interval, Duration::from_secs(3600));
}

#[test]
fn dns_and_latency_bounds() {
    let text = format!(
        "{REGION}\n[dns]\nmin_ttl = \"2d\"\nmax_ttl = \"25h\"\ntimeout = \"61s\"\n\n[latency]\ndecay = \"1h 1s\"\n"
    );
    assert_eq!(
        errors(&text),
        "\
m.toml:10:11: dns.min_ttl = \"2d\": min_ttl must be at most 1day
m.toml:11:11: dns.max_ttl = \"25h\": max_ttl must be at most 1day
m.toml:12:11: dns.timeout = \"61s\": timeout must be at most 1m
m.toml:15:9: latency.decay = \"1h 1s\": decay must be at most 1h"
    );
    let text = format!(
        "{REGION}\n[dns]\nmin_ttl = \"1d\"\nmax_ttl = \"24h\"\ntimeout = \"1m\"\n\n[latency]\ndecay = \"1h\"\n"
    );
    assert!(parse(&text, "m.toml", None).is_ok());
}

/// A file with `regions` regions, each with one backend.
fn regions(regions: usize) -> String {
    let mut text = String::from("[node]\nregion = \"r0\"\n\n[regions]\n");
    for i in 0..regions {
        let (hi, lo) = (i / 256, i % 256);
        writeln!(
            text,
            "r{i} = {{ latitude = 0, longitude = 0, backends = [{{ address = \"10.0.{hi}.{lo}:80\" }}] }}"
        )
        .unwrap();
    }
    text
}

#[test]
fn at_most_1024_regions() {
    assert_eq!(
        parse(&regions(1024), "m.toml", None).unwrap().regions.len(),
        1024
    );
    assert_eq!(
        errors(&regions(1026)),
        "m.toml:1029:1: regions.r1024: too many regions: 1026 are defined, at most 1024 are supported"
    );
}

/// A file with one region of `backends` backends, one per line.
fn backends(backends: usize) -> String {
    let mut text = String::from(
        "[node]\nregion = \"a\"\n\n[regions.a]\nlatitude = 0\nlongitude = 0\nbackends = [\n",
    );
    for i in 0..backends {
        writeln!(text, "  {{ address = \"[::1]:{}\" }},", i + 1).unwrap();
    }
    text.push_str("]\n");
    text
}

#[test]
fn at_most_10000_backends_per_region() {
    let config = parse(&backends(10_000), "m.toml", None).unwrap();
    assert_eq!(config.regions[0].backends.len(), 10_000);
    assert_eq!(
        errors(&backends(10_002)),
        "m.toml:10008:3: regions.a.backends[10000]: too many backends: the region lists 10002, at most 10000 are supported"
    );
}
