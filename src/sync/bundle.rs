//! Policy bundles: signing (platform), checking against the pinned root key (terminal), and the
//! terminal's accumulated policy — the newest bundle plus the status list its deltas built —
//! turned into the verifier's `TrustState`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::sync::wire::{Bundle, RootKey, SignedBundle, StatusChange};
use crate::verification::keys::{Alg, KeyRing, SigningKey, TrustedKey, VerifyingKey};
use crate::verification::trust::{Scenes, Settings, StaticStatus, Terminal, TrustState};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle signature does not verify with the pinned root key")]
    BadSignature,
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    #[error("bundle is for terminal {got}, not this one")]
    WrongTerminal { got: String },
    #[error("bundle is older than the one in force")]
    Older,
    #[error("bundle settings refused: {0}")]
    Settings(String),
    #[error("bundle key refused: {0}")]
    Key(String),
}

/// Signs a bundle with the platform root key.
pub fn sign(bundle: &Bundle, root: &SigningKey) -> SignedBundle {
    let payload = serde_json::to_vec(bundle).unwrap_or_default();
    SignedBundle {
        alg: "EdDSA".into(),
        sig: URL_SAFE_NO_PAD.encode(root.sign(&payload)),
        payload: URL_SAFE_NO_PAD.encode(payload),
    }
}

/// The root key as the terminal pins it.
pub fn root_key_wire(root: &SigningKey) -> RootKey {
    RootKey {
        alg: "EdDSA".into(),
        key: URL_SAFE_NO_PAD.encode(root.verifying_key().to_bytes()),
    }
}

