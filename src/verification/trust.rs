//! The trust state the verifier is handed: keys, static-code status list, service states, the
//! terminal's own profile (authorization, scenes, unknown-code policy) and the platform settings.
//!
//! These are plain values; where they come from (local files: [`crate::local_trust`]; signed
//! platform bundles: [`crate::sync::bundle`]) is not this module's business.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::verification::keys::KeyRing;

/// Default global refresh time (全局刷新时间) of a dynamic code, seconds.
pub const DEFAULT_REFRESH_S: i64 = 60;
/// Default clock-skew tolerance, seconds.
pub const DEFAULT_SKEW_S: i64 = 5;
/// Largest clock-skew tolerance the spec allows, seconds.
pub const MAX_SKEW_S: i64 = 30;
/// Longest global refresh time accepted from any source, seconds (a typo must not turn a
/// one-minute code into a one-day code).
pub const MAX_REFRESH_S: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("skew tolerance must be 0..={MAX_SKEW_S} s, got {0}")]
    Skew(i64),
    #[error("global refresh time must be 1..={MAX_REFRESH_S} s, got {0}")]
    Refresh(i64),
}

/// Platform settings that shape verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    refresh_s: i64,
    skew_s: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_s: DEFAULT_REFRESH_S,
            skew_s: DEFAULT_SKEW_S,
        }
    }
}

impl Settings {
    pub fn new(refresh_s: i64, skew_s: i64) -> Result<Settings, TrustError> {
        if !(1..=MAX_REFRESH_S).contains(&refresh_s) {
            return Err(TrustError::Refresh(refresh_s));
        }
        if !(0..=MAX_SKEW_S).contains(&skew_s) {
            return Err(TrustError::Skew(skew_s));
        }
        Ok(Settings { refresh_s, skew_s })
    }

    /// How long a dynamic code lives after `iat`.
    pub fn refresh_s(&self) -> i64 {
        self.refresh_s
    }

    /// Clock-skew tolerance applied to both ends of a window.
    pub fn skew_s(&self) -> i64 {
        self.skew_s
    }
}

/// The state of a static code (静态码) in the platform's status list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaticState {
    Enabled,
    Disabled,
    Lost,
    Replaced,
    Cancelled,
}

/// One status-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticStatus {
    pub state: StaticState,
    /// Codes with an older `ver` are refused as replaced (信息变更 and 换码 raise it).
    pub min_version: u64,
}

/// Static-code states by (catalogue, serial).
#[derive(Debug, Clone, Default)]
pub struct StatusList {
    entries: HashMap<(String, String), StaticStatus>,
}

impl StatusList {
    pub fn set(&mut self, catalogue: &str, serial: &str, status: StaticStatus) {
        self.entries
            .insert((catalogue.to_string(), serial.to_string()), status);
    }

    pub fn get(&self, catalogue: &str, serial: &str) -> Option<StaticStatus> {
        // Borrowed lookup without allocating would need a custom key type; the list is
        // consulted once per static code, so the two small allocations are fine.
        self.entries
            .get(&(catalogue.to_string(), serial.to_string()))
            .copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Services under emergency stop (应急停用).
#[derive(Debug, Clone, Default)]
pub struct ServiceStates {
    suspended: HashSet<String>,
}

impl ServiceStates {
    pub fn suspend(&mut self, service: &str) {
        self.suspended.insert(service.to_string());
    }

    pub fn resume(&mut self, service: &str) {
        self.suspended.remove(service);
    }

    pub fn is_suspended(&self, service: &str) -> bool {
        self.suspended.contains(service)
    }
}

/// The scenes a terminal serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenes {
    /// A general-purpose counter terminal: every scene.
    Any,
    /// Only these scene codes.
    Only(BTreeSet<String>),
}

/// What the platform says about this terminal.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub authorized: bool,
    pub scenes: Scenes,
    /// Accept a static code whose (cat, sn) is not in the status list.
    pub accept_unknown_static: bool,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            authorized: true,
            scenes: Scenes::Any,
            accept_unknown_static: false,
        }
    }
}

/// Everything the verifier needs to know besides the code, the time and the replay view.
#[derive(Debug, Clone, Default)]
pub struct TrustState {
    pub keys: KeyRing,
    pub statuses: StatusList,
    pub services: ServiceStates,
    pub terminal: Terminal,
    pub settings: Settings,
    /// After this verification time (ms) the state is too old to vouch for: every code is
    /// refused with `policy_stale`. `None` for local trust files, which do not age.
    pub valid_until_ms: Option<i64>,
}

/// The status file of the offline trust path (`[trust] status`, `yima-gate verify --status`):
/// a local stand-in for the status list a signed platform bundle carries.
///
/// ```json
/// { "static_codes": [ {"cat": "C1", "sn": "0001", "state": "lost", "min_version": 2} ],
///   "suspended_services": ["SVC9"] }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFile {
    #[serde(default)]
    pub static_codes: Vec<StatusFileEntry>,
    #[serde(default)]
    pub suspended_services: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFileEntry {
    pub cat: String,
    pub sn: String,
    pub state: StaticState,
    #[serde(default)]
    pub min_version: u64,
}

impl StatusFile {
    /// Applies the file to a trust state.
    pub fn apply(&self, trust: &mut TrustState) {
        for e in &self.static_codes {
            trust.statuses.set(
                &e.cat,
                &e.sn,
                StaticStatus {
                    state: e.state,
                    min_version: e.min_version,
                },
            );
        }
        for s in &self.suspended_services {
            trust.services.suspend(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_bounded() {
        assert!(Settings::new(60, 5).is_ok());
        assert!(Settings::new(60, 30).is_ok());
        assert!(matches!(Settings::new(60, 31), Err(TrustError::Skew(31))));
        assert!(matches!(Settings::new(60, -1), Err(TrustError::Skew(-1))));
        assert!(matches!(Settings::new(0, 5), Err(TrustError::Refresh(0))));
        assert_eq!(Settings::default().refresh_s(), 60);
        assert_eq!(Settings::default().skew_s(), 5);
    }

    #[test]
    fn status_file_applies() {
        let f: StatusFile = serde_json::from_str(
            r#"{"static_codes":[{"cat":"C","sn":"1","state":"lost"}],"suspended_services":["S"]}"#,
        )
        .expect("parse");
        let mut t = TrustState::default();
        f.apply(&mut t);
        assert_eq!(
            t.statuses.get("C", "1").map(|s| s.state),
            Some(StaticState::Lost)
        );
        assert!(t.services.is_suspended("S"));
        assert!(!t.services.is_suspended("T"));
        assert!(serde_json::from_str::<StatusFile>(r#"{"static":[]}"#).is_err());
    }
}
