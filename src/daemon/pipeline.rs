//! The gate daemon's pipeline: capture → decode → presentation → verify → record → act, one
//! stage per thread, joined by bounded channels; one shutdown path.
//!
//! ```text
//! capture thread ──frames──▶ LatestSlot (newest wins) ──▶ decode thread ─┐
//! capture thread ──texts (scanner)─────────────────────────────────────────┤
//!                                    presentations (one per code in view) ▼
//!                          sync_channel(64, blocks when full) ──▶ verify thread (checkpoint:
//!                          durable before the answer) ──▶ sync_channel(64) ──▶ act thread
//! ```
//!
//! **Invariants:** frames may be dropped (newest wins), presented codes and verdicts never are
//! (their channels block). Blocking work (capture, decode, fsync) runs on these threads, never
//! on async workers. A source that fails is reopened with backoff (files and stdin end); no
//! source ending ends the gate unless every source has ended by itself. A stage that panics is
//! recorded and ends the run with an error. On shutdown the sources stop, then everything
//! already presented is verified, recorded and acted on — within the deadline given.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::act::Output;
use crate::capture::camera::Backoff;
use crate::capture::{Frame, Input, LatestSlot, Source};
use crate::checkpoint::{Checked, Checkpoint};
use crate::daemon::config::Config;
use crate::daemon::wiring::{source_plan, SourcePlan};
use crate::daemon::StagePanicked;
use crate::decode::{Decoder, DecoderConfig};
use crate::presentation::Presentations;
use crate::sync::Syncer;
use crate::telemetry::{uptime_ms, Counters, SourceHealth};
use crate::verification::verdict::Reason;
use crate::verification::verifier::{self, NothingSpent};

/// Presented codes waiting for verification; the capture side blocks when it is full.
const PRESENTED_QUEUE: usize = 64;
/// Verdicts waiting for the outputs.
const VERDICT_QUEUE: usize = 64;
/// After a stop, the verifier ends at the first gap this long with nothing presented; it also
/// wakes this often for housekeeping.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// How often (by the verification clock) replay tags whose window has ended are purged.
pub const PURGE_EVERY_MS: i64 = 60_000;
/// A decode thread busy on one frame for longer than this is wedged: the watchdog stops being
/// fed and systemd restarts the gate. (The per-frame budget is milliseconds; this is a bug.)
pub const DECODE_WEDGED_MS: i64 = 5_000;

/// The flood policy for texts that do not authenticate (malformed, unknown key, bad
/// signature): each source may have [`FLOOD_BURST`] of them recorded at once and
/// [`FLOOD_PER_MINUTE`] a minute after that; beyond, they are counted
/// (`yima_flood_suppressed_total`) and summarized in the log, neither recorded nor acted on.
/// Every code that authenticates is always verified, recorded and acted on.
pub const FLOOD_BURST: u32 = 30;
pub const FLOOD_PER_MINUTE: u32 = 120;

/// A code text that begins a presentation.
#[derive(Debug, Clone)]
struct Presented {
    text: String,
    source: Arc<str>,
    /// [`uptime_ms`] when the frame it was read from was captured (texts: when read).
    captured_ms: i64,
}

/// The running pipeline's handle.
#[derive(Debug)]
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    slots: Vec<Arc<LatestSlot<Frame>>>,
    /// Capture threads: may be blocked in a device read; never joined at shutdown.
    captures: Vec<std::thread::JoinHandle<()>>,
    /// Decode threads: end once their slot is closed and empty.
    decoders: Vec<std::thread::JoinHandle<()>>,
    /// Per decode thread: [`uptime_ms`] since it has been busy on one frame (0 = idle).
    decode_busy: Vec<Arc<AtomicI64>>,
    verify: Option<std::thread::JoinHandle<()>>,
    act: Option<std::thread::JoinHandle<()>>,
    panics: Arc<Mutex<Vec<StagePanicked>>>,
    pub counters: Arc<Counters>,
}

/// How a shutdown went.
#[derive(Debug, Default)]
pub struct Drained {
    /// Stages that panicked while running or draining.
    pub panicked: Vec<StagePanicked>,
    /// The deadline passed before every stage had drained (what was verified is durable; an
    /// output still queued may not have run).
    pub timed_out: bool,
}

/// Spawns a named stage thread whose panic is caught, logged and recorded.
fn spawn_stage(
    name: String,
    panics: &Arc<Mutex<Vec<StagePanicked>>>,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let panics = panics.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                let message = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                tracing::error!(stage = %name, %message, "pipeline stage panicked");
                panics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(StagePanicked {
                        stage: name,
                        message,
                    });
            }
        })
}

