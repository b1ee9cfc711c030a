//! Routes: a request's host and path → the service that serves it.
//!
//! The most specific host wins: an exact name, then wildcards (`*.example.com` matches any
//! name ending in `.example.com`, the longest suffix first), then routes for any host;
//! within a host, the longest path prefix that matches. A host whose routes match none of
//! the path falls through to the less specific ones, and a request no route matches goes
//! to the default service, if there is one. Prefixes match whole segments: `/api` matches
//! `/api`, `/api/v1` and not `/apix` (a prefix ending in `/` matches what starts with it).
//! Host names compare case-insensitively, without a port or a trailing dot. A lookup hashes
//! the host and its suffixes and binary-searches sorted tables: it never allocates.

use meridian_config::{Config, HostPattern};

/// One path prefix and the service it routes to.
#[derive(Debug, Clone)]
struct PathRoute {
    prefix: Box<str>,
    service: u16,
}

/// The routes of one host name (exact, or a wildcard's suffix), longest prefix first.
#[derive(Debug, Clone)]
struct HostRoutes {
    hash: u64,
    name: Box<str>,
    routes: Vec<PathRoute>,
}

/// Every route of a snapshot, precomputed for lookup.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Exact host names, sorted by hash.
    exact: Vec<HostRoutes>,
    /// Wildcard suffixes (`example.com` for `*.example.com`), sorted by hash.
    wildcard: Vec<HostRoutes>,
    /// Routes for any host, longest prefix first.
    any: Vec<PathRoute>,
    /// The service of requests no route matches.
    default: Option<u16>,
    /// The one service every request goes to, whatever its host and path.
    single: Option<u16>,
}

/// FNV-1a of `s` in ASCII lower case.
fn hash_ci(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `path` is under `prefix`, segment-wise.
fn under(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The host of an authority (`Host` header or URI authority): no port, no trailing dot.
pub fn host_only(authority: &str) -> &str {
    let a = authority.trim();
    let host = match a.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        },
    };
    host.strip_suffix('.').unwrap_or(host)
}

fn first_match(routes: &[PathRoute], path: &str) -> Option<u16> {
    routes
        .iter()
        .find(|r| under(&r.prefix, path))
        .map(|r| r.service)
}

/// The entries of `table` named `name` (several only on a hash collision).
fn find<'a>(table: &'a [HostRoutes], name: &'a str) -> impl Iterator<Item = &'a HostRoutes> {
    let h = hash_ci(name);
    let start = table.partition_point(|e| e.hash < h);
    table[start..]
        .iter()
        .take_while(move |e| e.hash == h)
        .filter(move |e| e.name.eq_ignore_ascii_case(name))
}

fn insert(table: &mut Vec<HostRoutes>, name: &str, route: PathRoute) {
    match table.iter_mut().find(|e| &*e.name == name) {
        Some(e) => e.routes.push(route),
        None => table.push(HostRoutes {
            hash: hash_ci(name),
            name: name.into(),
            routes: vec![route],
        }),
    }
}

fn longest_first(routes: &mut [PathRoute]) {
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
}

impl RouteTable {
    /// The table of `config`'s services (by index).
    pub fn build(config: &Config) -> RouteTable {
        let mut t = RouteTable::default();
        for (i, s) in config.services.iter().enumerate() {
            let service = u16::try_from(i).unwrap_or(u16::MAX);
            if s.default && t.default.is_none() {
                t.default = Some(service);
            }
            for path in &s.paths {
                let route = || PathRoute {
                    prefix: path.as_str().into(),
                    service,
                };
                if s.hosts.is_empty() {
                    t.any.push(route());
                }
                for h in &s.hosts {
                    match h {
                        HostPattern::Exact(name) => insert(&mut t.exact, name, route()),
                        HostPattern::Wildcard(suffix) => insert(&mut t.wildcard, suffix, route()),
                    }
                }
            }
        }
        for table in [&mut t.exact, &mut t.wildcard] {
            for e in table.iter_mut() {
                longest_first(&mut e.routes);
            }
            table.sort_by_key(|e| e.hash);
        }
        longest_first(&mut t.any);
        let one = t.exact.is_empty() && t.wildcard.is_empty() && t.any.len() == 1;
        t.single = t
            .any
            .first()
            .filter(|r| one && &*r.prefix == "/")
            .map(|r| r.service);
        t
    }

