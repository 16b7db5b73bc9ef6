//! `yima-gate verify`: one code (or a stream of codes) verified against local trust files and
//! recorded durably — the offline trust path, for counters, audits and commissioning.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::{parse_rfc3339, EXIT_REFUSED};
use crate::capture::image::load_gray;
use crate::checkpoint::{Checked, Checkpoint, Create};
use crate::clock::{Clock, FixedClock, SystemTimeSource, TrustedClock, VerifyTime};
use crate::verification::trust::{Scenes, Settings, Terminal, TrustState};

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Terminal state directory (replay tags and records).
    #[arg(long)]
    state_dir: PathBuf,
    /// Trust file (one spec JSON entry or an array of them).
    #[arg(long)]
    trust: PathBuf,
    /// Status file: static-code states and suspended services.
    #[arg(long)]
    status: Option<PathBuf>,
    /// Scenes this terminal serves (repeat; none = every scene).
    #[arg(long = "scene")]
    scenes: Vec<String>,
    /// Verify at this trusted time (RFC 3339) instead of the clock.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    at: Option<i64>,
    /// Treat the system clock as trusted (GPS/PTP or otherwise disciplined).
    #[arg(long)]
    trust_system_clock: bool,
    /// Global refresh time of dynamic codes, seconds.
    #[arg(long, default_value_t = crate::verification::trust::DEFAULT_REFRESH_S,
          value_parser = clap::value_parser!(i64).range(1..=crate::verification::trust::MAX_REFRESH_S))]
    refresh: i64,
    /// Clock-skew tolerance, seconds (at most 30).
    #[arg(long, default_value_t = crate::verification::trust::DEFAULT_SKEW_S,
          value_parser = clap::value_parser!(i64).range(0..=crate::verification::trust::MAX_SKEW_S))]
    skew: i64,
    /// Accept static codes missing from the status list.
    #[arg(long)]
    accept_unknown_static: bool,
    /// Read the code from an image file instead.
    #[arg(long, conflicts_with_all = ["code", "stdin"])]
    image: Option<PathBuf>,
    /// Read codes from standard input, one per line; print one JSON line each.
    #[arg(long, conflicts_with = "code")]
    stdin: bool,
    /// The code text.
    #[arg(required_unless_present_any = ["image", "stdin"])]
    code: Option<String>,
}

fn trust_state(a: &VerifyArgs) -> anyhow::Result<TrustState> {
    Ok(crate::local_trust::load_trust(
        Some(&a.trust),
        a.status.as_deref(),
        Terminal {
            authorized: true,
            scenes: if a.scenes.is_empty() {
                Scenes::Any
            } else {
                Scenes::Only(a.scenes.iter().cloned().collect())
            },
            accept_unknown_static: a.accept_unknown_static,
        },
        Settings::new(a.refresh, a.skew)?,
    )?)
}

/// Runs `verify`.
pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let trust = trust_state(&a)?;
    let fixed = a.at;
    let (trust_system_clock, tolerance_ms) = (a.trust_system_clock, a.skew * 1000);
    let checkpoint = Checkpoint::open(&a.state_dir, Create::Guarded, trust, |floor| match fixed {
        Some(s) => Arc::new(FixedClock(VerifyTime::trusted(s * 1000))) as Arc<dyn Clock>,
        None => Arc::new(TrustedClock::new(
            SystemTimeSource::new(trust_system_clock),
            floor,
            tolerance_ms,
        )),
    })
    .with_context(|| format!("opening the store in {}", a.state_dir.display()))?;
    let clock = checkpoint.clock();
    let live = fixed.is_none();
    let check = |text: &str| -> anyhow::Result<Checked> {
        Ok(if live {
            checkpoint.check(text)?
        } else {
            checkpoint.check_at(text, clock.now())?
        })
    };
    let stdout = std::io::stdout();
    if a.stdin {
        let mut out = stdout.lock();
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading standard input")?;
            if line.trim().is_empty() {
                continue;
            }
            let checked = check(&line)?;
            writeln!(out, "{}", serde_json::to_string(&checked.report())?)?;
            out.flush()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = match (&a.image, &a.code) {
        (Some(path), _) => {
            let img = load_gray(path)?;
            let found = crate::decode::Decoder::default().decode(&img);
            match found.into_iter().next() {
                Some(d) => d.text,
                None => bail!("no QR code found in {}", path.display()),
            }
        }
        (None, Some(t)) => t.clone(),
        (None, None) => bail!("give a code, --image FILE or --stdin"),
    };
    let checked = check(&text)?;
    println!("{}", serde_json::to_string(&checked.report())?);
    Ok(if checked.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}
