//! TLS setup: rustls with the ring crypto provider (smaller and faster to cross-build than
//! aws-lc-rs), installed once per process before any HTTP client is built.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Installs ring as the process-wide rustls provider (idempotent; a provider some other part
/// of the process installed first is kept).
pub fn install_provider() {
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_is_harmless() {
        super::install_provider();
        super::install_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