impl Pipeline {
    /// Starts every stage. `outputs` receive each verdict in order.
    pub fn start(
        cfg: &Config,
        checkpoint: Arc<Checkpoint>,
        mut outputs: Vec<Box<dyn Output>>,
        syncer: Option<Arc<Syncer>>,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Pipeline> {
        let stop = Arc::new(AtomicBool::new(false));
        let panics = Arc::new(Mutex::new(Vec::new()));
        let presentations = Arc::new(Mutex::new(Presentations::new(cfg.hold_off_ms)));
        let (presented_tx, presented_rx) = sync_channel::<Presented>(PRESENTED_QUEUE);
        let (verdict_tx, verdict_rx) = sync_channel::<(Checked, Presented)>(VERDICT_QUEUE);

        let mut captures = Vec::new();
        let mut decoders = Vec::new();
        let mut decode_busy = Vec::new();
        let mut slots = Vec::new();
        for s in &cfg.sources {
            let plan = source_plan(s)?;
            let name: Arc<str> = plan.name.clone().into();
            let health = SourceHealth::new(&plan.name, plan.kind);
            counters.add_source(health.clone());
            let slot = LatestSlot::new();
            slots.push(slot.clone());
            let ctx = Stage {
                name: name.clone(),
                stop: stop.clone(),
                counters: counters.clone(),
                presentations: presentations.clone(),
                presented: presented_tx.clone(),
            };
            let capture_ctx = ctx.clone();
            let capture_slot = slot.clone();
            captures.push(spawn_stage(
                format!("capture {name}"),
                &panics,
                move || capture_loop(plan, capture_slot, capture_ctx, health),
            )?);
            let decoder = Decoder::new(DecoderConfig {
                budget: Duration::from_millis(cfg.decode_budget_ms),
                ..DecoderConfig::live()
            });
            let busy = Arc::new(AtomicI64::new(0));
            decode_busy.push(busy.clone());
            decoders.push(spawn_stage(format!("decode {name}"), &panics, move || {
                decode_loop(slot, decoder, ctx, busy)
            })?);
        }
        drop(presented_tx);

        let verify = spawn_stage("verify".into(), &panics, {
            let counters = counters.clone();
            let stop = stop.clone();
            move || verify_loop(presented_rx, verdict_tx, checkpoint, syncer, counters, stop)
        })?;
        let act = spawn_stage("act".into(), &panics, {
            let counters = counters.clone();
            move || {
                for (checked, p) in verdict_rx {
                    for o in outputs.iter_mut() {
                        o.act(&checked, &p.source);
                    }
                    if checked.record.is_some() {
                        let waited = uptime_ms() - p.captured_ms;
                        counters
                            .frame_to_verdict
                            .observe(Duration::from_millis(u64::try_from(waited).unwrap_or(0)));
                    }
                }
            }
        })?;
        Ok(Pipeline {
            stop,
            slots,
            captures,
            decoders,
            decode_busy,
            verify: Some(verify),
            act: Some(act),
            panics,
            counters,
        })
    }

    /// True while the verify and act stages run and no decode thread is wedged on one frame
    /// (the watchdog is fed only then).
    pub fn healthy(&self) -> bool {
        let now = uptime_ms();
        self.verify.as_ref().is_some_and(|h| !h.is_finished())
            && self.act.as_ref().is_some_and(|h| !h.is_finished())
            && self.decode_busy.iter().all(|b| {
                let since = b.load(Ordering::Relaxed);
                since == 0 || now - since < DECODE_WEDGED_MS
            })
    }

    /// The first stage that panicked, if any did.
    pub fn panicked(&self) -> Option<StagePanicked> {
        self.panics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|p| StagePanicked {
                stage: p.stage.clone(),
                message: p.message.clone(),
            })
    }

    /// True once every source has ended by itself (files replayed, stdin closed).
    pub fn sources_done(&self) -> bool {
        self.captures.iter().all(|h| h.is_finished())
            && self.decoders.iter().all(|h| h.is_finished())
    }

