//! What the gate reports about itself: counters of frames, codes and verdicts, latency
//! histograms, the health of every source, the latest verdicts and a thumbnail of the last
//! frame — filled by the pipeline and the API, read by the status page and `/metrics`.
//!
//! **Must not know:** HTTP, the pipeline's threads, storage. Plain atomics and small locks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::checkpoint::{Checked, VerdictReport};
use crate::verification::verdict::Reason;

pub use crate::clock::monotonic_ms as uptime_ms;

#[derive(Debug, Default)]
pub struct Counters {
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub decoded: AtomicU64,
    pub presentations: AtomicU64,
    pub verified: AtomicU64,
    pub accepted: AtomicU64,
    /// Verdicts by reason, indexed like `Reason::ALL`.
    pub by_reason: [AtomicU64; Reason::ALL.len()],
    /// The latest verdicts, newest first (status page feed).
    pub recent: Mutex<std::collections::VecDeque<VerdictReport>>,
    /// A small PNG of the last decoded camera frame (status page), refreshed at most once a
    /// second; kept in memory only, served to token holders only.
    pub thumbnail: Mutex<Option<Thumbnail>>,
    /// Unauthenticated texts (malformed, unknown key, bad signature) beyond a source's flood
    /// allowance: counted here, neither recorded nor acted on.
    pub flood_suppressed: AtomicU64,
    /// Replay tags purged because their window ended.
    pub replay_tags_purged: AtomicU64,
    /// Frame captured → verdict durable (camera and file sources).
    pub frame_to_verdict: Histogram,
    /// One frame through the decode cascade.
    pub decode: Histogram,
    /// Verification and durable commit of one presented code.
    pub verify_commit: Histogram,
    /// Every source, in configuration order.
    pub sources: Mutex<Vec<Arc<SourceHealth>>>,
    /// The gate relay, when one is configured.
    pub relay: Mutex<Option<Arc<RelayHealth>>>,
}

/// The gate relay's health: openings asked for, how they were driven, failures.
#[derive(Debug, Default)]
pub struct RelayHealth {
    inner: Mutex<RelayReport>,
}

