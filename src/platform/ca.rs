//! The reference platform's certificate authority (rcgen): its own server certificate, every
//! terminal's client certificate, and the server's TLS config (client certificates verified
//! against the CA when offered).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{RootCertStore, ServerConfig};

use crate::sync::tls::{certs_from_pem, fingerprint, key_from_pem, provider, TlsError};

/// The platform's certificate authority: issues its own server certificate and every
/// terminal's client certificate.
#[derive(Clone)]
pub struct Authority {
    pub cert_pem: String,
    key_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// Certificate validity for the CA and server, days; terminal certificates get `TERMINAL_DAYS`.
const CA_DAYS: i64 = 3650;
const TERMINAL_DAYS: i64 = 825;

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

impl Authority {
    /// A new CA (ECDSA P-256).
    pub fn generate(name: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Restores a CA from its PEM texts.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        // Fails early on a damaged file rather than at the first enrollment.
        let key = KeyPair::from_pem(key_pem)?;
        Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key_pem: zeroize::Zeroizing::new(key_pem.to_string()),
        })
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate's fingerprint: what an enrollment token pins.
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        Ok(fingerprint(&certs_from_pem(&self.cert_pem)?[0]))
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, TlsError> {
        Ok(Issuer::from_ca_cert_pem(
            &self.cert_pem,
            KeyPair::from_pem(&self.key_pem)?,
        )?)
    }

    /// A server certificate for `names` (DNS names or IP addresses); returns (chain PEM with
    /// the CA certificate last, key PEM). The chain carries the CA so that an enrolling
    /// terminal can find the certificate its token pins.
    pub fn server_cert(&self, names: &[String]) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "yima platform");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, CA_DAYS);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }

    /// Signs a terminal's certificate request. The subject is set here (the request's own is
    /// ignored): CN = the terminal id the platform assigned.
    pub fn sign_terminal(&self, csr_pem: &str, terminal_id: &str) -> Result<String, TlsError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, terminal_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, TERMINAL_DAYS);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer()?)?.pem())
    }
}

/// The platform's TLS config: its certificate chain, and client certificates verified
/// against its CA when offered (enrollment comes without one; every other call needs one, which
/// the platform checks per request).
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        roots.add(c)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(chain_pem)?, key_from_pem(key_pem)?)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tls::{client_config, terminal_request};

    #[test]
    fn a_terminal_certificate_chains_to_the_ca_and_carries_the_assigned_id() {
        let ca = Authority::generate("test CA").expect("ca");
        let (key, csr) = terminal_request("ignored-name").expect("csr");
        let cert = ca.sign_terminal(&csr, "GATE-7").expect("sign");
        assert!(cert.contains("BEGIN CERTIFICATE"));
        assert!(client_config(&ca.cert_pem, Some((&cert, &key))).is_ok());
        let (chain, skey) = ca.server_cert(&["localhost".into()]).expect("server");
        assert_eq!(certs_from_pem(&chain).expect("chain").len(), 2);
        assert!(server_config(&chain, &skey, &ca.cert_pem).is_ok());
        let again = Authority::from_pem(&ca.cert_pem, ca.key_pem()).expect("reload");
        assert_eq!(again.fingerprint().ok(), ca.fingerprint().ok());
        assert!(Authority::from_pem(&ca.cert_pem, "garbage").is_err());
        assert!(ca.sign_terminal("not a csr", "X").is_err());
    }
}
