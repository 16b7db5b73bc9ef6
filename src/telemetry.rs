//! What the gate reports about itself: counters of frames, codes and verdicts, the latest
//! verdicts and a thumbnail of the last frame — filled by the pipeline and the API, read by the
//! status page and `/metrics`.
//!
//! **Must not know:** HTTP, the pipeline's threads, storage. Plain atomics and small locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::checkpoint::{Checked, VerdictReport};
use crate::verification::verdict::Reason;

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
