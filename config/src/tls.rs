//! Validation of the TLS settings: `[[listeners.https]]` with their certificates,
//! `listeners.redirect_http`, `listeners.hsts` and `[regions.NAME.tls]`.
//!
//! Certificate and key files are read and parsed here (so `meridian check` and a reload
//! reject a broken or mismatched pair before anything is swapped); the model carries the
//! DER, so a reload that re-reads renewed files yields a different config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::{CertificateFile, HttpsFile, UpstreamTlsFile, S};
use crate::model::{ClientCertificate, HttpsListener, PrivateKey, ServerCertificate, UpstreamTls};

/// A path as written, resolved against the config file's directory.
pub(crate) fn resolve(base_dir: Option<&Path>, written: &str) -> PathBuf {
    let written = Path::new(written);
    match base_dir {
        Some(base) if written.is_relative() => base.join(written),
        _ => written.to_path_buf(),
    }
}

const RELATIVE_HINT: &str = "relative paths are resolved against the config file's directory";

/// Reads every certificate of a PEM file; each must parse as X.509.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let bytes = std::fs::read(path).map_err(|e| {
        Problem::hinted(
            format!("cannot read {}: {e}", path.display()),
            RELATIVE_HINT,
        )
    })?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let der = item
            .map_err(|e| Problem::from(format!("{}: bad PEM certificate: {e}", path.display())))?;
        if let Err(e) = x509_parser::parse_x509_certificate(der.as_ref()) {
            return Err(format!("{}: not a valid X.509 certificate: {e}", path.display()).into());
        }
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(Problem::hinted(
            format!("{}: no certificate found", path.display()),
            "expected PEM blocks starting with -----BEGIN CERTIFICATE-----",
        ));
    }
    Ok(chain)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_key(path: &Path) -> Result<PrivateKey, Problem> {
    let bytes = std::fs::read(path).map_err(|e| {
        Problem::hinted(
            format!("cannot read {}: {e}", path.display()),
            RELATIVE_HINT,
        )
    })?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        Problem::hinted(
            format!("{}: no usable private key: {e}", path.display()),
            "expected a PEM block such as -----BEGIN PRIVATE KEY-----",
        )
    })?;
    Ok(PrivateKey(Arc::new(key)))
}

/// Checks that `key` is usable and belongs to the leaf of `chain`.
fn key_matches(chain: &[CertificateDer<'static>], key: &PrivateKey) -> Result<(), Problem> {
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.to_vec(), key.der().clone_key(), &provider)
        .map(|_| ())
        .map_err(|e| {
            Problem::hinted(
                format!("the key does not fit the certificate: {e}"),
                "check that key and cert are the same pair (leaf certificate first in cert)",
            )
        })
}

/// The DNS names of a leaf certificate (subject alternative names, else the common name).
fn cert_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Vec::new();
    };
    let mut names = san_dns_names(&cert);
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// The DNS subject alternative names of a certificate, lower-case, without a final dot:
/// the names TLS clients check (they ignore the common name when there are SANs, and
/// modern ones always do).
fn san_dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a certificate name (`san`, possibly a wildcard) covers the server name `name`
/// (both lower-case), as a TLS client decides it: equal names, or a wildcard `*.d` for a
/// name of exactly one more label than `d`. A wildcard `name` is covered only by the same
/// wildcard.
pub(crate) fn covers(san: &str, name: &str) -> bool {
    if san == name {
        return true;
    }
    match san.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && !name.starts_with("*.") => name
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        _ => false,
    }
}

/// Checks that the certificate `leaf` covers the configured server `name`.
fn covered_by(leaf: &CertificateDer<'_>, name: &str) -> Result<(), Problem> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        // `read_chain` parsed it already; nothing to add.
        return Ok(());
    };
    let sans = san_dns_names(&cert);
    if sans.iter().any(|san| covers(san, name)) {
        return Ok(());
    }
    let message = if sans.is_empty() {
        format!(
            "the certificate does not cover \"{name}\": it has no DNS names (subject alternative names); clients ignore its common name"
        )
    } else {
        format!(
            "the certificate does not cover \"{name}\"; its DNS names are: {}",
            sans.join(", ")
        )
    };
    Err(Problem::hinted(
        message,
        "list only names the certificate is valid for, or leave out `names` to use the certificate's own",
    ))
}

