//! The local command: verdicts the rules route here run a local program (door controller
//! script, LED panel driver) with the verdict in its environment — on its own thread, with a
//! timeout, so a hung script never holds the gate.
//!
//! Environment: `YIMA_ACCEPTED` (1/0), `YIMA_REASON`, `YIMA_MESSAGE`, `YIMA_SEQ`,
//! `YIMA_SERVICE`, `YIMA_SCENE`, `YIMA_KIND`, `YIMA_TERMINAL`. Never the subject.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::checkpoint::VerdictReport;

/// Runs waiting behind one in progress; beyond this they are dropped (and logged).
const QUEUE: usize = 16;

/// Command settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
}

/// The command thread's handle.
#[derive(Debug)]
pub struct Command {
    worker: super::worker::Worker<Vec<(String, String)>>,
}

/// The environment a run gets for `report` at `terminal`.
pub fn environment(terminal: &str, report: &VerdictReport) -> Vec<(String, String)> {
    let claims = report.claims.as_ref();
    let mut env = vec![
        ("YIMA_TERMINAL", terminal.to_string()),
        (
            "YIMA_ACCEPTED",
            if report.accepted { "1" } else { "0" }.to_string(),
        ),
        ("YIMA_REASON", report.reason.code().to_string()),
        ("YIMA_MESSAGE", report.message.to_string()),
        (
            "YIMA_SEQ",
            report.seq.map(|s| s.to_string()).unwrap_or_default(),
        ),
    ];
    if let Some(c) = claims {
        env.push(("YIMA_SERVICE", c.service.clone()));
        env.push(("YIMA_KIND", c.kind.as_str().to_string()));
        if let Some(s) = &c.scene {
            env.push(("YIMA_SCENE", s.clone()));
        }
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl Command {
    pub fn start(cfg: CommandConfig) -> std::io::Result<Command> {
        let worker =
            super::worker::Worker::start("command", QUEUE, move |env: Vec<(String, String)>| {
                run_once(&cfg, &env)
            })?;
        Ok(Command { worker })
    }

    /// Queues one run without waiting.
    pub fn send(&self, env: Vec<(String, String)>) {
        if !self.worker.offer(env) {
            tracing::warn!("command: {QUEUE} runs waiting; this one dropped");
        }
    }
}

fn run_once(cfg: &CommandConfig, env: &[(String, String)]) {
    let child = std::process::Command::new(&cfg.program)
        .args(&cfg.args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(program = %cfg.program.display(), error = %e, "command: cannot start");
            return;
        }
    };
    let deadline = Instant::now() + cfg.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                tracing::warn!(program = %cfg.program.display(), %status, "command: failed");
                return;
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(program = %cfg.program.display(), "command: timed out; killed");
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                tracing::error!(error = %e, "command: wait failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_the_verdict_in_its_environment_and_times_out() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out.txt");
        let command = Command::start(CommandConfig {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                format!(
                    "echo \"$YIMA_REASON $YIMA_SEQ $YIMA_MESSAGE\" >> {}",
                    out.display()
                ),
            ],
            timeout: Duration::from_secs(5),
        })
        .expect("start");
        command.send(vec![
            ("YIMA_REASON".into(), "expired".into()),
            ("YIMA_SEQ".into(), "7".into()),
            ("YIMA_MESSAGE".into(), "码已过期".into()),
        ]);
        drop(command);
        assert_eq!(
            std::fs::read_to_string(&out).expect("ran"),
            "expired 7 码已过期\n"
        );

        let slow = Command::start(CommandConfig {
            program: PathBuf::from("/bin/sleep"),
            args: vec!["30".into()],
            timeout: Duration::from_millis(50),
        })
        .expect("start");
        let t = Instant::now();
        slow.send(vec![]);
        drop(slow);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a hung command is killed"
        );
    }
}