    /// The service (index) of a request to `host` (an authority: a port is ignored;
    /// `None` without one) and `path`; `None`: no route and no default service.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<u16> {
        if self.single.is_some() {
            return self.single;
        }
        if let Some(host) = host.map(host_only).filter(|h| !h.is_empty()) {
            for e in find(&self.exact, host) {
                if let Some(s) = first_match(&e.routes, path) {
                    return Some(s);
                }
            }
            if !self.wildcard.is_empty() {
                // Suffixes after each dot, longest first.
                let dots = host.bytes().enumerate().filter(|(_, b)| *b == b'.');
                for (i, _) in dots {
                    let suffix = &host[i + 1..];
                    for e in find(&self.wildcard, suffix) {
                        if let Some(s) = first_match(&e.routes, path) {
                            return Some(s);
                        }
                    }
                }
            }
        }
        first_match(&self.any, path).or(self.default)
    }

    /// The one service every request goes to whatever its host and path (a file without
    /// services), if there is one: a lookup then costs nothing.
    pub fn single(&self) -> Option<u16> {
        self.single
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(services: &str) -> RouteTable {
        let text = format!(
            "[node]\nregion = \"a\"\n[regions.a]\nlatitude = 1.0\nlongitude = 2.0\n{services}"
        );
        let config = meridian_config::parse(&text, "t.toml", None).expect("valid");
        RouteTable::build(&config)
    }

    fn service(name: &str, port: u16, routes: &str) -> String {
        format!(
            "[services.{name}]\n{routes}\n[services.{name}.regions.a]\nbackends = [{{ address = \"127.0.0.1:{port}\" }}]\n"
        )
    }

    #[test]
    fn exact_then_wildcard_then_any_host_then_longest_prefix() {
        let t = table(
            &[
                service("api", 1, "hosts = [\"api.example.com\"]"),
                service("v2", 2, "hosts = [\"api.example.com\"]\npaths = [\"/v2\"]"),
                service("wild", 3, "hosts = [\"*.example.com\"]"),
                service(
                    "deep",
                    4,
                    "hosts = [\"*.eu.example.com\"]\npaths = [\"/eu\"]",
                ),
                service("static", 5, "paths = [\"/static/\"]"),
            ]
            .concat(),
        );
        let r = |h: &str, p: &str| t.route(Some(h), p);
        assert_eq!(r("api.example.com", "/"), Some(0));
        assert_eq!(r("API.Example.COM:8443", "/v2/users"), Some(1));
        assert_eq!(r("api.example.com.", "/v2"), Some(1));
        assert_eq!(r("api.example.com", "/v20"), Some(0), "whole segments only");
        assert_eq!(r("www.example.com", "/x"), Some(2));
        assert_eq!(r("a.b.example.com", "/x"), Some(2), "any depth");
        assert_eq!(r("x.eu.example.com", "/eu/1"), Some(3), "longest suffix");
        assert_eq!(r("x.eu.example.com", "/other"), Some(2), "falls through");
        assert_eq!(r("example.com", "/static/app.js"), Some(4));
        assert_eq!(r("example.com", "/"), None, "no route, no default");
        assert_eq!(t.route(None, "/static/x"), Some(4));
        assert_eq!(t.single(), None);
    }

    #[test]
    fn the_default_service_takes_what_nothing_else_matches() {
        let t = table(
            &[
                service("api", 1, "hosts = [\"api.example.com\"]"),
                service("web", 2, "hosts = [\"www.example.com\"]\ndefault = true"),
            ]
            .concat(),
        );
        assert_eq!(t.route(Some("api.example.com"), "/"), Some(0));
        assert_eq!(t.route(Some("unknown.test"), "/"), Some(1));
        assert_eq!(t.route(None, "/"), Some(1));
    }

    #[test]
    fn a_file_without_services_has_one_route_for_everything() {
        let t = table("backends = [{ address = \"127.0.0.1:1\" }]\n");
        assert_eq!(t.single(), Some(0));
        assert_eq!(t.route(Some("anything"), "/x"), Some(0));
        assert_eq!(host_only("[::1]:80"), "::1");
        assert_eq!(host_only("Example.com:80"), "Example.com");
    }
}