/// Validates `[[listeners.https]]`; `taken` holds the addresses already in use.
pub(crate) fn https_listeners(
    cx: &mut Cx<'_>,
    list: Option<&S<Vec<S<HttpsFile>>>>,
    taken: &mut Vec<SocketAddr>,
) -> Vec<HttpsListener> {
    let Some(list) = list else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let at = format!("listeners.https[{i}]");
        let file = entry.get_ref();
        let address = match &file.address {
            None => {
                cx.missing(Some(entry.span()), &format!("{at}.address"), None);
                None
            }
            Some(a) => {
                let field = format!("{at}.address");
                match cx.check(a, &field, |a| checks::socket_addr(a)) {
                    Some(addr) if taken.contains(&addr) => {
                        cx.bad(a, &field, format!("duplicate listener {addr}"));
                        None
                    }
                    Some(addr) => {
                        taken.push(addr);
                        Some(addr)
                    }
                    None => None,
                }
            }
        };
        let certificates = certificates(cx, file, entry, &at);
        if let (Some(address), Some(certificates)) = (address, certificates) {
            out.push(HttpsListener {
                address,
                certificates,
                proxy_protocol: file.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()),
            });
        }
    }
    out
}

fn certificates(
    cx: &mut Cx<'_>,
    file: &HttpsFile,
    entry: &S<HttpsFile>,
    at: &str,
) -> Option<Vec<ServerCertificate>> {
    let field = format!("{at}.certificates");
    let list = match &file.certificates {
        None => {
            cx.missing(
                Some(entry.span()),
                &field,
                Some("add certificates = [{ cert = \"cert.pem\", key = \"key.pem\" }]".into()),
            );
            return None;
        }
        Some(list) if list.get_ref().is_empty() => {
            cx.bad(list, &field, "at least one certificate is required");
            return None;
        }
        Some(list) => list,
    };
    let errors_before = cx.errors.len();
    let mut out = Vec::new();
    let mut default_at: Option<usize> = None;
    for (i, c) in list.get_ref().iter().enumerate() {
        let at = format!("{field}[{i}]");
        if let Some(cert) = server_certificate(cx, c, &at) {
            if cert.default {
                if let (Some(first), Some(d)) = (default_at, &c.get_ref().default) {
                    cx.bad(
                        d,
                        &format!("{at}.default"),
                        format!(
                            "only one certificate may be the default; {field}[{first}] already is"
                        ),
                    );
                }
                default_at.get_or_insert(out.len());
            }
            out.push(cert);
        }
    }
    if cx.errors.len() > errors_before {
        return None;
    }
    if default_at.is_none() {
        if let Some(first) = out.first_mut() {
            first.default = true;
        }
    }
    Some(out)
}

pub(crate) fn server_certificate(
    cx: &mut Cx<'_>,
    entry: &S<CertificateFile>,
    at: &str,
) -> Option<ServerCertificate> {
    let file = entry.get_ref();
    let pair = cert_and_key(cx, entry.span(), &file.cert, &file.key, at, "cert", "key")?;
    let (cert_file, key_file, chain, key) = pair;
    let leaf = chain.first()?;
    let names = match &file.names {
        Some(list) => {
            let mut names = Vec::new();
            for (i, n) in list.get_ref().iter().enumerate() {
                let name = cx.check(n, &format!("{at}.names[{i}]"), |n| {
                    if n.parse::<std::net::IpAddr>().is_ok() {
                        return Err(Problem::hinted(
                            format!("\"{n}\" is an IP address; SNI carries only host names"),
                            "clients that connect by IP address send no SNI and get the default certificate",
                        ));
                    }
                    let name = checks::server_name(n)?;
                    covered_by(leaf, &name)?;
                    Ok(name)
                });
                names.extend(name);
            }
            names
        }
        None => cert_names(leaf),
    };
    Some(ServerCertificate {
        cert_file,
        key_file,
        names,
        default: file.default.as_ref().is_some_and(|d| *d.get_ref()),
        chain,
        key,
    })
}

