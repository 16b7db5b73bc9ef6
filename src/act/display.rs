//! The display line: each verdict's Chinese message with its reason code, as one JSON line on
//! stdout (journald under systemd) and a log event.

use super::Output;
use crate::checkpoint::Checked;

#[derive(Debug, Default)]
pub struct StdoutDisplay;

impl Output for StdoutDisplay {
    fn act(&mut self, checked: &Checked, source: &str) {
        let report = checked.report();
        let line = serde_json::json!({
            "source": source,
            "verdict": report,
        });
        println!("{line}");
        tracing::info!(
            reason = %checked.reason(),
            message = checked.verification.verdict.message(),
            seq = checked.seq(),
            "verdict"
        );
    }
}