    /// Stops the sources, then drains: everything presented so far is verified, recorded and
    /// acted on, until `deadline`. Capture threads blocked in a read (a quiet serial line,
    /// stdin) are not waited for: they stop at their next read, and whatever they read after
    /// the stop is never presented, which is safe. Decode threads finish the frame in hand.
    pub fn shutdown(mut self, deadline: Instant) -> Drained {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.slots {
            s.close();
        }
        let mut handles: Vec<std::thread::JoinHandle<()>> = self.decoders.drain(..).collect();
        handles.extend(self.captures.drain(..).filter(|h| h.is_finished()));
        // The verifier drains what was presented and stops at the first quiet moment after
        // the stop; the act thread ends when the verifier drops its sender.
        handles.extend(self.verify.take());
        handles.extend(self.act.take());
        let mut timed_out = false;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                timed_out = true;
            }
        }
        if timed_out {
            tracing::error!(
                "shutdown deadline passed before every stage drained; what was verified is durable"
            );
        }
        let panicked = std::mem::take(&mut *self.panics.lock().unwrap_or_else(|p| p.into_inner()));
        Drained {
            panicked,
            timed_out,
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
}

impl Stage {
    /// Passes the texts that begin a presentation on; false once verification has stopped.
    fn present(&self, texts: &[String], captured_ms: i64) -> bool {
        let fresh: Vec<String> = {
            let mut p = self.presentations.lock().unwrap_or_else(|e| e.into_inner());
            p.observe(texts, captured_ms)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        for text in fresh {
            self.counters.presentations.fetch_add(1, Ordering::Relaxed);
            let msg = Presented {
                text,
                source: self.name.clone(),
                captured_ms,
            };
            if self.presented.send(msg).is_err() {
                return false;
            }
        }
        true
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `d`, waking early when the pipeline stops.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }
}

/// How one opened source stopped delivering.
enum Ended {
    /// The pipeline stops (or verification has gone).
    Stopped,
    /// The source has no more input (end of a file replay, stdin closed, stream closed).
    Exhausted,
    /// The source failed.
    Failed(String),
}

fn capture_loop(
    mut plan: SourcePlan,
    slot: Arc<LatestSlot<Frame>>,
    ctx: Stage,
    health: Arc<SourceHealth>,
) {
    let mut backoff = Backoff::new();
    while !ctx.stopped() {
        let ended = match (plan.open)() {
            Ok(mut source) => {
                source.attach(health.clone());
                if plan.kind != crate::telemetry::SourceKind::Frames {
                    health.opened();
                }
                read_source(source.as_mut(), &slot, &ctx, &health, &mut backoff)
            }
            Err(e) => Ended::Failed(e.to_string()),
        };
        match ended {
            Ended::Stopped => break,
            Ended::Exhausted if !plan.reopen => {
                health.ended();
                break;
            }
            Ended::Failed(e) if !plan.reopen => {
                tracing::error!(source = %ctx.name, error = %e, "source failed; it cannot be reopened");
                health.failed(&e);
                break;
            }
            Ended::Exhausted | Ended::Failed(_) => {
                let why = match ended {
                    Ended::Failed(e) => e,
                    _ => "the stream ended".into(),
                };
                let wait = backoff.next_wait();
                tracing::warn!(source = %ctx.name, error = %why, retry_in_ms = wait.as_millis() as u64, "source lost; reopening");
                health.reconnecting(&why);
                ctx.sleep(wait);
            }
        }
    }
    ctx.counters
        .frames_dropped
        .fetch_add(slot.dropped(), Ordering::Relaxed);
    slot.close();
}

fn read_source(
    source: &mut dyn Source,
    slot: &LatestSlot<Frame>,
    ctx: &Stage,
    health: &SourceHealth,
    backoff: &mut Backoff,
) -> Ended {
    let lossless = source.lossless();
    while !ctx.stopped() {
        match source.next() {
            Ok(Some(Input::Frame(f))) => {
                health.input();
                backoff.reset();
                ctx.counters.frames.fetch_add(1, Ordering::Relaxed);
                if lossless {
                    if slot.put_wait(f).is_err() {
                        return Ended::Stopped;
                    }
                } else {
                    slot.put(f);
                }
            }
            Ok(Some(Input::Text(t))) => {
                health.input();
                backoff.reset();
                if !ctx.present(&[t], uptime_ms()) {
                    return Ended::Stopped;
                }
            }
            Ok(None) => return Ended::Exhausted,
            Err(e) => return Ended::Failed(e.to_string()),
        }
    }
    Ended::Stopped
}

fn decode_loop(slot: Arc<LatestSlot<Frame>>, decoder: Decoder, ctx: Stage, busy: Arc<AtomicI64>) {
    while let Some(frame) = slot.take() {
        busy.store(uptime_ms().max(1), Ordering::Relaxed);
        let start = Instant::now();
        let texts: Vec<String> = decoder
            .decode(&frame.image)
            .into_iter()
            .map(|d| d.text)
            .collect();
        ctx.counters.decode.observe(start.elapsed());
        busy.store(0, Ordering::Relaxed);
        // After the decode: the thumbnail never delays reading a code.
        ctx.counters
            .maybe_thumbnail(&frame.image, uptime_ms(), &ctx.name);
        ctx.counters
            .decoded
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        if !ctx.present(&texts, frame.captured_ms) {
            break;
        }
    }
}

/// A source's allowance of unauthenticated records (see [`FLOOD_BURST`]).
#[derive(Debug)]
struct FloodAllowance {
    tokens: f64,
    last_ms: i64,
    suppressed_since_log: u64,
    last_log_ms: i64,
}

impl FloodAllowance {
    fn new(now_ms: i64) -> FloodAllowance {
        FloodAllowance {
            tokens: f64::from(FLOOD_BURST),
            last_ms: now_ms,
            suppressed_since_log: 0,
            last_log_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * f64::from(FLOOD_PER_MINUTE) / 60_000.0)
            .min(f64::from(FLOOD_BURST));
        self.last_ms = now_ms;
    }
}

fn unauthenticated(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Malformed | Reason::UnknownKey | Reason::BadSignature
    )
}

