//! Downstream TLS, rustls only: every HTTPS listener gets a [`CertResolver`], a rustls
//! `ResolvesServerCert` that picks a certificate by SNI (exact name, then `*.parent`
//! wildcard, then the default) from a [`CertSet`] behind an `ArcSwap`, so a reload swaps
//! certificates atomically (new handshakes see the new set) without touching the sockets.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_config::HttpsListener;
use pingora::tls::{ClientHello, ResolvesServerCert};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

/// A certificate and key that could not be turned into a signing certificate.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CertError {
    /// The certificate file.
    pub file: String,
    /// What went wrong.
    pub message: String,
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
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
    pub fn build(listener: &HttpsListener) -> Result<CertSet, CertError> {
        let provider = provider();
        let mut set = CertSet::default();
        for c in &listener.certificates {
            let key = CertifiedKey::from_der(c.chain.clone(), c.key.der().clone_key(), &provider)
                .map_err(|e| CertError {
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
pub fn cert_sets(listeners: &[HttpsListener]) -> Result<Vec<CertSet>, CertError> {
    listeners.iter().map(CertSet::build).collect()
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