type Pair = (PathBuf, PathBuf, Vec<CertificateDer<'static>>, PrivateKey);

/// Reads a cert/key pair named by two keys of one table and checks that they match.
fn cert_and_key(
    cx: &mut Cx<'_>,
    table: std::ops::Range<usize>,
    cert: &Option<S<String>>,
    key: &Option<S<String>>,
    at: &str,
    cert_key: &str,
    key_key: &str,
) -> Option<Pair> {
    let base = cx.base_dir.clone();
    let cert_field = format!("{at}.{cert_key}");
    let key_field = format!("{at}.{key_key}");
    let chain = match cert {
        None => {
            cx.missing(Some(table.clone()), &cert_field, None);
            None
        }
        Some(c) => {
            let path = resolve(base.as_deref(), c.get_ref());
            cx.check(c, &cert_field, |_| read_chain(&path))
                .map(|chain| (path, chain))
        }
    };
    let private = match key {
        None => {
            cx.missing(Some(table), &key_field, None);
            None
        }
        Some(k) => {
            let path = resolve(base.as_deref(), k.get_ref());
            cx.check(k, &key_field, |_| read_key(&path))
                .map(|key| (path, key))
        }
    };
    let ((cert_file, chain), (key_file, private)) = chain.zip(private)?;
    if let Some(k) = key {
        cx.check(k, &key_field, |_| key_matches(&chain, &private))?;
    }
    Some((cert_file, key_file, chain, private))
}

/// Validates `listeners.redirect_http`.
pub(crate) fn redirect_listeners(
    cx: &mut Cx<'_>,
    list: Option<&S<Vec<S<String>>>>,
    have_https: bool,
    taken: &mut Vec<SocketAddr>,
) -> Vec<SocketAddr> {
    let Some(list) = list else {
        return Vec::new();
    };
    if !have_https && !list.get_ref().is_empty() {
        cx.bad(
            list,
            "listeners.redirect_http",
            Problem::hinted(
                "redirect_http needs an HTTPS listener to redirect to",
                "add a [[listeners.https]] table",
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let field = format!("listeners.redirect_http[{i}]");
        let Some(addr) = cx.check(entry, &field, |a| checks::socket_addr(a)) else {
            continue;
        };
        if taken.contains(&addr) {
            cx.bad(entry, &field, format!("duplicate listener {addr}"));
        } else {
            taken.push(addr);
            out.push(addr);
        }
    }
    out
}

/// Validates `listeners.hsts`: a duration (→ `max-age=SECONDS`) or a header value
/// starting with `max-age=`.
pub(crate) fn hsts(cx: &mut Cx<'_>, value: Option<&S<String>>, have_https: bool) -> Option<String> {
    let value = value?;
    if !have_https {
        cx.bad(
            value,
            "listeners.hsts",
            "hsts is only sent over HTTPS: add a [[listeners.https]] table",
        );
        return None;
    }
    cx.check(value, "listeners.hsts", |text| {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("max-age=") {
            let secs = rest.split(';').next().unwrap_or("").trim();
            if !secs.is_empty()
                && secs.chars().all(|c| c.is_ascii_digit())
                && text.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            {
                return Ok(text.to_owned());
            }
            return Err(Problem::hinted(
                format!("invalid HSTS value \"{text}\""),
                "e.g. \"max-age=31536000; includeSubDomains\" or a duration such as \"365d\"",
            ));
        }
        let d = checks::duration(text).map_err(|p| {
            Problem::hinted(
                p.message,
                "give a duration such as \"365d\" or a header value such as \"max-age=31536000\"",
            )
        })?;
        Ok(format!("max-age={}", d.as_secs()))
    })
}

/// Validates `[regions.NAME.tls]`; `None` when absent or `enabled = false`.
pub(crate) fn upstream_tls(
    cx: &mut Cx<'_>,
    file: Option<&UpstreamTlsFile>,
    key: Option<std::ops::Range<usize>>,
    prefix: &str,
) -> Option<UpstreamTls> {
    let file = file?;
    if file.enabled == Some(false) {
        return None;
    }
    let at = format!("{prefix}.tls");
    let base = cx.base_dir.clone();
    let sni = file.sni.as_ref().and_then(|s| {
        cx.check(s, &format!("{at}.sni"), |s| {
            if s.parse::<std::net::IpAddr>().is_ok() {
                Ok(s.clone())
            } else if s.starts_with('*') {
                Err("sni must be a concrete name, not a wildcard".into())
            } else {
                checks::server_name(s)
            }
        })
    });
    let ca = file.ca_file.as_ref().and_then(|c| {
        let path = resolve(base.as_deref(), c.get_ref());
        cx.check(c, &format!("{at}.ca_file"), |_| read_chain(&path))
            .map(|ca| (path, ca))
    });
    let client_cert = match (&file.client_cert, &file.client_key) {
        (None, None) => None,
        _ => {
            let table = file
                .client_cert
                .as_ref()
                .or(file.client_key.as_ref())
                .map(|s| s.span())
                .or(key)
                .unwrap_or(0..0);
            cert_and_key(
                cx,
                table,
                &file.client_cert,
                &file.client_key,
                &at,
                "client_cert",
                "client_key",
            )
            .map(|(cert_file, key_file, chain, key)| ClientCertificate {
                cert_file,
                key_file,
                chain,
                key,
            })
        }
    };
    let insecure = file.insecure_skip_verify.unwrap_or(false);
    let (ca_file, ca) = match ca {
        Some((p, c)) => (Some(p), c),
        None => (None, Vec::new()),
    };
    Some(UpstreamTls {
        sni,
        ca_file,
        ca,
        client_cert,
        insecure_skip_verify: insecure,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
