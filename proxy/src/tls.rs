//! TLS, rustls only.
//!
//! - Downstream: every HTTPS listener gets a [`CertResolver`], a rustls
//!   `ResolvesServerCert` that picks a certificate by SNI (exact name, then `*.parent`
//!   wildcard, then the default) from a [`CertSet`] behind an `ArcSwap`. Pingora 0.9's
//!   `TlsSettings::set_cert_resolver` installs it in the listener's `ServerConfig`, so a
//!   reload swaps certificates atomically (new handshakes see the new set) without touching
//!   the listening sockets.
//! - Upstream: [`UpstreamPeerTls`] is a region's TLS settings in the form pingora's
//!   `HttpPeer` wants (per-peer CA, client `CertKey`), plus a rustls `ClientConfig` with the
//!   same trust for the health prober, built once per snapshot (and reused across snapshots
//!   while the region's TLS settings do not change).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::{CertificateDer, HttpsListener, UpstreamTls};
use pingora::tls::{ClientHello, ResolvesServerCert};
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Errors building TLS state from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate and key could not be turned into a signing certificate.
    #[error("{file}: {message}")]
    Certificate {
        /// The certificate file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// A client config for upstream TLS could not be built.
    #[error("regions.{region}.tls: {message}")]
    Upstream {
        /// The region.
        region: String,
        /// What went wrong.
        message: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of one HTTPS listener, indexed for SNI selection.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    /// Builds the set of `listener`'s certificates (first listed wins for a repeated name).
    pub fn build(listener: &HttpsListener) -> Result<CertSet, TlsError> {
        let provider = provider();
        let mut set = CertSet::default();
        for c in &listener.certificates {
            let key = CertifiedKey::from_der(c.chain.clone(), c.key.der().clone_key(), &provider)
                .map_err(|e| TlsError::Certificate {
                file: c.cert_file.display().to_string(),
                message: e.to_string(),
            })?;
            let key = Arc::new(key);
            for name in &c.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_string()),
                    None => set.exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
            if c.default && set.default.is_none() {
                set.default = Some(key);
            }
        }
        Ok(set)
    }

    /// The certificate for a client's SNI (exact, then wildcard, then the default).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = sni {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&sni) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = sni.split_once('.') {
                if let Some(k) = self.wildcard.get(parent) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

/// The SNI certificate resolver of one HTTPS listener; its set is swapped on reload.
#[derive(Debug, Default)]
pub struct CertResolver {
    set: ArcSwap<CertSet>,
}

impl CertResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> Self {
        CertResolver {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Replaces the certificates; handshakes that start afterwards use the new set.
    pub fn store(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.set.load().select(hello.server_name())
    }
}

/// Builds the certificate sets of every HTTPS listener of a config, in order.
pub fn cert_sets(listeners: &[HttpsListener]) -> Result<Vec<CertSet>, TlsError> {
    listeners.iter().map(CertSet::build).collect()
}

/// A region's upstream TLS, ready for `HttpPeer` and for the prober.
pub struct UpstreamPeerTls {
    /// The settings this was built from (to reuse it across snapshots).
    pub settings: UpstreamTls,
    /// Per-peer CA (the configured `ca_file`); `None` means the system roots.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate presented to backends.
    pub client_cert: Option<Arc<CertKey>>,
    /// Whether the backend's certificate is verified.
    pub verify: bool,
    /// The same trust as a rustls client config, for TLS health probes.
    pub probe_config: Arc<ClientConfig>,
    /// Keeps pooled upstream connections apart by trust anchor (`HttpPeer::group_key`):
    /// pingora's reuse hash covers SNI, client certificate and verification flags but not
    /// the CA, so without it a connection verified against one CA would be reused after a
    /// reload to another, or by a region that trusts a different CA.
    pub pool_key: u64,
}

impl std::fmt::Debug for UpstreamPeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPeerTls")
            .field("sni", &self.settings.sni)
            .field("verify", &self.verify)
            .finish()
    }
}

fn wrap(der: &CertificateDer<'_>) -> WrappedX509 {
    WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509)
}

impl UpstreamPeerTls {
    /// Builds a region's upstream TLS state (validation already parsed every file).
    pub fn build(region: &str, settings: &UpstreamTls) -> Result<UpstreamPeerTls, TlsError> {
        let err = |message: String| TlsError::Upstream {
            region: region.to_string(),
            message,
        };
        if settings.insecure_skip_verify {
            tracing::warn!(
                region,
                "regions.{region}.tls.insecure_skip_verify = true: backend certificates are NOT verified"
            );
        }
        let mut roots = RootCertStore::empty();
        if settings.ca.is_empty() {
            let native = pingora::tls::load_native_certs().unwrap_or_default();
            for cert in native {
                let _ = roots.add(cert);
            }
            if roots.is_empty() && !settings.insecure_skip_verify {
                tracing::warn!(
                    region,
                    "no system CA certificates found: TLS to this region's backends will fail verification; set regions.{region}.tls.ca_file"
                );
            }
        } else {
            for cert in &settings.ca {
                roots
                    .add(cert.clone())
                    .map_err(|e| err(format!("ca_file: {e}")))?;
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &settings.client_cert {
            Some(c) => builder
                .with_client_auth_cert(c.chain.clone(), c.key.der().clone_key())
                .map_err(|e| err(format!("client_cert: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        if settings.insecure_skip_verify {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(NoVerify(provider())));
        }
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let ca = (!settings.ca.is_empty())
            .then(|| settings.ca.iter().map(wrap).collect::<Vec<_>>().into());
        let pool_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            for cert in &settings.ca {
                cert.as_ref().hash(&mut h);
            }
            h.finish()
        };
        let client_cert = settings.client_cert.as_ref().map(|c| {
            Arc::new(CertKey::new(
                c.chain.iter().map(|d| d.to_vec()).collect(),
                c.key.der().secret_der().to_vec(),
            ))
        });
        Ok(UpstreamPeerTls {
            settings: settings.clone(),
            ca,
            client_cert,
            verify: !settings.insecure_skip_verify,
            probe_config: Arc::new(config),
            pool_key,
        })
    }

    /// The server name for a backend: the configured `sni`, else `host` (a host name or IP).
    pub fn server_name(&self, host: &str) -> String {
        self.settings
            .sni
            .clone()
            .unwrap_or_else(|| host.to_string())
    }
}

/// Accepts any server certificate (`insecure_skip_verify`); signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_set_selects_nothing() {
        let set = CertSet::default();
        assert!(set.select(Some("a.example.com")).is_none());
        assert!(set.select(None).is_none());
    }
}
