//! The gate daemon's pipeline: capture → decode → presentation → verify → record → act, one
//! stage per thread, joined by bounded channels; one shutdown path.
//!
//! ```text
//! source thread ──frames──▶ LatestSlot (newest wins) ──▶ decode thread ─┐
//! source thread ──texts (scanner)────────────────────────────────────────┤
//!                                   presentations (one per code in view) ▼
//!                         sync_channel(64, blocks when full) ──▶ verify thread (checkpoint:
//!                         durable before the answer) ──▶ sync_channel(64) ──▶ act thread
//! ```
//!
//! **Invariants:** frames may be dropped (newest wins), presented codes and verdicts never are
//! (their channels block). Blocking work (capture, decode, fsync) runs on these threads, never
//! on async workers. On shutdown the sources stop, then everything already presented is
//! verified, recorded and acted on before `run` returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::camera::{CameraSource, V4lCamera};
use crate::capture::{FileSource, Input, LatestSlot, MjpegSource, ScannerSource, Source};
use crate::checkpoint::{Checked, Checkpoint, VerdictReport};
use crate::clock::{wall_clock_ms, SystemTimeSource, TrustedClock};
use crate::config::{Config, SourceConfig};
use crate::decode::{Decoder, DecoderConfig};
use crate::presentation::Presentations;
use crate::store::{Create, Store, StoreError};
use crate::sync::{Enrollment, SyncOptions, Syncer};
use crate::verdict::Reason;

/// Shown at the gate when the backlog quota is reached (reason code `backlog_full`).
pub const BACKLOG_FULL_MESSAGE: &str = "终端存储已满，请联系管理员";

/// Presented codes waiting for verification; the capture side blocks when it is full.
const PRESENTED_QUEUE: usize = 64;
/// Verdicts waiting for the outputs.
const VERDICT_QUEUE: usize = 64;
/// After a stop, the verifier ends at the first gap this long with nothing presented.
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// A code text that begins a presentation.
#[derive(Debug, Clone)]
struct Presented {
    text: String,
    source: Arc<str>,
}

/// Counters for the status page and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub decoded: AtomicU64,
    pub presentations: AtomicU64,
    pub verified: AtomicU64,
    pub accepted: AtomicU64,
    /// Codes refused without a record because the backlog quota was reached.
    pub backlog_full: AtomicU64,
    /// Verdicts by reason, indexed like `Reason::ALL`.
    pub by_reason: [AtomicU64; Reason::ALL.len()],
    /// The latest verdicts, newest first (status page feed).
    pub recent: Mutex<std::collections::VecDeque<VerdictReport>>,
    /// A small PNG of the last decoded camera frame (status page), refreshed at most once a
    /// second; kept in memory only, served to token holders only.
    pub thumbnail: Mutex<Option<Thumbnail>>,
}

/// The last frame, shrunk for the status page.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub png: Vec<u8>,
    /// When it was taken, ms since the pipeline started.
    pub at_ms: i64,
    pub source: Arc<str>,
}

/// Width of the status page's frame thumbnail, px.
const THUMBNAIL_WIDTH: u32 = 192;
/// Least time between two thumbnails, ms (encoding one costs ~1 ms of the decode thread).
const THUMBNAIL_EVERY_MS: i64 = 1000;

impl Counters {
    /// Keeps a thumbnail of `frame` if the last one is older than a second.
    fn maybe_thumbnail(&self, frame: &image::GrayImage, now_ms: i64, source: &Arc<str>) {
        let due = self
            .thumbnail
            .lock()
            .map(|t| {
                t.as_ref()
                    .is_none_or(|t| now_ms - t.at_ms >= THUMBNAIL_EVERY_MS)
            })
            .unwrap_or(false);
        if !due || frame.width() == 0 {
            return;
        }
        let h = (u64::from(frame.height()) * u64::from(THUMBNAIL_WIDTH) / u64::from(frame.width()))
            .max(1) as u32;
        let small = image::imageops::thumbnail(frame, THUMBNAIL_WIDTH, h);
        let mut png = Vec::new();
        if image::DynamicImage::ImageLuma8(small)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .is_ok()
        {
            if let Ok(mut t) = self.thumbnail.lock() {
                *t = Some(Thumbnail {
                    png,
                    at_ms: now_ms,
                    source: source.clone(),
                });
            }
        }
    }
}

/// Verdicts kept for the status page.
const RECENT: usize = 20;

