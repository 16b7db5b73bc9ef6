//! Acting on durable verdicts: the display line, the fusion rules, and the outputs they drive —
//! the gate relay, the business webhook, a local command and a serial LED display or PLC —
//! each drained by its own bounded [`worker`] so that no output delays the next code.
//!
//! **Must not know:** how a verdict was reached or stored. An output is handed a verdict whose
//! record is already durable and decides nothing but what to drive.

pub mod command;
pub mod relay;
pub mod rules;
pub mod serial;
pub mod webhook;
pub mod worker;

pub mod display;

use std::time::Duration;

use crate::checkpoint::Checked;

/// What to do with a verdict (the gate relay, webhook and display arrive here).
pub trait Output: Send {
    fn act(&mut self, checked: &Checked, source: &str);
}

/// The gate: the fusion rules decide, the relay opens (on its own thread).
pub struct GateOutput {
    /// This terminal's id (webhook bodies, the command's environment).
    pub terminal: String,
    pub rules: Vec<rules::Rule>,
    /// The relay and its pulse length.
    pub relay: Option<(relay::RelayOutput, Duration)>,
    pub webhook: Option<webhook::Webhook>,
    pub command: Option<command::Command>,
    pub serial: Option<serial::SerialOutput>,
}

impl std::fmt::Debug for GateOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateOutput")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Output for GateOutput {
    fn act(&mut self, checked: &Checked, _source: &str) {
        // Reached only after the record is durable: the verify stage sends nothing earlier.
        for action in rules::actions(&self.rules, &checked.verification.verdict) {
            match action {
                rules::Action::Relay => {
                    if let Some((relay, pulse)) = &self.relay {
                        relay.open(*pulse);
                    }
                }
                rules::Action::Webhook => {
                    if let Some(hook) = &self.webhook {
                        let body = serde_json::json!({
                            "terminal": self.terminal,
                            "verdict": checked.report(),
                        });
                        hook.send(body.to_string().into_bytes());
                    }
                }
                rules::Action::Command => {
                    if let Some(command) = &self.command {
                        command.send(command::environment(&self.terminal, &checked.report()));
                    }
                }
                rules::Action::Serial => {
                    if let Some(serial) = &self.serial {
                        serial.send(&checked.report());
                    }
                }
            }
        }
    }
}
