//! The camera as a [`Source`]: a [`CameraDevice`] trait (the real one is V4L2 through nokhwa,
//! without its mozjpeg decoding) and [`CameraSource`], which converts MJPEG/YUYV/GREY to
//! grayscale itself and survives unplug/replug and device errors by reopening with backoff.
//!
//! `frame()` blocks: run a `CameraSource` on its own thread (as every `Source`).

use std::time::Duration;

use crate::capture::{convert, FrameStamper, Input, Source, SourceError};

/// Pixel formats the gate accepts from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Grey,
}

/// What the technician asks of the camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraConfig {
    /// The V4L2 device: `/dev/videoN`, or a stable link to one (`/dev/v4l/by-id/…`), resolved
    /// each time the camera is opened (a replugged camera may come back under another N).
    pub device: std::path::PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: PixelFormat,
}

impl CameraConfig {
    /// The N of the `/dev/videoN` the device path is or links to.
    pub fn video_index(&self) -> Result<u32, String> {
        let real = std::fs::canonicalize(&self.device)
            .map_err(|e| format!("{}: {e}", self.device.display()))?;
        real.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("video"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{} is not a /dev/videoN device", real.display()))
    }
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            device: std::path::PathBuf::from("/dev/video0"),
            width: 1280,
            height: 720,
            fps: 30,
            format: PixelFormat::Mjpeg,
        }
    }
}

/// One frame as the device delivered it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RawFrame {
    /// Grayscale conversion done here, not by the camera library.
    pub fn to_gray(&self) -> Result<image::GrayImage, String> {
        match self.format {
            PixelFormat::Mjpeg => convert::jpeg_to_gray(&self.data),
            PixelFormat::Yuyv => convert::yuyv_to_gray(&self.data, self.width, self.height),
            PixelFormat::Grey => {
                convert::grey_to_gray(&self.data, self.width, self.height, self.width)
            }
        }
    }
}

/// A camera device: open, read frames, close. Errors are strings for the log line.
pub trait CameraDevice {
    fn open(&mut self) -> Result<(), String>;
    fn frame(&mut self) -> Result<RawFrame, String>;
    fn close(&mut self);
    fn describe(&self) -> String;
}

/// Reopen backoff: 200 ms doubling to 10 s; reset after a good frame.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(200);
    pub const MAX: Duration = Duration::from_secs(10);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        w
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// A camera as a frame source that never gives up on its device.
pub struct CameraSource<D: CameraDevice> {
    name: String,
    device: D,
    open: bool,
    backoff: Backoff,
    /// How to wait between attempts (real sleep; tests record instead).
    sleep: Box<dyn FnMut(Duration) + Send>,
    /// Stop after this many consecutive failures (`None`: never — a gate keeps trying).
    give_up_after: Option<u32>,
    failures: u32,
    stamper: FrameStamper,
    health: Option<std::sync::Arc<crate::telemetry::SourceHealth>>,
}

impl<D: CameraDevice> std::fmt::Debug for CameraSource<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("name", &self.name)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl<D: CameraDevice> CameraSource<D> {
    pub fn new(device: D) -> CameraSource<D> {
        CameraSource {
            name: format!("camera:{}", device.describe()),
            device,
            open: false,
            backoff: Backoff::new(),
            sleep: Box::new(std::thread::sleep),
            give_up_after: None,
            failures: 0,
            stamper: FrameStamper::new(),
            health: None,
        }
    }

    /// Replaces the wait (tests) and optionally bounds consecutive failures.
    pub fn with_sleep(
        mut self,
        sleep: impl FnMut(Duration) + Send + 'static,
        give_up_after: Option<u32>,
    ) -> Self {
        self.sleep = Box::new(sleep);
        self.give_up_after = give_up_after;
        self
    }

