//! Upstream TLS: a pool's TLS settings in the form pingora's `HttpPeer` wants (per-peer
//! CA, client `CertKey`), plus a rustls `ClientConfig` with the same trust for the health
//! prober, built once per snapshot and reused across snapshots while the region's settings
//! do not change. Kept in a side table beside the pingora-free routing snapshot.

use std::sync::Arc;

use meridian_config::Timeouts;
use meridian_config::{CertificateDer, Config, UpstreamTls};
use meridian_routing::BackendState;
use pingora::upstreams::peer::HttpPeer;
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

/// Per-pool upstream TLS of one snapshot generation, by service and region index (`None`:
/// plain).
#[derive(Debug, Default)]
pub struct Upstreams {
    tls: Vec<Vec<Option<Arc<UpstreamPeerTls>>>>,
}

impl Upstreams {
    /// Builds the table for `config`, reusing `previous`' state for TLS settings that did
    /// not change.
    pub fn build(config: &Config, previous: Option<&Upstreams>) -> Result<Upstreams, TlsError> {
        let mut tls = Vec::with_capacity(config.services.len());
        for s in &config.services {
            let mut by_region = vec![None; config.regions.len()];
            for p in &s.pools {
                let Some(want) = &p.tls else { continue };
                let at = match (s.implicit, config.regions.get(p.region)) {
                    (true, Some(r)) => format!("regions.{}", r.name),
                    (false, Some(r)) => format!("services.{}.regions.{}", s.name, r.name),
                    (_, None) => continue,
                };
                let old = previous.and_then(|p| {
                    p.tls
                        .iter()
                        .flatten()
                        .flatten()
                        .find(|t| t.settings == *want)
                });
                let built = match old {
                    Some(old) => old.clone(),
                    None => Arc::new(UpstreamPeerTls::build(&at, want)?),
                };
                if let Some(slot) = by_region.get_mut(p.region) {
                    *slot = Some(built);
                }
            }
            tls.push(by_region);
        }
        Ok(Upstreams { tls })
    }

    /// The TLS of service `service`'s pool in region `region` (`None`: plain HTTP).
    pub fn tls(&self, service: usize, region: usize) -> Option<&Arc<UpstreamPeerTls>> {
        self.tls.get(service)?.get(region).and_then(Option::as_ref)
    }

    /// The pingora peer for backend `backend` of service `service`'s pool in region
    /// `region`: plain or TLS as the pool says (SNI, verification, CA, client certificate,
    /// pool key), with the timeouts. A relay (another instance's proxy listener) is spoken
    /// to in plain HTTP.
    pub fn peer(
        &self,
        (service, region): (usize, usize),
        backend: &BackendState,
        t: &Timeouts,
        relay: bool,
    ) -> HttpPeer {
        let tls = if relay {
            None
        } else {
            self.tls(service, region)
        };
        let mut peer = match tls {
            None => HttpPeer::new(backend.addr, false, String::new()),
            Some(tls) => {
                let sni = tls.server_name(&backend.host);
                let mut peer = HttpPeer::new(backend.addr, true, sni);
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                peer.options.ca = tls.ca.clone();
                peer.client_cert_key = tls.client_cert.clone();
                peer.group_key = tls.pool_key;
                peer
            }
        };
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }
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
            region: region.to_string(),
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
