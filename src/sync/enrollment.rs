//! Enrollment: the terminal's identity with the platform — a fresh key and certificate request
//! sent once with the operator's one-time token to a platform whose CA the token pins, and the
//! certificate, CA and bundle root key that come back, kept in `<state_dir>/enrollment.json`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::client::{base_url, http_client, status_error, transport};
use super::wire::{self, EnrollRequest, EnrollResponse, RootKey};
use super::{bundle, SyncError};
use crate::verification::keys::VerifyingKey;

/// What enrollment leaves on the terminal: `<state_dir>/enrollment.json`, mode 0600.
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub terminal_id: String,
    pub platform_url: String,
    pub ca_pem: String,
    pub cert_pem: String,
    /// The terminal's private key (generated here, never sent).
    pub key_pem: String,
    /// The pinned bundle-signing key.
    pub root_key: RootKey,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("terminal_id", &self.terminal_id)
            .field("platform_url", &self.platform_url)
            .finish_non_exhaustive()
    }
}

impl Enrollment {
    pub const FILE: &'static str = "enrollment.json";

    /// The enrollment in `state_dir`, if the terminal has one.
    pub fn load(state_dir: &Path) -> Result<Option<Enrollment>, SyncError> {
        let path = state_dir.join(Self::FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes =
            crate::files::read_secret(&path).map_err(|e| SyncError::Enrollment(e.to_string()))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SyncError::Enrollment(format!("{}: {e}", path.display())))
    }

    /// Writes the enrollment (0600) atomically: a crash leaves the old one or the new one.
    pub fn save(&self, state_dir: &Path) -> Result<(), SyncError> {
        crate::files::create_private_dir(state_dir)
            .map_err(|e| SyncError::Enrollment(e.to_string()))?;
        let json = Zeroizing::new(serde_json::to_vec_pretty(self).unwrap_or_default());
        crate::files::write_durable(
            &state_dir.join(Self::FILE),
            &json,
            crate::files::PRIVATE_FILE,
        )
        .map_err(|e| SyncError::Enrollment(e.to_string()))
    }

    pub(crate) fn root(&self) -> Result<VerifyingKey, SyncError> {
        Ok(bundle::root_key(&self.root_key)?)
    }
}

/// An enrollment token as the platform prints it: `ymt1.<secret>.<CA fingerprint>`, the
/// fingerprint being the SHA-256 of the platform CA certificate (hex). The terminal trusts
/// the platform on first contact only if its chain carries that CA.
#[derive(Debug)]
pub struct EnrollToken {
    pub secret: Zeroizing<String>,
    pub ca_fingerprint: String,
}

impl EnrollToken {
    pub fn format(secret: &str, ca_fingerprint: &str) -> String {
        format!("ymt1.{secret}.{ca_fingerprint}")
    }

    pub fn parse(token: &str) -> Result<EnrollToken, SyncError> {
        let mut parts = token.trim().split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("ymt1"), Some(secret), Some(fp), None)
                if !secret.is_empty()
                    && fp.len() == 64
                    && fp.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(EnrollToken {
                    secret: Zeroizing::new(secret.to_string()),
                    ca_fingerprint: fp.to_ascii_lowercase(),
                })
            }
            _ => Err(SyncError::Enrollment(
                "token is not of the form ymt1.<secret>.<64 hex digits>".into(),
            )),
        }
    }
}

/// Enrolls this terminal: a fresh key and certificate request, sent with the one-time token to
/// a platform whose CA the token pins; the certificate, CA and root key come back and are saved.
pub fn enroll(
    platform_url: &str,
    token: &str,
    terminal_id: &str,
    state_dir: &Path,
) -> Result<Enrollment, SyncError> {
    let token = EnrollToken::parse(token)?;
    let (key_pem, csr_pem) = crate::sync::tls::terminal_request(terminal_id)
        .map_err(|e| SyncError::Enrollment(e.to_string()))?;
    let tls = crate::sync::tls::pinned_client_config(&token.ca_fingerprint)
        .map_err(|e| SyncError::Enrollment(e.to_string()))?;
    let http = http_client(tls, Duration::from_secs(15))?;
    let base = base_url(platform_url);
    let resp = http
        .post(format!("{base}/v1/enroll"))
        .header("X-Yima-Protocol", wire::PROTOCOL)
        .json(&EnrollRequest {
            token: token.secret.to_string(),
            csr_pem,
            terminal_id: Some(terminal_id.to_string()),
        })
        .send()
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err(status_error(resp));
    }
    let reply: EnrollResponse = resp.json().map_err(|e| SyncError::Reply(e.to_string()))?;
    if reply.terminal_id != terminal_id {
        return Err(SyncError::Enrollment(format!(
            "the platform enrolled this token as terminal {}, but this gate is configured as {terminal_id}",
            reply.terminal_id
        )));
    }
    let ca = crate::sync::tls::certs_from_pem(&reply.ca_pem)
        .map_err(|e| SyncError::Reply(e.to_string()))?;
    if crate::sync::tls::fingerprint(&ca[0]) != token.ca_fingerprint {
        return Err(SyncError::Reply("returned CA is not the pinned one".into()));
    }
    bundle::root_key(&reply.root_key)?;
    let enrollment = Enrollment {
        terminal_id: reply.terminal_id,
        platform_url: base,
        ca_pem: reply.ca_pem,
        cert_pem: reply.cert_pem,
        key_pem: key_pem.to_string(),
        root_key: reply.root_key,
    };
    enrollment.save(state_dir)?;
    Ok(enrollment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_strictly() {
        let fp = "ab".repeat(32);
        let t = EnrollToken::parse(&EnrollToken::format("s3cret", &fp)).expect("token");
        assert_eq!(t.ca_fingerprint, fp);
        assert_eq!(t.secret.as_str(), "s3cret");
        for bad in [
            "",
            "ymt1.s3cret",
            "ymt2.s.aa",
            &format!("ymt1..{fp}"),
            &format!("ymt1.s.{}", "zz".repeat(32)),
            &format!("ymt1.s.{fp}.x"),
        ] {
            assert!(EnrollToken::parse(bad).is_err(), "{bad}");
        }
    }
}