    fn fail(&mut self, what: &str, err: &str) -> Result<(), SourceError> {
        self.failures += 1;
        if self.open {
            self.device.close();
            self.open = false;
        }
        let wait = self.backoff.next_wait();
        if let Some(h) = &self.health {
            h.reconnecting(&format!("{what}: {err}"));
        }
        tracing::warn!(
            camera = %self.name,
            error = %err,
            retry_in_ms = wait.as_millis() as u64,
            "camera: {what} failed; will reopen"
        );
        if self.give_up_after.is_some_and(|n| self.failures >= n) {
            return Err(SourceError::Failed {
                source_name: self.name.clone(),
                reason: format!("{what}: {err} ({} attempts)", self.failures),
            });
        }
        (self.sleep)(wait);
        Ok(())
    }
}

impl<D: CameraDevice> Source for CameraSource<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn attach(&mut self, health: std::sync::Arc<crate::telemetry::SourceHealth>) {
        self.health = Some(health);
    }

    fn next(&mut self) -> Result<Option<Input>, SourceError> {
        loop {
            if !self.open {
                match self.device.open() {
                    Ok(()) => {
                        self.open = true;
                        if let Some(h) = &self.health {
                            h.opened();
                        }
                        tracing::info!(camera = %self.name, "camera: streaming");
                    }
                    Err(e) => {
                        self.fail("open", &e)?;
                        continue;
                    }
                }
            }
            let raw = match self.device.frame() {
                Ok(raw) => raw,
                Err(e) => {
                    self.fail("read", &e)?;
                    continue;
                }
            };
            match raw.to_gray() {
                Ok(image) => {
                    self.failures = 0;
                    self.backoff.reset();
                    return Ok(Some(self.stamper.frame(image)));
                }
                // A corrupt frame (camera sent another format than it reported, nokhwa #19,
                // or a torn JPEG) is skipped, not a device failure.
                Err(e) => {
                    tracing::debug!(camera = %self.name, error = %e, "camera: bad frame skipped")
                }
            }
        }
    }
}

/// The real camera: V4L2 through nokhwa, raw buffers only.
pub struct V4lCamera {
    config: CameraConfig,
    camera: Option<nokhwa::Camera>,
}

impl std::fmt::Debug for V4lCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4lCamera")
            .field("config", &self.config)
            .finish()
    }
}

impl V4lCamera {
    pub fn new(config: CameraConfig) -> V4lCamera {
        V4lCamera {
            config,
            camera: None,
        }
    }
}

fn frame_format(f: PixelFormat) -> nokhwa::utils::FrameFormat {
    match f {
        PixelFormat::Mjpeg => nokhwa::utils::FrameFormat::MJPEG,
        PixelFormat::Yuyv => nokhwa::utils::FrameFormat::YUYV,
        PixelFormat::Grey => nokhwa::utils::FrameFormat::GRAY,
    }
}

impl CameraDevice for V4lCamera {
    fn open(&mut self) -> Result<(), String> {
        use nokhwa::utils::{
            CameraFormat, CameraIndex, RequestedFormat, RequestedFormatType, Resolution,
        };
        let c = &self.config;
        let wanted = CameraFormat::new(
            Resolution::new(c.width, c.height),
            frame_format(c.format),
            c.fps,
        );
        static FORMATS: [nokhwa::utils::FrameFormat; 3] = [
            nokhwa::utils::FrameFormat::MJPEG,
            nokhwa::utils::FrameFormat::YUYV,
            nokhwa::utils::FrameFormat::GRAY,
        ];
        let request = RequestedFormat::with_formats(RequestedFormatType::Closest(wanted), &FORMATS);
        let index = c.video_index()?;
        let mut camera =
            nokhwa::Camera::new(CameraIndex::Index(index), request).map_err(|e| e.to_string())?;
        camera.open_stream().map_err(|e| e.to_string())?;
        let got = camera.camera_format();
        tracing::info!(
            width = got.resolution().width_x,
            height = got.resolution().height_y,
            format = %got.format(),
            fps = got.frame_rate(),
            "camera: format negotiated"
        );
        self.camera = Some(camera);
        Ok(())
    }

