//! Where codes come from: camera frames or text already decoded by a hardware scanner, behind
//! one [`Source`] trait, each source on its own thread.
//!
//! Frames flow through a [`LatestSlot`]: the newest frame wins and older undecoded frames are
//! dropped (counted), so a slow decoder never works on stale frames. Scanner texts flow through
//! a bounded channel that blocks the reader when full: a presented code is never dropped.
//!
//! One file per source: [`files`] (image files and directories), [`mjpeg`] (IP cameras over
//! HTTP), [`scanner`] (line-oriented text from a serial TTY, TCP or stdin), [`camera`] (V4L2
//! through nokhwa). [`convert`] turns camera pixel formats into grayscale and [`image`] reads
//! image files and uploads within size limits.
//!
//! **Must not know:** what a code means, decoding, verification — a source yields pixels or
//! text, nothing else.

pub mod camera;
pub mod convert;
pub mod files;
pub mod image;
pub mod mjpeg;
pub mod scanner;

pub use camera::{CameraConfig, CameraSource, PixelFormat, V4lCamera};
pub use files::FileSource;
pub use mjpeg::MjpegSource;
pub use scanner::ScannerSource;

use std::sync::{Arc, Condvar, Mutex};

use ::image::GrayImage;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: {reason}")]
    Failed { source_name: String, reason: String },
}

impl SourceError {
    pub(crate) fn new(source_name: &str, reason: impl std::fmt::Display) -> SourceError {
        SourceError::Failed {
            source_name: source_name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A grayscale frame and when it was captured ([`crate::clock::monotonic_ms`]).
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: GrayImage,
    pub captured_ms: i64,
    pub seq: u64,
}

/// Numbers frames and stamps them with the capture time ([`crate::clock::monotonic_ms`]).
#[derive(Debug)]
pub struct FrameStamper {
    seq: u64,
}

impl FrameStamper {
    pub fn new() -> FrameStamper {
        FrameStamper { seq: 0 }
    }

    /// The next frame as a source yields it.
    pub fn frame(&mut self, image: GrayImage) -> Input {
        self.seq += 1;
        Input::Frame(Frame {
            image,
            captured_ms: crate::clock::monotonic_ms(),
            seq: self.seq,
        })
    }
}

impl Default for FrameStamper {
    fn default() -> Self {
        FrameStamper::new()
    }
}

/// What a source yields.
#[derive(Debug, Clone)]
pub enum Input {
    Frame(Frame),
    /// A code text read by a scanner that decodes by itself.
    Text(String),
}

/// A source of frames or texts. `next` blocks; `Ok(None)` means the source has ended.
/// Not `Send`: some devices (nokhwa's camera) must live on the thread that opened them, so a
/// source is built on its own capture thread by a factory.
pub trait Source {
    fn name(&self) -> &str;
    fn next(&mut self) -> Result<Option<Input>, SourceError>;
    /// True when every frame must be decoded (file replays): the capture side then waits for
    /// the decoder instead of letting the newest frame win.
    fn lossless(&self) -> bool {
        false
    }
    /// Hands the source its health record, for sources that reconnect by themselves (a
    /// camera reopening its device reports `reconnecting` with the device's error).
    fn attach(&mut self, _health: std::sync::Arc<crate::telemetry::SourceHealth>) {}
}

/// A one-frame slot where the newest frame wins (for camera frames).
#[derive(Debug, Default)]
pub struct LatestSlot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
}

#[derive(Debug)]
struct SlotState<T> {
    item: Option<T>,
    dropped: u64,
    closed: bool,
}

impl<T> Default for SlotState<T> {
    fn default() -> Self {
        SlotState {
            item: None,
            dropped: 0,
            closed: false,
        }
    }
}

impl<T> LatestSlot<T> {
    pub fn new() -> Arc<LatestSlot<T>> {
        Arc::new(LatestSlot {
            state: Mutex::new(SlotState::default()),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `item`, replacing (and counting as dropped) one not yet taken.
    pub fn put(&self, item: T) {
        let mut st = self.lock();
        if st.item.replace(item).is_some() {
            st.dropped += 1;
        }
        self.ready.notify_one();
    }

    /// Puts `item` once the previous one has been taken (for lossless sources); gives the
    /// item back if the slot was closed meanwhile.
    pub fn put_wait(&self, item: T) -> Result<(), T> {
        let mut st = self.lock();
        while st.item.is_some() && !st.closed {
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed {
            return Err(item);
        }
        st.item = Some(item);
        self.ready.notify_all();
        Ok(())
    }

    /// Takes the newest item, waiting for one; `None` once closed and empty.
    pub fn take(&self) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(item) = st.item.take() {
                // wake a lossless producer waiting for room
                self.ready.notify_all();
                return Some(item);
            }
            if st.closed {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// No more items will come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Frames replaced before anyone took them.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_slot_keeps_the_newest_and_counts_drops() {
        let slot = LatestSlot::new();
        slot.put(1);
        slot.put(2);
        slot.put(3);
        assert_eq!(slot.take(), Some(3));
        assert_eq!(slot.dropped(), 2);
        slot.close();
        assert_eq!(slot.take(), None);
    }

    #[test]
    fn lossless_put_waits_for_the_consumer() {
        let slot = LatestSlot::new();
        let producer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    slot.put_wait(i).expect("open");
                }
                slot.close();
            })
        };
        let mut got = Vec::new();
        while let Some(i) = slot.take() {
            got.push(i);
        }
        producer.join().expect("join");
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(slot.dropped(), 0);
    }
}
