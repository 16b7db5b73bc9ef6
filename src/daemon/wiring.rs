//! From a validated configuration to running parts: the checkpoint (store + trust + clock),
//! the sync client, the outputs and one factory per source.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::act::{command, relay, serial, webhook, GateOutput};
use crate::capture::{CameraSource, FileSource, MjpegSource, ScannerSource, Source, V4lCamera};
use crate::checkpoint::Checkpoint;
use crate::checkpoint::Create;
use crate::clock::{SystemTimeSource, TrustedClock};
use crate::daemon::config::{Config, RelayLine, SourceConfig};
use crate::sync::{Enrollment, SyncOptions, Syncer};

/// Opens the store and trust state named by `cfg` and builds the checkpoint.
pub fn checkpoint_from(cfg: &Config) -> anyhow::Result<Checkpoint> {
    let trust = crate::local_trust::load_trust(
        cfg.trust_file.as_deref(),
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

pub type Factory = Box<dyn FnOnce() -> Result<Box<dyn Source>, String> + Send>;

pub fn factory(s: &SourceConfig) -> (String, Factory) {
    match s.clone() {
        SourceConfig::Camera(c) => (
            format!("camera:/dev/video{}", c.index),
            Box::new(move || Ok(Box::new(CameraSource::new(V4lCamera::new(c))) as Box<dyn Source>)),
        ),
        SourceConfig::Mjpeg { url } => (
            format!("mjpeg:{url}"),
            Box::new(move || {
                MjpegSource::connect(&url)
                    .map(|s| Box::new(s) as Box<dyn Source>)
                    .map_err(|e| e.to_string())
            }),
        ),
        SourceConfig::Files { paths } => (
            "files".into(),
            Box::new(move || {
                FileSource::new(&paths)
                    .map(|s| Box::new(s) as Box<dyn Source>)
                    .map_err(|e| e.to_string())
            }),
        ),
        SourceConfig::ScannerSerial { device } => (
            format!("serial:{}", device.display()),
            Box::new(move || {
                ScannerSource::device(&device)
                    .map(|s| Box::new(s) as Box<dyn Source>)
                    .map_err(|e| e.to_string())
            }),
        ),
        SourceConfig::ScannerTcp { listen } => (
            format!("tcp:{listen}"),
            Box::new(move || {
                let l = std::net::TcpListener::bind(listen).map_err(|e| e.to_string())?;
                let (conn, peer) = l.accept().map_err(|e| e.to_string())?;
                tracing::info!(%peer, "scanner connected");
                Ok(
                    Box::new(ScannerSource::from_reader(&format!("tcp:{peer}"), conn))
                        as Box<dyn Source>,
                )
            }),
        ),
        SourceConfig::ScannerStdin => (
            "stdin".into(),
            Box::new(|| Ok(Box::new(ScannerSource::stdin()) as Box<dyn Source>)),
        ),
    }
}

/// The gate's outputs as `cfg` describes them (relay, webhook, command, serial display).
pub fn gate_output(cfg: &Config) -> anyhow::Result<GateOutput> {
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
            Some((
                relay::RelayOutput::start(device)?,
                Duration::from_millis(r.pulse_ms),
            ))
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
