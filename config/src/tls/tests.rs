//! Server names of HTTPS certificates: wildcards must not span a top-level domain, and
//! configured `names` must be covered by the certificate itself. Certificates are made
//! here with rcgen.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, KeyPair};

use super::covers;
use crate::parse;

/// A scratch directory for one test's certificate files.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("meridian-config-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `NAME.pem` and `NAME.key`: a self-signed certificate for `sans` (DNS names or
/// IPs) with common name `cn`.
fn certificate(dir: &Path, name: &str, sans: &[&str], cn: &str) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A config with one HTTPS listener serving `cert.pem` for `names` (a TOML array).
fn config(names: &str) -> String {
    format!(
        "\
[[listeners.https]]
address = \"127.0.0.1:8443\"
certificates = [{{ cert = \"cert.pem\", key = \"cert.key\", names = {names} }}]

[node]
region = \"a\"

[regions.a]
latitude = 1.0
longitude = 2.0
backends = [{{ address = \"10.0.0.1:80\" }}]
"
    )
}

#[test]
fn wildcards_cover_exactly_one_label() {
    assert!(covers("a.example.com", "a.example.com"));
    assert!(covers("*.example.com", "a.example.com"));
    assert!(covers("*.example.com", "*.example.com"));
    assert!(!covers("*.example.com", "a.b.example.com"));
    assert!(!covers("*.example.com", "example.com"));
    assert!(!covers("*.example.com", ".example.com"));
    assert!(!covers("*.b.example.com", "*.example.com"));
    assert!(!covers("a.example.com", "*.example.com"));
    assert!(!covers("a*.example.com", "ab.example.com"));
    assert!(!covers("example.com", "a.example.com"));
}

#[test]
fn names_the_certificate_covers_are_accepted() {
    let dir = scratch("covered");
    certificate(&dir, "cert", &["a.example.com", "*.b.example.com"], "a");
    let text = config("[\"A.Example.com\", \"x.b.example.com\", \"*.b.example.com\"]");
    let config = parse(&text, "m.toml", Some(&dir)).unwrap();
    assert_eq!(
        config.listeners.https[0].certificates[0].names,
        ["a.example.com", "x.b.example.com", "*.b.example.com"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn names_the_certificate_does_not_cover_are_errors() {
    let dir = scratch("uncovered");
    certificate(
        &dir,
        "cert",
        &["a.example.com", "*.b.example.com", "10.0.0.1"],
        "a",
    );
    let text = config(
        "[\n  \"a.example.com\",\n  \"example.com\",\n  \"y.x.b.example.com\",\n  \"*.example.com\",\n  \"10.0.0.1\",\n]",
    );
    let errors = parse(&text, "m.toml", Some(&dir)).unwrap_err();
    let at = "m.toml:{line}:3: listeners.https[0].certificates[0].names";
    let not_covered = |line: usize, i: usize, name: &str| {
        format!(
            "{}[{i}] = \"{name}\": the certificate does not cover \"{name}\"; its DNS names are: \
             a.example.com, *.b.example.com (hint: list only names the certificate is valid \
             for, or leave out `names` to use the certificate's own)",
            at.replace("{line}", &line.to_string())
        )
    };
    let expected = [
        not_covered(5, 1, "example.com"),
        not_covered(6, 2, "y.x.b.example.com"),
        not_covered(7, 3, "*.example.com"),
        format!(
            "{}[4] = \"10.0.0.1\": \"10.0.0.1\" is an IP address; SNI carries only host names \
             (hint: clients that connect by IP address send no SNI and get the default \
             certificate)",
            at.replace("{line}", "8")
        ),
    ];
    assert_eq!(errors.to_string(), expected.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_certificate_without_dns_names_covers_nothing() {
    let dir = scratch("no-san");
    certificate(&dir, "cert", &[], "cn.example.com");
    let errors = parse(&config("[\"cn.example.com\"]"), "m.toml", Some(&dir)).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "m.toml:3:65: listeners.https[0].certificates[0].names[0] = \"cn.example.com\": the \
         certificate does not cover \"cn.example.com\": it has no DNS names (subject \
         alternative names); clients ignore its common name (hint: list only names the \
         certificate is valid for, or leave out `names` to use the certificate's own)"
    );
    // Without `names`, the common name still serves as the certificate's name.
    let text = config("[]").replace(", names = []", "");
    let config = parse(&text, "m.toml", Some(&dir)).unwrap();
    assert_eq!(
        config.listeners.https[0].certificates[0].names,
        ["cn.example.com"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wildcards_under_a_top_level_domain_are_rejected() {
    let dir = scratch("tld");
    certificate(&dir, "cert", &["*.com"], "a");
    let mut text = config("[\"*.com\", \"*\"]");
    // Upstream SNI takes no wildcard at all.
    text.push_str("\n[regions.a.tls]\nsni = \"*.test\"\n");
    let errors = parse(&text, "m.toml", Some(&dir)).unwrap_err();
    let hint = "(hint: a wildcard needs at least two labels after \"*.\", e.g. \"*.example.com\")";
    assert_eq!(
        errors.to_string(),
        format!(
            "\
m.toml:3:65: listeners.https[0].certificates[0].names[0] = \"*.com\": wildcard \"*.com\" is \
directly under the top-level domain \"com\" and would match every name in it {hint}
m.toml:3:74: listeners.https[0].certificates[0].names[1] = \"*\": wildcard \"*\" would match \
every name {hint}
m.toml:14:7: regions.a.tls.sni = \"*.test\": sni must be a concrete name, not a wildcard"
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn proxy_protocol_is_per_https_listener_and_off_by_default() {
    let dir = scratch("proxy-protocol");
    certificate(&dir, "cert", &["a.example.com"], "a");
    let text = config("[\"a.example.com\"]");
    let config = parse(&text, "m.toml", Some(&dir)).unwrap();
    assert!(!config.listeners.https[0].proxy_protocol);
    let text = text.replace(
        "address = \"127.0.0.1:8443\"\n",
        "address = \"127.0.0.1:8443\"\nproxy_protocol = true\n",
    );
    // Nobody is trusted to send the header: every connection would be closed.
    let errors = parse(&text, "m.toml", Some(&dir)).unwrap_err().to_string();
    assert!(
        errors.starts_with("m.toml:3:18: listeners.https[0].proxy_protocol = true: the PROXY protocol is honoured only from client.trusted_proxies"),
        "{errors}"
    );
    let text = format!("{text}\n[client]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let config = parse(&text, "m.toml", Some(&dir)).unwrap();
    assert!(config.listeners.https[0].proxy_protocol);
    assert!(
        !config.listeners.proxy_protocol,
        "the http listeners' own switch"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