impl Counters {
    /// Counts one durable verification.
    pub fn verdict(&self, checked: &Checked) {
        self.verified.fetch_add(1, Ordering::Relaxed);
        if checked.accepted() {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(i) = Reason::ALL.iter().position(|r| *r == checked.reason()) {
            self.by_reason[i].fetch_add(1, Ordering::Relaxed);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_front(checked.report());
        recent.truncate(RECENT);
    }
}

/// What to do with a verdict (the gate relay, webhook and display arrive here).
pub trait Output: Send {
    fn act(&mut self, checked: &Checked, source: &str);
}

/// The display line: the Chinese message with the reason code, as one JSON line on stdout.
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
            seq = checked.record.seq,
            "verdict"
        );
    }
}

/// The gate: the fusion rules decide, the relay opens (on its own thread).
pub struct GateOutput {
    terminal: String,
    rules: Vec<crate::rules::Rule>,
    relay: Option<(crate::relay::RelayOutput, Duration)>,
    webhook: Option<crate::webhook::Webhook>,
    hook: Option<crate::hook::Hook>,
    serial: Option<crate::serial::SerialOutput>,
}

impl std::fmt::Debug for GateOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateOutput")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl GateOutput {
    pub fn from_config(cfg: &Config) -> anyhow::Result<GateOutput> {
        let relay = match &cfg.relay {
            None => None,
            Some(r) => {
                let device: Box<dyn crate::relay::Relay> = match &r.line {
                    crate::config::RelayLine::Gpio {
                        chip,
                        line,
                        active_low,
                    } => Box::new(crate::relay::CdevRelay::new(
                        chip.clone(),
                        *line,
                        *active_low,
                    )),
                    crate::config::RelayLine::File { path } => {
                        Box::new(crate::relay::FileRelay::new(path.clone()))
                    }
                };
                Some((
                    crate::relay::RelayOutput::start(device)?,
                    Duration::from_millis(r.pulse_ms),
                ))
            }
        };
        let webhook = match &cfg.webhook {
            None => None,
            Some(w) => {
                let secret = crate::keys::read_secret_file(&w.secret_file)?;
                Some(crate::webhook::Webhook::start(
                    crate::webhook::WebhookConfig {
                        url: w.url.clone(),
                        secret,
                        timeout: Duration::from_millis(w.timeout_ms),
                        retries: w.retries,
                    },
                )?)
            }
        };
        let hook = match &cfg.hook {
            None => None,
            Some(h) => Some(crate::hook::Hook::start(h.clone())?),
        };
        let serial = cfg
            .serial
            .clone()
            .map(crate::serial::SerialOutput::start)
            .transpose()?;
        Ok(GateOutput {
            terminal: cfg.terminal_id.clone(),
            rules: cfg.rules.clone(),
            relay,
            webhook,
            hook,
            serial,
        })
    }
}

impl Output for GateOutput {
    fn act(&mut self, checked: &Checked, _source: &str) {
        // Reached only after the record is durable: the verify stage sends nothing earlier.
        for action in crate::rules::actions(&self.rules, &checked.verification.verdict) {
            match action {
                crate::rules::Action::Relay => {
                    if let Some((relay, pulse)) = &self.relay {
                        relay.open(*pulse);
                    }
                }
                crate::rules::Action::Webhook => {
                    if let Some(hook) = &self.webhook {
                        let body = serde_json::json!({
                            "terminal": self.terminal,
                            "verdict": checked.report(),
                        });
                        hook.send(body.to_string().into_bytes());
                    }
                }
                crate::rules::Action::Command => {
                    if let Some(hook) = &self.hook {
                        hook.send(crate::hook::environment(&self.terminal, &checked.report()));
                    }
                }
                crate::rules::Action::Serial => {
                    if let Some(serial) = &self.serial {
                        serial.send(&checked.report());
                    }
                }
            }
        }
    }
}

/// The running pipeline's handle.
#[derive(Debug)]
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    slots: Vec<Arc<LatestSlot<crate::capture::Frame>>>,
    /// Capture threads: may be blocked in a device read; never joined at shutdown.
    captures: Vec<std::thread::JoinHandle<()>>,
    /// Decode threads: end once their slot is closed and empty.
    decoders: Vec<std::thread::JoinHandle<()>>,
    verify: Option<std::thread::JoinHandle<()>>,
    act: Option<std::thread::JoinHandle<()>>,
    pub counters: Arc<Counters>,
}