/// Parses a pinned root key.
pub fn root_key(wire: &RootKey) -> Result<VerifyingKey, BundleError> {
    if wire.alg != "EdDSA" {
        return Err(BundleError::Malformed(format!("root key alg {}", wire.alg)));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(&wire.key)
        .map_err(|e| BundleError::Malformed(e.to_string()))?;
    VerifyingKey::from_bytes(Alg::EdDSA, &bytes).map_err(|e| BundleError::Key(e.to_string()))
}

/// Checks the signature and returns the bundle. Nothing in an unsigned byte is trusted.
pub fn open(signed: &SignedBundle, root: &VerifyingKey) -> Result<Bundle, BundleError> {
    if signed.alg != "EdDSA" {
        return Err(BundleError::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(&signed.payload)
        .map_err(|_| BundleError::BadSignature)?;
    let sig = URL_SAFE_NO_PAD
        .decode(&signed.sig)
        .map_err(|_| BundleError::BadSignature)?;
    if !root.verify(&payload, &sig) {
        return Err(BundleError::BadSignature);
    }
    serde_json::from_slice(&payload).map_err(|e| BundleError::Malformed(e.to_string()))
}

/// What the terminal keeps between bundles (persisted in the store, re-checked at load).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyCache {
    /// The newest bundle in force, as signed.
    pub bundle: SignedBundle,
    /// The static-code status list accumulated from every delta, by "cat\u{0}sn".
    pub statuses: BTreeMap<String, StatusChange>,
    /// Resume token for the next delta.
    pub status_token: u64,
}

/// A bundle checked and merged: the new cache and the trust state it gives.
#[derive(Debug)]
pub struct Applied {
    pub cache: PolicyCache,
    pub bundle: Bundle,
    pub trust: TrustState,
}

fn status_key(c: &StatusChange) -> String {
    format!("{}\u{0}{}", c.cat, c.sn)
}

/// Checks `signed` against the pinned root key and merges it into `previous`. A bundle for
/// another terminal, or older than the one in force, is refused and changes nothing.
pub fn apply(
    previous: Option<&PolicyCache>,
    signed: SignedBundle,
    root: &VerifyingKey,
    terminal_id: &str,
) -> Result<Applied, BundleError> {
    let bundle = open(&signed, root)?;
    if bundle.terminal_id != terminal_id {
        return Err(BundleError::WrongTerminal {
            got: bundle.terminal_id,
        });
    }
    let mut statuses = BTreeMap::new();
    if let Some(prev) = previous {
        let prev_bundle = open(&prev.bundle, root)?;
        if bundle.issued_at_ms < prev_bundle.issued_at_ms {
            return Err(BundleError::Older);
        }
        if !bundle.statuses.full {
            statuses = prev.statuses.clone();
        }
    }
    for c in &bundle.statuses.changes {
        statuses.insert(status_key(c), c.clone());
    }
    let cache = PolicyCache {
        bundle: signed,
        statuses,
        status_token: bundle.statuses.through,
    };
    let trust = trust_state(&bundle, &cache)?;
    Ok(Applied {
        cache,
        bundle,
        trust,
    })
}

/// Re-opens a persisted cache (at start): the signature is checked again.
pub fn reload(cache: PolicyCache, root: &VerifyingKey) -> Result<Applied, BundleError> {
    let bundle = open(&cache.bundle, root)?;
    let trust = trust_state(&bundle, &cache)?;
    Ok(Applied {
        cache,
        bundle,
        trust,
    })
}

/// The verifier's view of a bundle. The trust state expires `max_offline_s` after the bundle
/// was issued: from then on every code is refused with `policy_stale`.
pub fn trust_state(bundle: &Bundle, cache: &PolicyCache) -> Result<TrustState, BundleError> {
    let s = &bundle.settings;
    let settings =
        Settings::new(s.refresh_s, s.skew_s).map_err(|e| BundleError::Settings(e.to_string()))?;
    if s.max_offline_s <= 0 {
        return Err(BundleError::Settings(
            "max_offline_s must be positive".into(),
        ));
    }
    let mut keys = Vec::with_capacity(bundle.keys.len());
    for entry in &bundle.keys {
        keys.push(TrustedKey::from_entry(entry).map_err(|e| BundleError::Key(e.to_string()))?);
    }
    let mut trust = TrustState {
        keys: KeyRing::new(keys),
        terminal: Terminal {
            authorized: bundle.terminal.authorized,
            scenes: if bundle.terminal.scenes.is_empty() {
                Scenes::Any
            } else {
                Scenes::Only(bundle.terminal.scenes.iter().cloned().collect())
            },
            accept_unknown_static: bundle.terminal.accept_unknown_static,
        },
        settings,
        valid_until_ms: Some(
            bundle
                .issued_at_ms
                .saturating_add(s.max_offline_s.saturating_mul(1000)),
        ),
        ..TrustState::default()
    };
    for c in cache.statuses.values() {
        trust.statuses.set(
            &c.cat,
            &c.sn,
            StaticStatus {
                state: c.state,
                min_version: c.min_version,
            },
        );
    }
    for svc in &bundle.suspended_services {
        trust.services.suspend(svc);
    }
    Ok(trust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::{PlatformSettings, StatusDelta, TerminalProfile};
    use crate::verification::trust::StaticState;

    fn bundle(at: i64, full: bool, changes: Vec<StatusChange>) -> Bundle {
        Bundle {
            terminal_id: "T1".into(),
            issued_at_ms: at,
            terminal: TerminalProfile {
                authorized: true,
                scenes: vec![],
                accept_unknown_static: false,
            },
            keys: vec![],
            statuses: StatusDelta {
                full,
                since: 0,
                through: changes.len() as u64,
                more: false,
                changes,
            },
            suspended_services: vec!["S9".into()],
            settings: PlatformSettings::default(),
        }
    }

    fn change(sn: &str, state: StaticState) -> StatusChange {
        StatusChange {
            cat: "C".into(),
            sn: sn.into(),
            state,
            min_version: 0,
        }
    }

    #[test]
    fn deltas_merge_full_lists_replace_and_forgeries_change_nothing() {
        let root = SigningKey::generate(Alg::EdDSA);
        let pinned = root.verifying_key();
        let first = apply(
            None,
            sign(
                &bundle(1000, true, vec![change("1", StaticState::Lost)]),
                &root,
            ),
            &pinned,
            "T1",
        )
        .expect("first");
        assert_eq!(
            first.trust.statuses.get("C", "1").map(|s| s.state),
            Some(StaticState::Lost)
        );
        assert!(first.trust.services.is_suspended("S9"));
        assert_eq!(first.trust.valid_until_ms, Some(1000 + 7 * 86_400 * 1000));

        let delta = apply(
            Some(&first.cache),
            sign(
                &bundle(2000, false, vec![change("2", StaticState::Disabled)]),
                &root,
            ),
            &pinned,
            "T1",
        )
        .expect("delta");
        assert_eq!(delta.trust.statuses.len(), 2);

        let full = apply(
            Some(&delta.cache),
            sign(
                &bundle(3000, true, vec![change("3", StaticState::Enabled)]),
                &root,
            ),
            &pinned,
            "T1",
        )
        .expect("full");
        assert_eq!(full.trust.statuses.len(), 1);

        let forger = SigningKey::generate(Alg::EdDSA);
        let forged = sign(&bundle(4000, true, vec![]), &forger);
        assert!(matches!(
            apply(Some(&full.cache), forged, &pinned, "T1"),
            Err(BundleError::BadSignature)
        ));
        let mut tampered = sign(&bundle(4000, true, vec![]), &root);
        tampered.payload = sign(&bundle(5000, true, vec![]), &root).payload;
        assert!(matches!(
            apply(Some(&full.cache), tampered, &pinned, "T1"),
            Err(BundleError::BadSignature)
        ));
        assert!(matches!(
            apply(
                Some(&full.cache),
                sign(&bundle(500, true, vec![]), &root),
                &pinned,
                "T1"
            ),
            Err(BundleError::Older)
        ));
        assert!(matches!(
            apply(None, sign(&bundle(500, true, vec![]), &root), &pinned, "T2"),
            Err(BundleError::WrongTerminal { .. })
        ));
        let again = reload(full.cache.clone(), &pinned).expect("reload");
        assert_eq!(again.trust.statuses.len(), 1);
        assert!(reload(full.cache, &forger.verifying_key()).is_err());
    }
}
