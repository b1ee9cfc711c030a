//! The configs of the DNS discovery tests: the `[dns]` table pointing at the test server,
//! and a `local` region.

#![allow(dead_code)] // shared by several test crates, each using a part

use std::net::SocketAddr;

use crate::common::header;

/// The `[dns]` table: the test server, short TTL bounds by default; the test backends
/// live on loopback, which DNS answers may only name with `allow_loopback`.
pub fn dns_table(dns: SocketAddr, min_ttl: &str, max_ttl: &str, timeout: &str) -> String {
    format!(
        "\n[dns]\nnameservers = [\"{dns}\"]\nmin_ttl = \"{min_ttl}\"\nmax_ttl = \"{max_ttl}\"\ntimeout = \"{timeout}\"\nallow_loopback = true\n"
    )
}

/// A config with one listener pair, the test DNS server and `regions`.
pub fn config(listen: SocketAddr, admin: SocketAddr, dns: SocketAddr, regions: &str) -> String {
    let mut cfg = header("local", listen, admin);
    cfg.push_str(&dns_table(dns, "200ms", "1s", "500ms"));
    cfg.push_str(regions);
    cfg
}

/// A `local` region with the given backends table entries and balancing.
pub fn local_region(balance: &str, backends: &str) -> String {
    format!("\n[regions.local]\nlatitude = 50.0\nlongitude = 8.0\nbalance = \"{balance}\"\nbackends = [{backends}]\n")
}