/// Opens the store and trust state named by `cfg` and builds the checkpoint.
pub fn checkpoint_from(cfg: &Config) -> anyhow::Result<Checkpoint> {
    let trust = crate::policy::load_trust(
        cfg.trust_file.as_deref(),
        cfg.status_file.as_deref(),
        crate::policy::Terminal {
            authorized: true,
            scenes: if cfg.scenes.is_empty() {
                crate::policy::Scenes::Any
            } else {
                crate::policy::Scenes::Only(cfg.scenes.clone())
            },
            accept_unknown_static: cfg.accept_unknown_static,
        },
        crate::policy::Settings::new(cfg.refresh_s, cfg.skew_s)?,
    )?;
    let store = Store::open(&cfg.state_dir, Create::Guarded, wall_clock_ms())
        .with_context(|| format!("opening the store in {}", cfg.state_dir.display()))?;
    tracing::info!(state = ?store.open_state(), next_seq = store.next_seq(), "store open");
    let clock = TrustedClock::new(
        SystemTimeSource::new(cfg.trust_system_clock),
        store.clock_floor_ms(),
        cfg.skew_s * 1000,
    );
    Ok(Checkpoint::new(store, Arc::new(clock), trust))
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

type Factory = Box<dyn FnOnce() -> Result<Box<dyn Source>, String> + Send>;

fn factory(s: &SourceConfig) -> (String, Factory) {
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

impl Pipeline {
    /// Starts every stage. `outputs` receive each verdict in order.
    pub fn start(
        cfg: &Config,
        checkpoint: Arc<Checkpoint>,
        mut outputs: Vec<Box<dyn Output>>,
        syncer: Option<Arc<Syncer>>,
    ) -> anyhow::Result<Pipeline> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let presentations = Arc::new(Mutex::new(Presentations::new(cfg.hold_off_ms)));
        let epoch = Instant::now();
        let (presented_tx, presented_rx) = sync_channel::<Presented>(PRESENTED_QUEUE);
        let (verdict_tx, verdict_rx) = sync_channel::<(Checked, Arc<str>)>(VERDICT_QUEUE);

        let mut captures = Vec::new();
        let mut decoders = Vec::new();
        let mut slots = Vec::new();
        for s in &cfg.sources {
            let (name, make) = factory(s);
            let name: Arc<str> = name.into();
            let slot = LatestSlot::new();
            slots.push(slot.clone());
            let ctx = Stage {
                name: name.clone(),
                stop: stop.clone(),
                counters: counters.clone(),
                presentations: presentations.clone(),
                presented: presented_tx.clone(),
                epoch,
            };
            // capture thread: frames into the slot, texts straight to presentations
            let capture_ctx = ctx.clone();
            let capture_slot = slot.clone();
            captures.push(
                std::thread::Builder::new()
                    .name(format!("capture {name}"))
                    .spawn(move || capture_loop(make, capture_slot, capture_ctx))?,
            );
            // decode thread for this source's frames
            let decoder = Decoder::new(DecoderConfig {
                budget: Duration::from_millis(cfg.decode_budget_ms),
                ..DecoderConfig::live()
            });
            decoders.push(
                std::thread::Builder::new()
                    .name(format!("decode {name}"))
                    .spawn(move || decode_loop(slot, decoder, ctx))?,
            );
        }
        drop(presented_tx);

        let verify = std::thread::Builder::new().name("verify".into()).spawn({
            let counters = counters.clone();
            let stop = stop.clone();
            move || verify_loop(presented_rx, verdict_tx, checkpoint, syncer, counters, stop)
        })?;
        let act = std::thread::Builder::new()
            .name("act".into())
            .spawn(move || {
                for (checked, source) in verdict_rx {
                    for o in outputs.iter_mut() {
                        o.act(&checked, &source);
                    }
                }
            })?;
        Ok(Pipeline {
            stop,
            slots,
            captures,
            decoders,
            verify: Some(verify),
            act: Some(act),
            counters,
        })
    }

    /// True while the verify and act stages run (the watchdog is fed only then).
    pub fn healthy(&self) -> bool {
        self.verify.as_ref().is_some_and(|h| !h.is_finished())
            && self.act.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// True once every source has ended by itself (files replayed, stdin closed).
    pub fn sources_done(&self) -> bool {
        self.captures.iter().all(|h| h.is_finished())
            && self.decoders.iter().all(|h| h.is_finished())
    }

    /// Stops the sources, then drains: everything presented so far is verified, recorded and
    /// acted on. Capture threads blocked in a read (a quiet serial line, stdin) are not waited
    /// for: they stop at their next read, and whatever they read after the stop is never
    /// presented, which is safe. Decode threads finish the frame in hand.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.slots {
            s.close();
        }
        for h in self.decoders.drain(..) {
            let _ = h.join();
        }
        for h in self.captures.drain(..) {
            if h.is_finished() {
                let _ = h.join();
            }
        }
        // The verifier drains what was presented and stops at the first quiet moment after
        // the stop; the act thread ends when the verifier drops its sender.
        if let Some(v) = self.verify.take() {
            let _ = v.join();
        }
        if let Some(a) = self.act.take() {
            let _ = a.join();
        }
    }
}

