//! Certificates and TLS configurations of the sync channel: the platform's CA (rcgen), terminal
//! certificate requests and their signing, and the rustls configs of both ends (mutual TLS, and
//! the CA-pinned first contact of enrollment).
//!
//! Terminals are identified by the SHA-256 fingerprint of their client certificate (the
//! platform records it at enrollment), so nothing here parses names out of certificates.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

fn pem_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Pem(e.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate, lowercase hex: how terminals and CA pins are named.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Parses every certificate in a PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no certificate in PEM text".into()));
    }
    Ok(certs)
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(pem_err)
}

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
    pub fn generate(name: &str) -> Result<Authority, PkiError> {
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
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, PkiError> {
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
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        Ok(fingerprint(&certs_from_pem(&self.cert_pem)?[0]))
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(
            &self.cert_pem,
            KeyPair::from_pem(&self.key_pem)?,
        )?)
    }

    /// A server certificate for `names` (DNS names or IP addresses); returns (chain PEM with
    /// the CA certificate last, key PEM). The chain carries the CA so that an enrolling
    /// terminal can find the certificate its token pins.
    pub fn server_cert(&self, names: &[String]) -> Result<(String, String), PkiError> {
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
    pub fn sign_terminal(&self, csr_pem: &str, terminal_id: &str) -> Result<String, PkiError> {
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

/// A terminal's new key and certificate request: (key PEM, CSR PEM). The key never leaves the
/// terminal.
pub fn terminal_request(
    terminal_id: &str,
) -> Result<(zeroize::Zeroizing<String>, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, terminal_id);
    let csr = params.serialize_request(&key)?;
    Ok((zeroize::Zeroizing::new(key.serialize_pem()), csr.pem()?))
}

/// The platform's TLS config: its certificate chain, and client certificates verified
/// against its CA when offered (enrollment comes without one; every other call needs one, which
/// the platform checks per request).
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, PkiError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        roots.add(c)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(chain_pem)?, key_from_pem(key_pem)?)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A terminal's TLS config: the platform CA as the only root, and its client certificate.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<ClientConfig, PkiError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        roots.add(c)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity {
        Some((cert, key)) => {
            builder.with_client_auth_cert(certs_from_pem(cert)?, key_from_pem(key)?)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The enrollment config: trusts a server whose chain contains the CA certificate with the
/// fingerprint the enrollment token pins, and verifies the server certificate against it.
pub fn pinned_client_config(ca_fingerprint: &str) -> Result<ClientConfig, PkiError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: ca_fingerprint.to_ascii_lowercase(),
            provider: provider(),
        }))
        .with_no_client_auth())
}

#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the platform's CA does not match the enrollment token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
