//! The gate daemon, `yima-gate run`: configuration, wiring, the pipeline threads, the local
//! API's runtime, systemd notification and the one shutdown path.
//!
//! **Must not know:** how a code is verified or stored (the checkpoint does that), what HTTP
//! routes exist (the api module), how the platform is spoken to (sync).

pub mod config;
pub mod pipeline;
pub mod wiring;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::act::display::StdoutDisplay;
use crate::act::Output;
use crate::daemon::config::Config;
use crate::daemon::pipeline::Pipeline;
pub use crate::daemon::wiring::{checkpoint_from, gate_output, syncer_for};

/// A pipeline stage panicked: a bug. It is logged, the rest drains, and the process exits
/// with [`crate::cli::EXIT_INTERNAL`] so that systemd restarts it and the journal says why.
#[derive(Debug, thiserror::Error)]
#[error("pipeline stage `{stage}` panicked: {message}")]
pub struct StagePanicked {
    pub stage: String,
    pub message: String,
}
use crate::sync::Enrollment;

/// How long a stop may take: signal → sources stopped → everything presented verified,
/// recorded and acted on → sync thread told to stop. Shorter than the unit's
/// `TimeoutStopSec=20s`, so systemd never has to kill a draining gate.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How long a stop waits for the sync thread to finish a request in flight.
pub const SYNC_JOIN: Duration = Duration::from_secs(2);

/// `yima-gate run`: starts the pipeline and runs until SIGTERM/SIGINT or until every source
/// has ended by itself; then drains within [`SHUTDOWN_GRACE`]. A stage that panicked ends the
/// run with [`StagePanicked`] (exit 70).
pub fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    crate::sync::tls::install_provider();
    let checkpoint = Arc::new(checkpoint_from(&cfg)?);
    // Outputs first: a relay that cannot be driven is a start-up error, not a surprise at
    // the first accepted code.
    let counters = Arc::new(crate::telemetry::Counters::default());
    let outputs: Vec<Box<dyn Output>> = vec![
        Box::new(StdoutDisplay),
        Box::new(gate_output(&cfg, &counters)?),
    ];
    // Signals are caught before any stage runs: a SIGTERM that arrives while the pipeline
    // starts must drain it, not kill the process with work in flight.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api")
        .enable_all()
        .build()?;
    // The API port is bound before any stage runs too: a port in use is a setup error,
    // reported before anything is verified.
    let (mut term, mut int, listener) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _entered = runtime.enter();
        let std_listener = std::net::TcpListener::bind(cfg.api_listen)
            .with_context(|| format!("binding the API to {}", cfg.api_listen))?;
        std_listener.set_nonblocking(true)?;
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            tokio::net::TcpListener::from_std(std_listener)?,
        )
    };
    let syncer = match (&cfg.platform, Enrollment::load(&cfg.state_dir)?) {
        (Some(_), Some(enrollment)) => Some(syncer_for(&cfg, checkpoint.clone(), enrollment)?),
        (Some(p), None) => {
            tracing::warn!(platform = %p.url, "not enrolled: running on local trust files only (yima-gate enroll)");
            None
        }
        (None, _) => None,
    };
    let token = crate::api::load_or_create_token(cfg.api_token_file.as_deref(), &cfg.state_dir)?;
    let sync_thread = syncer.as_ref().map(|s| s.spawn()).transpose()?;
    let pipeline = Pipeline::start(
        &cfg,
        checkpoint.clone(),
        outputs,
        syncer.clone(),
        counters.clone(),
    )?;
    let running = Arc::new(AtomicBool::new(true));
    let api_state = Arc::new(crate::api::ApiState::new(
        cfg.terminal_id.clone(),
        checkpoint.clone(),
        pipeline.counters.clone(),
        running.clone(),
        token,
        syncer.clone(),
    ));
    let mut panicked = None;
    runtime.block_on(async {
        use sd_notify::NotifyState;
        tracing::info!(listen = %cfg.api_listen, "api: listening");
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::api::serve(listener, api_state, async {
            let _ = api_stopped.await;
        }));
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        // systemd: ready once every stage runs; the watchdog is fed at half its period while
        // the verifier and the outputs run and no decode thread is wedged.
        let status = format!(
            "terminal {}: {} source(s)",
            cfg.terminal_id,
            cfg.sources.len()
        );
        let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        let watchdog =
            sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(10)));
        let mut feed = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = tick.tick() => {
                    if let Some(p) = pipeline.panicked() {
                        panicked = Some(p);
                        break;
                    }
                    if pipeline.sources_done() {
                        break;
                    }
                },
                _ = feed.tick(), if watchdog.is_some() => if pipeline.healthy() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                },
            }
        }
        running.store(false, Ordering::SeqCst);
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        let _ = api_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    });
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    let counters = pipeline.counters.clone();
    // The sync thread is told first: a push over a large backlog checks the flag between
    // batches, and what it has not pushed is durable in the store for the next start.
    if let Some(s) = &syncer {
        s.stop();
    }
    let drained = pipeline.shutdown(deadline);
    if let Some(t) = sync_thread {
        // A request in flight cannot be interrupted; what it has not confirmed is durable and
        // pushed at the next start (the cursor is fsynced before any record is deleted), so
        // the sync thread gets a short while, not the whole grace period.
        let deadline = deadline.min(std::time::Instant::now() + SYNC_JOIN);
        while !t.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("sync thread still waiting on the platform at the deadline; leaving it");
        }
    }
    // Leaving the runtime must not wait for connections still open (bounded, like the rest).
    runtime.shutdown_timeout(Duration::from_millis(500));
    tracing::info!(
        verified = counters.verified.load(Ordering::Relaxed),
        accepted = counters.accepted.load(Ordering::Relaxed),
        durable_seq = checkpoint.status().durable_seq,
        timed_out = drained.timed_out,
        "stopped"
    );
    match panicked.or_else(|| drained.panicked.into_iter().next()) {
        Some(p) => Err(p.into()),
        None => Ok(()),
    }
}