#[derive(Clone)]
struct Stage {
    name: Arc<str>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    presentations: Arc<Mutex<Presentations>>,
    presented: SyncSender<Presented>,
    epoch: Instant,
}

impl Stage {
    /// Passes the texts that begin a presentation on; false once verification has stopped.
    fn present(&self, texts: &[String]) -> bool {
        let now = self.epoch.elapsed().as_millis() as i64;
        let fresh: Vec<String> = {
            let mut p = self.presentations.lock().unwrap_or_else(|e| e.into_inner());
            p.observe(texts, now)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        for text in fresh {
            self.counters.presentations.fetch_add(1, Ordering::Relaxed);
            let msg = Presented {
                text,
                source: self.name.clone(),
            };
            if self.presented.send(msg).is_err() {
                return false;
            }
        }
        true
    }
}

fn capture_loop(make: Factory, slot: Arc<LatestSlot<crate::capture::Frame>>, ctx: Stage) {
    let mut source = match make() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(source = %ctx.name, error = %e, "source could not start");
            slot.close();
            return;
        }
    };
    let lossless = source.lossless();
    while !ctx.stop.load(Ordering::SeqCst) {
        match source.next() {
            Ok(Some(Input::Frame(f))) => {
                ctx.counters.frames.fetch_add(1, Ordering::Relaxed);
                if lossless {
                    if slot.put_wait(f).is_err() {
                        break;
                    }
                } else {
                    slot.put(f);
                }
            }
            Ok(Some(Input::Text(t))) => {
                if !ctx.present(&[t]) {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(source = %ctx.name, error = %e, "source failed");
                break;
            }
        }
    }
    ctx.counters
        .frames_dropped
        .fetch_add(slot.dropped(), Ordering::Relaxed);
    slot.close();
}

fn decode_loop(slot: Arc<LatestSlot<crate::capture::Frame>>, decoder: Decoder, ctx: Stage) {
    while let Some(frame) = slot.take() {
        let texts: Vec<String> = decoder
            .decode(&frame.image)
            .into_iter()
            .map(|d| d.text)
            .collect();
        // After the decode: the thumbnail never delays reading a code.
        let now = ctx.epoch.elapsed().as_millis() as i64;
        ctx.counters.maybe_thumbnail(&frame.image, now, &ctx.name);
        ctx.counters
            .decoded
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        if !ctx.present(&texts) {
            break;
        }
    }
}

fn verify_loop(
    rx: Receiver<Presented>,
    tx: SyncSender<(Checked, Arc<str>)>,
    checkpoint: Arc<Checkpoint>,
    syncer: Option<Arc<Syncer>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let p = match rx.recv_timeout(DRAIN_QUIET) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => break,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let online = syncer.as_ref().and_then(|s| s.online_answer(&p.text));
        match checkpoint.check_with_online(&p.text, online) {
            Ok(checked) => {
                counters.verdict(&checked);
                if tx.send((checked, p.source)).is_err() {
                    break;
                }
            }
            // Fail closed at the quota: shown at the gate, counted, nothing dropped.
            Err(e @ StoreError::BacklogFull { .. }) => {
                counters.backlog_full.fetch_add(1, Ordering::Relaxed);
                println!(
                    "{}",
                    serde_json::json!({
                        "source": &*p.source,
                        "refused": { "reason": "backlog_full", "message": BACKLOG_FULL_MESSAGE },
                    })
                );
                tracing::error!(error = %e, "backlog quota reached; gate stays shut until the platform takes records");
            }
            // The store failed: nothing was acknowledged, the gate stays shut. Keep going;
            // the store refuses every later write too, so this is loud and visible.
            Err(e) => {
                tracing::error!(error = %e, "verification could not be recorded; gate stays shut")
            }
        }
    }
}

/// `yima-gate run`: starts the pipeline and runs until SIGTERM/SIGINT or until every source
/// has ended; then drains. The drain is bounded by one decode and the presented queue (at
/// most 64 verifications, each one fsync) — well inside systemd's stop timeout.
pub fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    crate::tls::install_provider();
    let checkpoint = Arc::new(checkpoint_from(&cfg)?);
    let outputs: Vec<Box<dyn Output>> = vec![
        Box::new(StdoutDisplay),
        Box::new(GateOutput::from_config(&cfg)?),
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
        durable_seq = checkpoint.store().durable_seq(),
        "stopped"
    );
    Ok(())
}
