//! What a snapshot swap cannot apply: listeners, threads, logging setup and the node's
//! region need a restart or a graceful upgrade.

use meridian_config::Config;

/// What differs between `old` and `new` that a snapshot swap cannot apply.
pub fn unswappable(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listeners.http != new.listeners.http {
        out.push("listeners.http");
    }
    if old.listeners.proxy_protocol != new.listeners.proxy_protocol {
        out.push("listeners.proxy_protocol");
    }
    let https = |c: &Config| -> Vec<(std::net::SocketAddr, bool)> {
        c.listeners
            .https
            .iter()
            .map(|l| (l.address, l.proxy_protocol))
            .collect()
    };
    if https(old) != https(new) {
        out.push("listeners.https addresses or proxy_protocol");
    }
    if old.listeners.preserve_header_case != new.listeners.preserve_header_case {
        out.push("listeners.preserve_header_case");
    }
    if old.listeners.redirect_http != new.listeners.redirect_http {
        out.push("listeners.redirect_http");
    }
    if old.listeners.admin != new.listeners.admin {
        out.push("listeners.admin");
    }
    if old.threads != new.threads {
        out.push("threads");
    }
    if old.logging.level != new.logging.level || old.logging.format != new.logging.format {
        out.push("logging.level/format");
    }
    let (ot, nt) = (&old.timeouts, &new.timeouts);
    if (ot.first_byte, ot.request_header, ot.h2_idle)
        != (nt.first_byte, nt.request_header, nt.h2_idle)
    {
        out.push("timeouts.first_byte/request_header/h2_idle");
    }
    let (ol, nl) = (&old.limits, &new.limits);
    if (
        ol.max_header_size,
        ol.max_requests_per_connection,
        ol.max_concurrent_streams,
    ) != (
        nl.max_header_size,
        nl.max_requests_per_connection,
        nl.max_concurrent_streams,
    ) {
        out.push("limits.max_header_size/max_requests_per_connection/max_concurrent_streams");
    }
    if old.node.name != new.node.name {
        out.push("node.name");
    }
    if old.own_instance().map(|i| i.mesh) != new.own_instance().map(|i| i.mesh) {
        out.push("this instance's mesh address");
    }
    if old.mesh.secret != new.mesh.secret || old.mesh.tls != new.mesh.tls {
        out.push("mesh.secret/mesh.tls");
    }
    if old.node.region != new.node.region {
        out.push("node.region");
    }
    if (&old.geodns.listen, old.geodns.threads) != (&new.geodns.listen, new.geodns.threads) {
        out.push("geodns.listen/threads");
    }
    out
}
