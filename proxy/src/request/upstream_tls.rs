//! Upstream TLS: a pool's TLS settings in the form pingora's `HttpPeer` wants (per-peer
//! CA, client `CertKey`), plus rustls `ClientConfig`s with the same trust for the health
//! prober (one per ALPN offer), built once per snapshot and reused across snapshots while
//! the pool's settings do not change.

use std::sync::Arc;

use meridian_config::{CertificateDer, UpstreamTls};
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A pool's upstream TLS state that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{region}.tls: {message}")]
pub struct TlsError {
    /// Where the pool is configured (`regions.NAME`, or `services.NAME.regions.REGION`).
    pub region: String,
    /// What went wrong.
    pub message: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A pool's upstream TLS, ready for `HttpPeer` and for the prober.
pub struct UpstreamPeerTls {
    /// Where it is configured (`regions.NAME` or `services.NAME.regions.REGION`).
    pub region: String,
    /// The settings this was built from (to reuse it across snapshots).
    pub settings: UpstreamTls,
    /// Per-peer CA (the configured `ca_file`); `None` means the system roots.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate presented to backends.
    pub client_cert: Option<Arc<CertKey>>,
    /// Whether the backend's certificate is verified.
    pub verify: bool,
    /// The same trust as a rustls client config, for TLS health probes, offering ALPN
    /// `http/1.1`.
    pub probe_config: Arc<ClientConfig>,
    /// The same, offering ALPN `h2` only.
    pub probe_config_h2: Arc<ClientConfig>,
    /// The same, offering ALPN `h2` and `http/1.1`.
    pub probe_config_auto: Arc<ClientConfig>,
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
    /// Builds a pool's upstream TLS state (validation already parsed every file); `region`
    /// says where it is configured, for messages.
    pub fn build(region: &str, settings: &UpstreamTls) -> Result<UpstreamPeerTls, TlsError> {
        let err = |message: String| TlsError {
            region: region.to_string(),
            message,
        };
        if settings.insecure_skip_verify {
            tracing::warn!(
                region,
                "{region}.tls.insecure_skip_verify = true: backend certificates are NOT verified"
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
                    "no system CA certificates found: TLS to these backends will fail verification; set {region}.tls.ca_file"
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
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = config.clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        };
        let probe_config = with_alpn(&[b"http/1.1"]);
        let probe_config_h2 = with_alpn(&[b"h2"]);
        let probe_config_auto = with_alpn(&[b"h2", b"http/1.1"]);
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
            region: region.to_string(),
            settings: settings.clone(),
            ca,
            client_cert,
            verify: !settings.insecure_skip_verify,
            probe_config,
            probe_config_h2,
            probe_config_auto,
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