/// The relay's health as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelayReport {
    pub relay: String,
    /// The line was claimed and the last change of it succeeded.
    pub up: bool,
    /// Openings asked for (one per accepted code routed to the relay).
    pub openings: u64,
    /// Times the line was energised.
    pub activations: u64,
    /// Openings that arrived while the gate was already open (it stayed open longer).
    pub coalesced: u64,
    /// Changes of the line that failed.
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl RelayHealth {
    fn with(&self, f: impl FnOnce(&mut RelayReport)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
    pub fn describe(&self, name: &str) {
        self.with(|r| r.relay = name.to_string());
    }
    pub fn ok(&self) {
        self.with(|r| r.up = true);
    }
    pub fn opening(&self) {
        self.with(|r| r.openings += 1);
    }
    pub fn activated(&self) {
        self.with(|r| {
            r.activations += 1;
            r.up = true;
        });
    }
    pub fn coalesced(&self, n: u64) {
        self.with(|r| r.coalesced += n);
    }
    pub fn failed(&self, error: &str) {
        self.with(|r| {
            r.failures += 1;
            r.up = false;
            r.last_error = Some(error.to_string());
        });
    }
    pub fn report(&self) -> RelayReport {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Upper bounds of the latency histograms' buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.050, 0.100, 0.250, 0.500, 1.0, 5.0,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`] (Prometheus `histogram`).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (cumulative count per bucket bound, total count, sum in seconds).
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let cumulative = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                acc += n.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// What a source delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Camera frames (V4L2, MJPEG): up while frames keep arriving.
    Frames,
    /// Texts from a hardware scanner: up while its device or port is open (idle is normal).
    Texts,
    /// A replay of image files: ends by itself.
    Files,
}

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Being opened for the first time.
    Starting,
    /// Delivering (frames), or open and listening (scanners).
    Up,
    /// Lost (unplugged, stream closed, read error): being reopened with backoff.
    Reconnecting,
    /// Given up, or a source that cannot be reopened failed.
    Failed,
    /// Finished by itself (file replay, stdin closed).
    Ended,
}

/// A frame source that has delivered nothing for this long is not up.
pub const FRAME_STALE_MS: i64 = 3000;

/// The health of one source.
#[derive(Debug)]
pub struct SourceHealth {
    pub name: String,
    pub kind: SourceKind,
    state: Mutex<(SourceState, Option<String>)>,
    /// [`uptime_ms`] of the last frame or text (0 = none yet).
    last_input_ms: AtomicI64,
    inputs: AtomicU64,
    reconnects: AtomicU64,
}

/// A source's health as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: SourceKind,
    pub state: SourceState,
    /// Delivering now (what readiness counts).
    pub up: bool,
    /// Milliseconds since the last frame or text; absent before the first.
    pub last_input_age_ms: Option<i64>,
    pub inputs: u64,
    pub reconnects: u64,
    /// Why it is not up (device error, stream closed), when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SourceHealth {
    pub fn new(name: &str, kind: SourceKind) -> Arc<SourceHealth> {
        Arc::new(SourceHealth {
            name: name.to_string(),
            kind,
            state: Mutex::new((SourceState::Starting, None)),
            last_input_ms: AtomicI64::new(0),
            inputs: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    /// The source is open (a scanner is listening, a camera streams).
    pub fn opened(&self) {
        self.set(SourceState::Up, None);
    }

    /// A frame or a text arrived.
    pub fn input(&self) {
        self.last_input_ms
            .store(uptime_ms().max(1), Ordering::Relaxed);
        self.inputs.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 != SourceState::Up {
            *st = (SourceState::Up, None);
        }
    }

    /// The source was lost and will be reopened.
    pub fn reconnecting(&self, error: &str) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.set(SourceState::Reconnecting, Some(error.to_string()));
    }

    pub fn failed(&self, error: &str) {
        self.set(SourceState::Failed, Some(error.to_string()));
    }

    pub fn ended(&self) {
        self.set(SourceState::Ended, None);
    }

    fn set(&self, state: SourceState, error: Option<String>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (state, error);
    }

    pub fn report(&self) -> SourceReport {
        let (state, error) = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = self.last_input_ms.load(Ordering::Relaxed);
        let age = (last != 0).then(|| uptime_ms() - last);
        let up = match self.kind {
            SourceKind::Frames => {
                state == SourceState::Up && age.is_some_and(|a| a <= FRAME_STALE_MS)
            }
            SourceKind::Texts => state == SourceState::Up,
            SourceKind::Files => matches!(state, SourceState::Up | SourceState::Ended),
        };
        let error = match (up, error, self.kind) {
            (false, None, SourceKind::Frames) if state == SourceState::Up => {
                Some(format!("no frame for {} ms", age.unwrap_or(uptime_ms())))
            }
            (_, e, _) => e,
        };
        SourceReport {
            name: self.name.clone(),
            kind: self.kind,
            state,
            up,
            last_input_age_ms: age,
            inputs: self.inputs.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            error,
        }
    }
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
    pub fn maybe_thumbnail(&self, frame: &image::GrayImage, now_ms: i64, source: &Arc<str>) {
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

impl Counters {
    /// Registers a source (the pipeline does, in configuration order).
    pub fn add_source(&self, health: Arc<SourceHealth>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(health);
    }

    /// Every source's health now.
    pub fn source_reports(&self) -> Vec<SourceReport> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.report())
            .collect()
    }
}

/// Verdicts kept for the status page.
const RECENT: usize = 20;

impl Counters {
    /// Counts one durable verification.
    pub fn verdict(&self, checked: &Checked) {
        if checked.record.is_some() {
            self.verified.fetch_add(1, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(12));
        h.observe(Duration::from_secs(60));
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[4], (0.015, 2));
        assert_eq!(buckets.last().map(|b| b.1), Some(2), "60 s is only in +Inf");
        assert!((sum - 60.0125).abs() < 1e-6);
    }

    #[test]
    fn a_frame_source_is_up_only_while_frames_arrive() {
        let cam = SourceHealth::new("camera:/dev/video0", SourceKind::Frames);
        assert!(!cam.report().up, "starting");
        cam.opened();
        assert!(!cam.report().up, "open but no frame yet");
        cam.input();
        assert!(cam.report().up);
        cam.reconnecting("No such device");
        let r = cam.report();
        assert!(!r.up);
        assert_eq!(r.state, SourceState::Reconnecting);
        assert_eq!(r.error.as_deref(), Some("No such device"));
        assert_eq!(r.reconnects, 1);
        let scanner = SourceHealth::new("tcp:127.0.0.1:9100", SourceKind::Texts);
        scanner.opened();
        assert!(scanner.report().up, "an idle, listening scanner is up");
    }
}
