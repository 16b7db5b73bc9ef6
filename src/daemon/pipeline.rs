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
//! verified, recorded and acted on before the pipeline is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::act::Output;
use crate::capture::{Input, LatestSlot};
use crate::checkpoint::{Checked, Checkpoint};
use crate::daemon::config::Config;
use crate::daemon::wiring::{factory, Factory};
use crate::decode::{Decoder, DecoderConfig};
use crate::presentation::Presentations;
use crate::sync::Syncer;
use crate::telemetry::Counters;
use crate::verification::verdict::Reason;

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
                if checked.reason() == Reason::BacklogFull {
                    tracing::error!(
                        "backlog quota reached; gate stays shut until the platform takes records"
                    );
                }
                counters.verdict(&checked);
                if tx.send((checked, p.source)).is_err() {
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
