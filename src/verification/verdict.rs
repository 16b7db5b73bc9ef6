//! The answer to "may this code pass?": a stable reason code, the Chinese gate message, and the
//! business claims of an accepted code.
//!
//! A refused code is a [`Verdict`], never an `Err`: `Err` is for the program failing.

use serde::{Deserialize, Serialize};

/// Why a code was accepted or refused. The `snake_case` names are a stable machine-readable
/// contract (spec `code-format.md`, "Verification rules"); never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Every rule passed: the gate may open.
    Accepted,
    /// Rule 1: prefix, Base45, CBOR, COSE structure, tag, alg or claims not well-formed.
    Malformed,
    /// Rule 2: no key with this kid and alg is valid for the code's kind at this time.
    UnknownKey,
    /// Rule 2: a key was found but the signature or MAC does not verify.
    BadSignature,
    /// Rule 3: past the dynamic window (or past `exp`).
    Expired,
    /// Rule 3: before the dynamic window (or before `nbf`).
    NotYetValid,
    /// Rule 4: a dynamic code already used inside its window.
    Replayed,
    /// Rule 5: static code disabled (停用).
    Disabled,
    /// Rule 5: static code reported lost (挂失).
    Lost,
    /// Rule 5: static code replaced (换码), or an older version than the status list allows.
    Replaced,
    /// Rule 5: static code cancelled (注销).
    Cancelled,
    /// Rule 5: static code not in the status list, and the terminal's policy refuses unknown codes.
    StaticCodeUnknown,
    /// Rule 6: the code's service is suspended (emergency stop).
    ServiceSuspended,
    /// Rule 6: the code is not valid for any scene this terminal serves.
    WrongScene,
    /// Rule 6: this terminal is not (or no longer) authorized by the platform.
    TerminalNotAuthorized,
    /// Rule 7: the terminal cannot vouch for its clock, so dynamic codes are refused.
    ClockUntrusted,
    /// The replay store was missing or damaged at start; a dynamic code whose window began
    /// before the store was (re)created may already have been used, so it is refused until
    /// one window has passed.
    ReplayGuardRecovering,
    /// The newest policy bundle is older than the platform's maximum offline age: keys and
    /// status lists can no longer be vouched for, so every code is refused until a sync.
    PolicyStale,
    /// The records waiting for the platform reached the terminal's quota: the code is refused
    /// without being verified or recorded, so that nothing already recorded is ever dropped.
    BacklogFull,
    /// The store cannot take a record (its disk is full, or a write failed and it is being
    /// reopened): the code is refused without being recorded; the gate stays shut.
    StoreUnavailable,
}

impl Reason {
    /// Every reason, for tables, metrics and documentation.
    pub const ALL: [Reason; 20] = [
        Reason::Accepted,
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Replayed,
        Reason::Disabled,
        Reason::Lost,
        Reason::Replaced,
        Reason::Cancelled,
        Reason::StaticCodeUnknown,
        Reason::ServiceSuspended,
        Reason::WrongScene,
        Reason::TerminalNotAuthorized,
        Reason::ClockUntrusted,
        Reason::ReplayGuardRecovering,
        Reason::PolicyStale,
        Reason::BacklogFull,
        Reason::StoreUnavailable,
    ];

    /// The stable machine-readable code, e.g. `expired`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Replayed => "replayed",
            Reason::Disabled => "disabled",
            Reason::Lost => "lost",
            Reason::Replaced => "replaced",
            Reason::Cancelled => "cancelled",
            Reason::StaticCodeUnknown => "static_code_unknown",
            Reason::ServiceSuspended => "service_suspended",
            Reason::WrongScene => "wrong_scene",
            Reason::TerminalNotAuthorized => "terminal_not_authorized",
            Reason::ClockUntrusted => "clock_untrusted",
            Reason::ReplayGuardRecovering => "replay_guard_recovering",
            Reason::PolicyStale => "policy_stale",
            Reason::BacklogFull => "backlog_full",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }

    /// Parses a stable reason code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The message shown at the gate. Chinese first; the three rule-1/2 reasons share
    /// 非法二维码 so that a forger learns nothing from the display.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Accepted => "验证通过",
            Reason::Malformed | Reason::UnknownKey | Reason::BadSignature => "非法二维码",
            Reason::Expired => "码已过期",
            Reason::NotYetValid => "码尚未生效",
            Reason::Replayed => "码已使用",
            Reason::Disabled => "码已停用",
            Reason::Lost => "码已挂失",
            Reason::Replaced => "码已换码",
            Reason::Cancelled => "码已注销",
            Reason::StaticCodeUnknown => "码未登记",
            Reason::ServiceSuspended => "服务已暂停",
            Reason::WrongScene => "非本场景二维码",
            Reason::TerminalNotAuthorized => "终端未授权",
            Reason::ClockUntrusted => "终端时间不可信",
            Reason::ReplayGuardRecovering => "终端恢复中，请稍后重试",
            Reason::PolicyStale => "终端策略已过期，请联系管理员",
            Reason::BacklogFull => "终端存储已满，请联系管理员",
            Reason::StoreUnavailable => "终端存储故障，请联系管理员",
        }
    }

    pub fn is_accepted(self) -> bool {
        self == Reason::Accepted
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Dynamic (动态码) or static (静态码) code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    Dynamic,
    Static,
}

impl CodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeKind::Dynamic => "dynamic",
            CodeKind::Static => "static",
        }
    }
}

/// Access mode of a code (spec `ymtb.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// 融合码: one code carrying several business codes.
    Fused,
    /// 业务码
    Business,
    /// 独立码
    Independent,
}

/// What a business system needs from an accepted code. Never carries the raw `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessClaims {
    pub issuer: String,
    pub kind: CodeKind,
    pub service: String,
    /// The scene this terminal accepted the code for, when the terminal serves named scenes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<AccessMode>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub business_codes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// The verifier's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// Present when the code authenticated (whatever the final reason), so that records can
    /// say what was refused; business systems only see it when `reason` is `Accepted`.
    pub claims: Option<BusinessClaims>,
}

impl Verdict {
    pub fn refused(reason: Reason) -> Verdict {
        Verdict {
            reason,
            claims: None,
        }
    }

    pub fn accepted(&self) -> bool {
        self.reason.is_accepted()
    }

    pub fn message(&self) -> &'static str {
        self.reason.message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(Reason::from_code(r.code()), Some(r));
            let json = serde_json::to_string(&r).expect("serialize");
            assert_eq!(json, format!("\"{}\"", r.code()));
        }
        assert_eq!(Reason::from_code("nope"), None);
    }

    #[test]
    fn expired_message_is_exact() {
        assert_eq!(Reason::Expired.message(), "码已过期");
        assert_eq!(Reason::Replayed.message(), "码已使用");
        assert_eq!(Reason::Malformed.message(), "非法二维码");
        assert_eq!(Reason::BadSignature.message(), "非法二维码");
    }
}
