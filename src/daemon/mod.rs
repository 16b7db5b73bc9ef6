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
use std::sync::{Arc, Mutex};
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

/// `yima-gate run`: starts the pipeline and runs until SIGTERM/SIGINT or until every source
/// has ended; then drains. The drain is bounded by one decode and the presented queue (at
/// most 64 verifications, each one fsync) — well inside systemd's stop timeout.
pub fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    crate::sync::tls::install_provider();
    let checkpoint = Arc::new(checkpoint_from(&cfg)?);
    let outputs: Vec<Box<dyn Output>> = vec![Box::new(StdoutDisplay), Box::new(gate_output(&cfg)?)];
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
    let sync_thread = syncer.as_ref().map(|s| s.spawn()).transpose()?;
    let pipeline = Pipeline::start(&cfg, checkpoint.clone(), outputs, syncer.clone())?;
    let ready = Arc::new(AtomicBool::new(true));
    let api_state = Arc::new(crate::api::ApiState {
        terminal: cfg.terminal_id.clone(),
        checkpoint: checkpoint.clone(),
        clock: checkpoint.clock(),
        counters: pipeline.counters.clone(),
        ready: ready.clone(),
        token: crate::api::load_or_create_token(cfg.api_token_file.as_deref(), &cfg.state_dir)?,
        rate: Mutex::new(crate::api::RateLimit::new(100, 50)),
        syncer: syncer.clone(),
    });
    runtime.block_on(async {
        use sd_notify::NotifyState;
        tracing::info!(listen = %cfg.api_listen, "api: listening");
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, crate::api::router(api_state))
                .with_graceful_shutdown(async {
                    let _ = api_stopped.await;
                })
                .await
        });
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        // systemd: ready once every stage runs; the watchdog is fed at half its period while
        // the verifier is alive (a wedged verifier gets the gate restarted).
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
                _ = tick.tick() => if pipeline.sources_done() { break; },
                _ = feed.tick(), if watchdog.is_some() => if pipeline.healthy() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                },
            }
        }
        ready.store(false, Ordering::SeqCst);
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        let _ = api_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        anyhow::Ok(())
    })?;
    let counters = pipeline.counters.clone();
    pipeline.shutdown();
    if let (Some(s), Some(t)) = (&syncer, sync_thread) {
        // Records not pushed yet are durable in the store; the next start pushes them.
        s.stop();
        let _ = t.join();
    }
    tracing::info!(
        verified = counters.verified.load(Ordering::Relaxed),
        accepted = counters.accepted.load(Ordering::Relaxed),
        durable_seq = checkpoint.status().durable_seq,
        "stopped"
    );
    Ok(())
}