    fn frame(&mut self) -> Result<RawFrame, String> {
        let camera = self.camera.as_mut().ok_or("camera not open")?;
        let buf = camera.frame().map_err(|e| e.to_string())?;
        let format = match buf.source_frame_format() {
            nokhwa::utils::FrameFormat::MJPEG => PixelFormat::Mjpeg,
            nokhwa::utils::FrameFormat::YUYV => PixelFormat::Yuyv,
            nokhwa::utils::FrameFormat::GRAY => PixelFormat::Grey,
            other => return Err(format!("unsupported pixel format {other}")),
        };
        Ok(RawFrame {
            format,
            width: buf.resolution().width_x,
            height: buf.resolution().height_y,
            data: buf.buffer().to_vec(),
        })
    }

    fn close(&mut self) {
        if let Some(mut c) = self.camera.take() {
            let _ = c.stop_stream();
        }
    }

    fn describe(&self) -> String {
        self.config.device.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A scripted device: each step is an open or frame outcome.
    struct Scripted {
        opens: VecDeque<Result<(), String>>,
        frames: VecDeque<Result<RawFrame, String>>,
        closes: Arc<Mutex<u32>>,
    }

    impl CameraDevice for Scripted {
        fn open(&mut self) -> Result<(), String> {
            self.opens.pop_front().unwrap_or(Err("unplugged".into()))
        }
        fn frame(&mut self) -> Result<RawFrame, String> {
            self.frames.pop_front().unwrap_or(Err("gone".into()))
        }
        fn close(&mut self) {
            *self.closes.lock().expect("lock") += 1;
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn grey(w: u32, h: u32, v: u8) -> RawFrame {
        RawFrame {
            format: PixelFormat::Grey,
            width: w,
            height: h,
            data: vec![v; (w * h) as usize],
        }
    }

    #[test]
    fn reopens_with_backoff_after_unplug_and_skips_bad_frames() {
        let closes = Arc::new(Mutex::new(0));
        let dev = Scripted {
            opens: VecDeque::from(vec![
                Err("no device".into()),
                Err("busy".into()),
                Ok(()),
                Ok(()),
            ]),
            frames: VecDeque::from(vec![
                Ok(grey(4, 2, 1)),
                Ok(RawFrame {
                    format: PixelFormat::Mjpeg,
                    width: 4,
                    height: 2,
                    data: b"torn".to_vec(),
                }),
                Err("I/O error (unplugged)".into()),
                Ok(grey(4, 2, 2)),
            ]),
            closes: closes.clone(),
        };
        let waits = Arc::new(Mutex::new(Vec::new()));
        let w = waits.clone();
        let mut src =
            CameraSource::new(dev).with_sleep(move |d| w.lock().expect("lock").push(d), Some(10));
        let values: Vec<u8> = (0..2)
            .map(|_| match src.next().expect("frame") {
                Some(Input::Frame(f)) => f.image.as_raw()[0],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, vec![1, 2]);
        // two failed opens (200, 400 ms), then after the first good frame the backoff reset:
        // the read error waits 200 ms again
        assert_eq!(
            *waits.lock().expect("lock"),
            vec![
                Duration::from_millis(200),
                Duration::from_millis(400),
                Duration::from_millis(200)
            ]
        );
        assert_eq!(
            *closes.lock().expect("lock"),
            1,
            "closed once after the read error"
        );
        // then the device is gone for good: bounded attempts end with an error
        let err = src.next().expect_err("gives up");
        assert!(err.to_string().contains("attempts"), "{err}");
    }

    #[test]
    fn backoff_caps_at_ten_seconds() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert_eq!(waits[0], Duration::from_millis(200));
        assert_eq!(*waits.last().expect("last"), Duration::from_secs(10));
    }

    #[test]
    fn a_missing_v4l_device_is_an_error_not_a_panic() {
        let mut cam = V4lCamera::new(CameraConfig {
            device: std::path::PathBuf::from("/dev/video99"),
            ..CameraConfig::default()
        });
        assert!(cam.open().is_err());
        assert!(cam.frame().is_err());
        cam.close();
        assert_eq!(cam.describe(), "/dev/video99");
    }
}
