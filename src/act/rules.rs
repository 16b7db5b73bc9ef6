//! The fusion rule engine (融码规则引擎): rules map a verdict and the code's kind, service,
//! scene and access mode (融合码 / 业务码 / 独立码) to actions. Pure; the daemon performs them.

use serde::Deserialize;

use crate::verification::verdict::{AccessMode, CodeKind, Reason, Verdict};

/// Something the gate does about a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Pulse the gate relay.
    Relay,
    /// POST the verdict and its business claims to the business system.
    Webhook,
    /// Run the configured local program with the verdict in its environment.
    Command,
    /// Write the verdict line to the serial display or controller.
    Serial,
}

/// One rule; an empty list matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default = "accepted_only")]
    pub reason: Vec<Reason>,
    #[serde(default)]
    pub kind: Vec<CodeKind>,
    #[serde(default)]
    pub service: Vec<String>,
    #[serde(default)]
    pub scene: Vec<String>,
    #[serde(default)]
    pub mode: Vec<AccessMode>,
    pub actions: Vec<Action>,
}

fn accepted_only() -> Vec<Reason> {
    vec![Reason::Accepted]
}

impl Rule {
    /// The rules a gate has when none is configured: open for every accepted code, and show
    /// every verdict on the serial display (a no-op without `[serial]`).
    pub fn default_set() -> Vec<Rule> {
        vec![
            Rule {
                reason: accepted_only(),
                kind: vec![],
                service: vec![],
                scene: vec![],
                mode: vec![],
                actions: vec![Action::Relay, Action::Webhook],
            },
            Rule {
                reason: Reason::ALL.to_vec(),
                kind: vec![],
                service: vec![],
                scene: vec![],
                mode: vec![],
                actions: vec![Action::Serial],
            },
        ]
    }

    fn matches(&self, v: &Verdict) -> bool {
        let c = v.claims.as_ref();
        let any_or = |empty: bool, hit: bool| empty || hit;
        self.reason.contains(&v.reason)
            && any_or(
                self.kind.is_empty(),
                c.is_some_and(|c| self.kind.contains(&c.kind)),
            )
            && any_or(
                self.service.is_empty(),
                c.is_some_and(|c| self.service.contains(&c.service)),
            )
            && any_or(
                self.scene.is_empty(),
                c.and_then(|c| c.scene.as_ref())
                    .is_some_and(|s| self.scene.contains(s)),
            )
            && any_or(
                self.mode.is_empty(),
                c.and_then(|c| c.mode)
                    .is_some_and(|m| self.mode.contains(&m)),
            )
    }
}

/// The actions of every rule matching `verdict` (each once, in a stable order). A relay is
/// never opened for a refused code, whatever the rules say.
pub fn actions(rules: &[Rule], verdict: &Verdict) -> Vec<Action> {
    let mut out: Vec<Action> = rules
        .iter()
        .filter(|r| r.matches(verdict))
        .flat_map(|r| r.actions.iter().copied())
        .filter(|a| *a != Action::Relay || verdict.accepted())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::verdict::BusinessClaims;

    fn verdict(
        reason: Reason,
        kind: CodeKind,
        service: &str,
        scene: Option<&str>,
        mode: Option<AccessMode>,
    ) -> Verdict {
        Verdict {
            reason,
            claims: Some(BusinessClaims {
                issuer: "I".into(),
                kind,
                service: service.into(),
                scene: scene.map(str::to_string),
                mode,
                business_codes: vec![],
                catalogue: None,
                serial: None,
                version: None,
                issued_at: 0,
                expires_at: 0,
            }),
        }
    }

    #[test]
    fn default_rules_open_for_accepted_only_and_display_every_verdict() {
        let rules = Rule::default_set();
        let ok = verdict(Reason::Accepted, CodeKind::Dynamic, "S", None, None);
        assert_eq!(
            actions(&rules, &ok),
            vec![Action::Relay, Action::Webhook, Action::Serial]
        );
        let bad = verdict(Reason::Expired, CodeKind::Dynamic, "S", None, None);
        assert_eq!(actions(&rules, &bad), vec![Action::Serial]);
        for r in Reason::ALL {
            let a = actions(&rules, &Verdict::refused(r));
            assert!(a.contains(&Action::Serial), "{r:?} is shown");
            assert_eq!(a.contains(&Action::Relay), r == Reason::Accepted, "{r:?}");
        }
    }

    #[test]
    fn rules_filter_by_kind_service_scene_and_mode() {
        let rules: Vec<Rule> = vec![Rule {
            reason: vec![Reason::Accepted],
            kind: vec![CodeKind::Dynamic],
            service: vec!["BUS".into()],
            scene: vec!["GATE-1".into()],
            mode: vec![AccessMode::Fused, AccessMode::Business],
            actions: vec![Action::Relay],
        }];
        let hit = verdict(
            Reason::Accepted,
            CodeKind::Dynamic,
            "BUS",
            Some("GATE-1"),
            Some(AccessMode::Fused),
        );
        assert_eq!(actions(&rules, &hit), vec![Action::Relay]);
        for miss in [
            verdict(
                Reason::Accepted,
                CodeKind::Static,
                "BUS",
                Some("GATE-1"),
                Some(AccessMode::Fused),
            ),
            verdict(
                Reason::Accepted,
                CodeKind::Dynamic,
                "CARD",
                Some("GATE-1"),
                Some(AccessMode::Fused),
            ),
            verdict(
                Reason::Accepted,
                CodeKind::Dynamic,
                "BUS",
                Some("GATE-2"),
                Some(AccessMode::Fused),
            ),
            verdict(
                Reason::Accepted,
                CodeKind::Dynamic,
                "BUS",
                Some("GATE-1"),
                Some(AccessMode::Independent),
            ),
            verdict(
                Reason::Accepted,
                CodeKind::Dynamic,
                "BUS",
                None,
                Some(AccessMode::Fused),
            ),
        ] {
            assert!(actions(&rules, &miss).is_empty(), "{miss:?}");
        }
    }

    #[test]
    fn a_rule_cannot_open_the_gate_for_a_refused_code() {
        let rules = vec![Rule {
            reason: vec![Reason::Expired, Reason::Accepted],
            kind: vec![],
            service: vec![],
            scene: vec![],
            mode: vec![],
            actions: vec![Action::Relay],
        }];
        let v = verdict(Reason::Expired, CodeKind::Dynamic, "S", None, None);
        assert!(actions(&rules, &v).is_empty());
    }
}
