//! Values that must never be printed: private keys and shared secrets.

use std::sync::Arc;

use rustls_pki_types::PrivateKeyDer;

/// A private key read from a PEM file; compared by content, never printed.
#[derive(Clone)]
pub struct PrivateKey(pub Arc<PrivateKeyDer<'static>>);

impl PrivateKey {
    /// The key in DER.
    pub fn der(&self) -> &PrivateKeyDer<'static> {
        &self.0
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der() == other.0.secret_der()
    }
}

impl Eq for PrivateKey {}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A secret string: compared by content, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}
