//! The offline trust path: trust files (the spec's key entries), private key files and status
//! files read from disk into the values the verification core works with. A gate enrolled with
//! the platform gets the same values from signed bundles instead ([`crate::sync::bundle`]).
//!
//! **Invariant:** a file that holds secret key material (an HMAC trust entry, a private key
//! file) is refused when group or others can read it.

use std::path::Path;

use crate::files::{self, FileError};
use crate::verification::keys::{KeyError, KeyPair, KeyRing};
use crate::verification::trust::{Settings, StatusFile, Terminal, TrustState};

#[derive(Debug, thiserror::Error)]
pub enum LocalTrustError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {source}")]
    Key { path: String, source: KeyError },
    #[error("{path}: not a valid status file: {source}")]
    Status {
        path: String,
        source: serde_json::Error,
    },
}

fn key_error(path: &Path) -> impl FnOnce(KeyError) -> LocalTrustError + '_ {
    move |source| LocalTrustError::Key {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a trust file (one entry or an array of them), refusing one that holds a secret (HMAC)
/// key but is readable by others.
pub fn load_key_ring(path: &Path) -> Result<KeyRing, LocalTrustError> {
    let text = files::read_text(path)?;
    let ring = KeyRing::from_json(&text).map_err(key_error(path))?;
    if ring.iter().any(|k| k.alg().is_mac()) {
        files::check_private(path)?;
    }
    Ok(ring)
}

/// Reads a private key file written by `yima-gate keygen` (must be mode 0600).
pub fn load_key_pair(path: &Path) -> Result<KeyPair, LocalTrustError> {
    let text =
        zeroize::Zeroizing::new(String::from_utf8_lossy(&files::read_secret(path)?).into_owned());
    KeyPair::from_json(&text).map_err(key_error(path))
}

/// Reads a status file (static-code states, suspended services).
pub fn load_status_file(path: &Path) -> Result<StatusFile, LocalTrustError> {
    let text = files::read_text(path)?;
    serde_json::from_str(&text).map_err(|source| LocalTrustError::Status {
        path: path.display().to_string(),
        source,
    })
}

/// Builds a trust state from the trust file (keys) and an optional status file.
pub fn load_trust(
    keys: Option<&Path>,
    status: Option<&Path>,
    terminal: Terminal,
    settings: Settings,
) -> Result<TrustState, LocalTrustError> {
    let mut trust = TrustState {
        keys: match keys {
            Some(path) => load_key_ring(path)?,
            None => KeyRing::default(),
        },
        terminal,
        settings,
        ..TrustState::default()
    };
    if let Some(path) = status {
        load_status_file(path)?.apply(&mut trust);
    }
    Ok(trust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::keys::{Alg, Kid};

    #[test]
    fn key_file_round_trip_and_mode_check() {
        let dir = tempfile::tempdir().expect("tmp");
        let pair = KeyPair::generate(
            Alg::ES256,
            Kid::new(b"abc".to_vec()).expect("kid"),
            0,
            i64::from(u32::MAX),
        );
        let path = dir.path().join("k.json");
        files::write_durable(&path, pair.to_json().as_bytes(), 0o600).expect("write");
        let back = load_key_pair(&path).expect("load");
        assert_eq!(back.kid, pair.kid);
        assert!(pair
            .trusted_key()
            .key
            .verify(b"m", &back.signing.sign(b"m")));
        files::write_durable(&path, pair.to_json().as_bytes(), 0o644).expect("write");
        assert!(matches!(
            load_key_pair(&path),
            Err(LocalTrustError::File(FileError::InsecureMode { .. }))
        ));
    }

    #[test]
    fn an_hmac_trust_file_must_be_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let pair = KeyPair::generate(Alg::HMAC256, Kid::new(b"h".to_vec()).expect("kid"), 0, 1);
        let path = dir.path().join("t.json");
        let entry = serde_json::to_string(&pair.trusted_key().to_entry()).expect("json");
        files::write_durable(&path, entry.as_bytes(), 0o644).expect("write");
        assert!(matches!(
            load_key_ring(&path),
            Err(LocalTrustError::File(FileError::InsecureMode { .. }))
        ));
        files::write_durable(&path, entry.as_bytes(), 0o600).expect("write");
        assert_eq!(load_key_ring(&path).expect("load").len(), 1);
    }
}