fn verify_loop(
    rx: Receiver<Presented>,
    tx: SyncSender<(Checked, Presented)>,
    checkpoint: Arc<Checkpoint>,
    syncer: Option<Arc<Syncer>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut floods: std::collections::HashMap<Arc<str>, FloodAllowance> = Default::default();
    let mut last_purge_ms = checkpoint.clock().now().unix_ms;
    loop {
        // Housekeeping by the verification clock: a gate running for months keeps only the
        // replay tags of codes still inside their window.
        let now_ms = checkpoint.clock().now().unix_ms;
        // A store out of service (disk full, failed write) comes back by itself.
        checkpoint.maintain();
        if now_ms - last_purge_ms >= PURGE_EVERY_MS {
            last_purge_ms = now_ms;
            match checkpoint.purge_expired_replay_tags() {
                Ok(n) => {
                    counters
                        .replay_tags_purged
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "purging replay tags failed"),
            }
        }
        let p = match rx.recv_timeout(DRAIN_QUIET) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => break,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mono = uptime_ms();
        let allowance = floods
            .entry(p.source.clone())
            .or_insert_with(|| FloodAllowance::new(mono));
        allowance.refill(mono);
        if allowance.tokens < 1.0 {
            // Flooded: a text that does not authenticate is counted, not recorded. The check
            // is the pure verifier (no replay view, no I/O); anything that authenticates goes
            // on to the checkpoint as always.
            let at = checkpoint.clock().now();
            let v = verifier::verify(&p.text, at, &checkpoint.trust(), &NothingSpent);
            if unauthenticated(v.verdict.reason) {
                counters.flood_suppressed.fetch_add(1, Ordering::Relaxed);
                allowance.suppressed_since_log += 1;
                if mono - allowance.last_log_ms >= 60_000 {
                    tracing::warn!(source = %p.source, suppressed = allowance.suppressed_since_log, "flood of unreadable or forged codes: counted, not recorded");
                    allowance.suppressed_since_log = 0;
                    allowance.last_log_ms = mono;
                }
                continue;
            }
        }
        let online = syncer.as_ref().and_then(|s| s.online_answer(&p.text));
        let start = Instant::now();
        match checkpoint.check_with_online(&p.text, online) {
            Ok(checked) => {
                counters.verify_commit.observe(start.elapsed());
                match checked.reason() {
                    Reason::BacklogFull => tracing::error!(
                        "backlog quota reached; gate stays shut until the platform takes records"
                    ),
                    Reason::StoreUnavailable => tracing::error!(
                        "the store cannot take records (disk full or failed); gate stays shut"
                    ),
                    _ => {}
                }
                if unauthenticated(checked.reason()) {
                    allowance.tokens -= 1.0;
                }
                counters.verdict(&checked);
                if tx.send((checked, p)).is_err() {
                    break;
                }
            }
            // The store failed: nothing was acknowledged, the gate stays shut. Keep going;
            // the store refuses every later write too, so this is loud and visible.
            Err(e) => {
                tracing::error!(error = %e, "verification could not be recorded; gate stays shut")
            }
        }
    }
}
