//! From a validated configuration to running parts: the checkpoint (store + trust + clock),
//! the sync client, the outputs and one factory per source.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::act::{command, relay, serial, webhook, GateOutput};
use crate::capture::scanner::TcpScannerSource;
use crate::capture::{
    CameraSource, FileSource, MjpegSource, ScannerSource, Source, SourceError, V4lCamera,
};
use crate::checkpoint::Checkpoint;
use crate::checkpoint::Create;
use crate::clock::{SystemTimeSource, TrustedClock};
use crate::daemon::config::{Config, RelayLine, SourceConfig};
use crate::sync::{Enrollment, SyncOptions, Syncer};
use crate::telemetry::{Counters, SourceKind};

/// Opens the store and trust state named by `cfg` and builds the checkpoint.
pub fn checkpoint_from(cfg: &Config) -> anyhow::Result<Checkpoint> {
    // An enrolled gate's keys come in bundles: its local trust file is used only if present.
    let trust_file = cfg
        .trust_file
        .as_deref()
        .filter(|f| cfg.platform.is_none() || f.exists());
    let trust = crate::local_trust::load_trust(
        trust_file,
        cfg.status_file.as_deref(),
        crate::verification::trust::Terminal {
            authorized: true,
            scenes: if cfg.scenes.is_empty() {
                crate::verification::trust::Scenes::Any
            } else {
                crate::verification::trust::Scenes::Only(cfg.scenes.clone())
            },
            accept_unknown_static: cfg.accept_unknown_static,
        },
        crate::verification::trust::Settings::new(cfg.refresh_s, cfg.skew_s)?,
    )?;
    let source = SystemTimeSource::new(cfg.trust_system_clock);
    let tolerance_ms = cfg.skew_s * 1000;
    let checkpoint = Checkpoint::open(&cfg.state_dir, Create::Guarded, trust, |floor| {
        Arc::new(TrustedClock::new(source, floor, tolerance_ms))
    })
    .with_context(|| format!("opening the store in {}", cfg.state_dir.display()))?;
    let status = checkpoint.status();
    tracing::info!(state = ?status.open_state, next_seq = status.next_seq, "store open");
    Ok(checkpoint)
}

/// The sync client for `cfg`'s `[platform]` (defaults when the section is absent).
pub fn syncer_for(
    cfg: &Config,
    checkpoint: Arc<Checkpoint>,
    enrollment: Enrollment,
) -> anyhow::Result<Arc<Syncer>> {
    let mut opts = SyncOptions::default();
    if let Some(p) = &cfg.platform {
        opts.batch = p.batch;
        opts.max_backlog = p.max_backlog;
        opts.online_timeout = Duration::from_millis(p.online_timeout_ms);
        opts.interval = p.interval_s.map(Duration::from_secs);
    }
    if enrollment.terminal_id != cfg.terminal_id {
        anyhow::bail!(
            "enrolled as terminal {} but configured as {}",
            enrollment.terminal_id,
            cfg.terminal_id
        );
    }
    Ok(Arc::new(Syncer::new(checkpoint, enrollment, opts)?))
}

/// How to (re)open one configured source.
pub struct SourcePlan {
    /// The source's name in logs, metrics and the status page.
    pub name: String,
    pub kind: SourceKind,
    /// Reopen it when it fails or ends (every source but a file replay and stdin).
    pub reopen: bool,
    /// Opens the source; called again after a failure when `reopen`. Runs on the capture
    /// thread (a V4L2 device must live on the thread that opened it).
    pub open: Box<dyn FnMut() -> Result<Box<dyn Source>, SourceError> + Send>,
}

impl std::fmt::Debug for SourcePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcePlan")
            .field("name", &self.name)
            .field("reopen", &self.reopen)
            .finish_non_exhaustive()
    }
}

/// The plan for source `s`. A TCP scanner's port is bound here, so that a port in use is a
/// start-up error rather than a source that never comes up.
pub fn source_plan(s: &SourceConfig) -> anyhow::Result<SourcePlan> {
    fn boxed<S: Source + 'static>(s: S) -> Box<dyn Source> {
        Box::new(s)
    }
    Ok(match s.clone() {
        SourceConfig::Camera(c) => SourcePlan {
            name: format!("camera:{}", c.device.display()),
            kind: SourceKind::Frames,
            reopen: true,
            open: Box::new(move || Ok(boxed(CameraSource::new(V4lCamera::new(c.clone()))))),
        },
        SourceConfig::Mjpeg { url } => SourcePlan {
            name: format!("mjpeg:{url}"),
            kind: SourceKind::Frames,
            reopen: true,
            open: Box::new(move || MjpegSource::connect(&url).map(boxed)),
        },
        SourceConfig::Files { paths } => SourcePlan {
            name: "files".into(),
            kind: SourceKind::Files,
            reopen: false,
            open: Box::new(move || FileSource::new(&paths).map(boxed)),
        },
        SourceConfig::ScannerSerial { device } => SourcePlan {
            name: format!("serial:{}", device.display()),
            kind: SourceKind::Texts,
            reopen: true,
            open: Box::new(move || ScannerSource::device(&device).map(boxed)),
        },
        SourceConfig::ScannerTcp { listen, allow } => {
            let listener = std::net::TcpListener::bind(listen)
                .with_context(|| format!("binding the scanner port {listen}"))?;
            SourcePlan {
                name: format!("tcp:{listen}"),
                kind: SourceKind::Texts,
                reopen: true,
                open: Box::new(move || {
                    let l = listener
                        .try_clone()
                        .map_err(|e| SourceError::new(&format!("tcp:{listen}"), e))?;
                    TcpScannerSource::new(l, allow.clone()).map(boxed)
                }),
            }
        }
        SourceConfig::ScannerStdin => SourcePlan {
            name: "stdin".into(),
            kind: SourceKind::Texts,
            reopen: false,
            open: Box::new(|| Ok(boxed(ScannerSource::stdin()))),
        },
    })
}

/// The gate's outputs as `cfg` describes them (relay, webhook, command, serial display). The
/// relay is claimed here: one that cannot be driven is a start-up error.
pub fn gate_output(cfg: &Config, counters: &Counters) -> anyhow::Result<GateOutput> {
    let relay = match &cfg.relay {
        None => None,
        Some(r) => {
            let device: Box<dyn relay::Relay> = match &r.line {
                RelayLine::Gpio {
                    chip,
                    line,
                    active_low,
                } => Box::new(relay::CdevRelay::new(chip.clone(), *line, *active_low)),
                RelayLine::File { path } => Box::new(relay::FileRelay::new(path.clone())),
            };
            let health = Arc::new(crate::telemetry::RelayHealth::default());
            *counters.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(health.clone());
            let output = relay::RelayOutput::start(device, health)
                .map_err(|e| anyhow::anyhow!("the gate relay cannot be driven: {e}"))?;
            Some((output, Duration::from_millis(r.pulse_ms)))
        }
    };
    let webhook = match &cfg.webhook {
        None => None,
        Some(w) => {
            let secret = crate::files::read_secret(&w.secret_file)?;
            Some(webhook::Webhook::start(webhook::WebhookConfig {
                url: w.url.clone(),
                secret,
                timeout: Duration::from_millis(w.timeout_ms),
                retries: w.retries,
            })?)
        }
    };
    let command = cfg
        .command
        .clone()
        .map(command::Command::start)
        .transpose()?;
    let serial = cfg
        .serial
        .clone()
        .map(serial::SerialOutput::start)
        .transpose()?;
    Ok(GateOutput {
        terminal: cfg.terminal_id.clone(),
        rules: cfg.rules.clone(),
        relay,
        webhook,
        command,
        serial,
    })
}
