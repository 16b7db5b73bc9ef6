//! Where codes come from: camera frames or text already decoded by a hardware scanner, behind
//! one [`Source`] trait, each source on its own thread.
//!
//! Frames flow through a [`LatestSlot`]: the newest frame wins and older undecoded frames are
//! dropped (counted), so a slow decoder never works on stale frames. Scanner texts flow through
//! a bounded channel that blocks the reader when full: a presented code is never dropped.
//!
//! Sources here: image files and directories ([`FileSource`]), MJPEG over HTTP
//! ([`MjpegSource`]), line-oriented scanner text from any byte stream ([`ScannerSource`]: serial
//! TTY, TCP, stdin). Pixel-format conversion for cameras is in [`convert`].

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use image::GrayImage;

/// Longest scanner line accepted; longer lines are discarded (a YM1 text is at most 2,048).
pub const MAX_LINE: usize = 4096;
/// Largest JPEG part accepted from an MJPEG stream.
pub const MAX_JPEG_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: {reason}")]
    Failed { source_name: String, reason: String },
}

impl SourceError {
    fn new(source_name: &str, reason: impl std::fmt::Display) -> SourceError {
        SourceError::Failed {
            source_name: source_name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A grayscale frame and when it was captured (monotonic ms since the source started).
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: GrayImage,
    pub captured_ms: i64,
    pub seq: u64,
}

/// Numbers frames and stamps them with monotonic ms since the source started.
#[derive(Debug)]
pub struct FrameStamper {
    start: Instant,
    seq: u64,
}

impl FrameStamper {
    pub fn new() -> FrameStamper {
        FrameStamper {
            start: Instant::now(),
            seq: 0,
        }
    }

    /// The next frame as a source yields it.
    pub fn frame(&mut self, image: GrayImage) -> Input {
        self.seq += 1;
        Input::Frame(Frame {
            image,
            captured_ms: self.start.elapsed().as_millis() as i64,
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

/// Image files, or every image in directories (sorted), once — replays, diagnosis, tests.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    files: std::vec::IntoIter<PathBuf>,
    stamper: FrameStamper,
}

impl FileSource {
    pub fn new(paths: &[PathBuf]) -> Result<FileSource, SourceError> {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| SourceError::new(&p.display().to_string(), e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| is_image(f))
                    .collect();
                entries.sort();
                files.extend(entries);
            } else {
                files.push(p.clone());
            }
        }
        Ok(FileSource {
            name: format!("files({})", files.len()),
            files: files.into_iter(),
            stamper: FrameStamper::new(),
        })
    }
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "webp" | "bmp" | "pgm")
    )
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn lossless(&self) -> bool {
        true
    }

    fn next(&mut self) -> Result<Option<Input>, SourceError> {
        for path in self.files.by_ref() {
            match crate::qr::load_gray(&path) {
                Ok(image) => return Ok(Some(self.stamper.frame(image))),
                // One unreadable file does not end a replay.
                Err(e) => tracing::warn!(error = %e, "files: skipping unreadable image"),
            }
        }
        Ok(None)
    }
}

/// Line-oriented text from a hardware scanner that decodes by itself: a serial TTY (configure
/// its speed with `stty` or the unit's `ExecStartPre`), a TCP connection, or stdin.
pub struct ScannerSource {
    name: String,
    reader: Box<dyn BufRead + Send>,
}

impl std::fmt::Debug for ScannerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScannerSource")
            .field("name", &self.name)
            .finish()
    }
}

impl ScannerSource {
    pub fn from_reader(name: &str, reader: impl Read + Send + 'static) -> ScannerSource {
        ScannerSource {
            name: name.to_string(),
            reader: Box::new(BufReader::new(reader)),
        }
    }

    /// A serial device (or FIFO) opened for reading.
    pub fn device(path: &Path) -> Result<ScannerSource, SourceError> {
        let f = std::fs::File::open(path)
            .map_err(|e| SourceError::new(&path.display().to_string(), e))?;
        Ok(ScannerSource::from_reader(
            &format!("serial:{}", path.display()),
            f,
        ))
    }

    pub fn stdin() -> ScannerSource {
        ScannerSource::from_reader("stdin", std::io::stdin())
    }
}

impl Source for ScannerSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&mut self) -> Result<Option<Input>, SourceError> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| SourceError::new(&self.name, e))?;
            if n == 0 {
                return Ok(None);
            }
            if line.len() > MAX_LINE && !line.ends_with(b"\n") {
                // Discard the rest of an over-long line.
                let mut rest = Vec::new();
                let _ = self.reader.read_until(b'\n', &mut rest);
                tracing::warn!(source = %self.name, "scanner: over-long line discarded");
                continue;
            }
            // Scanners end lines with CR, LF or both and may add control characters.
            let text: String = String::from_utf8_lossy(&line)
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            let text = text.trim();
            if !text.is_empty() {
                return Ok(Some(Input::Text(text.to_string())));
            }
        }
    }
}

/// An IP camera streaming MJPEG over HTTP (`multipart/x-mixed-replace`).
pub struct MjpegSource {
    name: String,
    reader: BufReader<Box<dyn Read + Send>>,
    boundary: Vec<u8>,
    stamper: FrameStamper,
}

impl std::fmt::Debug for MjpegSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MjpegSource")
            .field("name", &self.name)
            .finish()
    }
}

impl MjpegSource {
    /// Connects to `url` and checks that it serves a multipart stream.
    pub fn connect(url: &str) -> Result<MjpegSource, SourceError> {
        let name = format!("mjpeg:{url}");
        crate::tls::install_provider();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(None)
            .build()
            .map_err(|e| SourceError::new(&name, e))?;
        let resp = client
            .get(url)
            .send()
            .map_err(|e| SourceError::new(&name, e))?;
        if !resp.status().is_success() {
            return Err(SourceError::new(&name, format!("HTTP {}", resp.status())));
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let boundary = boundary_of(&ctype)
            .ok_or_else(|| SourceError::new(&name, format!("not a multipart stream: {ctype:?}")))?;
        Ok(MjpegSource::from_stream(&name, Box::new(resp), &boundary))
    }

    /// A multipart stream already open (tests, other transports).
    pub fn from_stream(name: &str, stream: Box<dyn Read + Send>, boundary: &str) -> MjpegSource {
        MjpegSource {
            name: name.to_string(),
            reader: BufReader::new(stream),
            boundary: format!("--{}", boundary.trim_start_matches("--")).into_bytes(),
            stamper: FrameStamper::new(),
        }
    }

    fn read_line(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| SourceError::new(&self.name, e))?;
        if n == 0 {
            return Ok(None);
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        Ok(Some(line))
    }

    /// Reads the next JPEG part's bytes.
    fn next_part(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        // Find the boundary line.
        loop {
            match self.read_line()? {
                None => return Ok(None),
                Some(l) if l.starts_with(&self.boundary) => {
                    if l.ends_with(b"--") && l.len() == self.boundary.len() + 2 {
                        return Ok(None);
                    }
                    break;
                }
                Some(_) => {}
            }
        }
        let mut length = None;
        loop {
            match self.read_line()? {
                None => return Ok(None),
                Some(l) if l.is_empty() => break,
                Some(l) => {
                    let l = String::from_utf8_lossy(&l).to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        length = v.trim().parse::<usize>().ok();
                    }
                }
            }
        }
        let Some(len) = length else {
            return Err(SourceError::new(&self.name, "part without Content-Length"));
        };
        if len > MAX_JPEG_BYTES {
            return Err(SourceError::new(
                &self.name,
                format!("part of {len} bytes is too large"),
            ));
        }
        let mut body = vec![0u8; len];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| SourceError::new(&self.name, e))?;
        Ok(Some(body))
    }
}

fn boundary_of(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.starts_with("multipart/") {
        return None;
    }
    content_type.split(';').find_map(|p| {
        let p = p.trim();
        p.to_ascii_lowercase()
            .starts_with("boundary=")
            .then(|| p[9..].trim_matches('"').to_string())
    })
}

impl Source for MjpegSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&mut self) -> Result<Option<Input>, SourceError> {
        loop {
            let Some(jpeg) = self.next_part()? else {
                return Ok(None);
            };
            match convert::jpeg_to_gray(&jpeg) {
                Ok(image) => return Ok(Some(self.stamper.frame(image))),
                Err(e) => {
                    tracing::debug!(source = %self.name, error = %e, "mjpeg: bad part skipped")
                }
            }
        }
    }
}

/// Camera pixel formats to grayscale (the camera delivers MJPEG, YUYV or GREY).
pub mod convert {
    use image::GrayImage;

    /// Decodes a JPEG (bounded in size) to grayscale.
    pub fn jpeg_to_gray(bytes: &[u8]) -> Result<GrayImage, String> {
        let mut reader =
            image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(crate::qr::MAX_IMAGE_SIDE);
        limits.max_image_height = Some(crate::qr::MAX_IMAGE_SIDE);
        limits.max_alloc = Some(crate::qr::MAX_IMAGE_ALLOC);
        reader.limits(limits);
        reader
            .decode()
            .map(|i| i.into_luma8())
            .map_err(|e| e.to_string())
    }

    /// YUYV 4:2:2 (Y0 U Y1 V): the luma bytes are every other byte.
    pub fn yuyv_to_gray(bytes: &[u8], width: u32, height: u32) -> Result<GrayImage, String> {
        let need = width as usize * height as usize * 2;
        if bytes.len() < need {
            return Err(format!("YUYV frame of {} bytes, need {need}", bytes.len()));
        }
        let luma: Vec<u8> = bytes[..need].iter().step_by(2).copied().collect();
        GrayImage::from_raw(width, height, luma).ok_or_else(|| "bad YUYV dimensions".into())
    }

    /// 8-bit grey, possibly with row padding (`stride` ≥ `width`).
    pub fn grey_to_gray(
        bytes: &[u8],
        width: u32,
        height: u32,
        stride: u32,
    ) -> Result<GrayImage, String> {
        let (w, h, s) = (width as usize, height as usize, stride as usize);
        if s < w || bytes.len() < s * h.saturating_sub(1) + w {
            return Err("GREY frame too short".into());
        }
        let mut out = Vec::with_capacity(w * h);
        for row in 0..h {
            out.extend_from_slice(&bytes[row * s..row * s + w]);
        }
        GrayImage::from_raw(width, height, out).ok_or_else(|| "bad GREY dimensions".into())
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

    #[test]
    fn scanner_lines_are_trimmed_bounded_and_never_empty() {
        let input = b"YM1:ABC\r\n\r\n  YM1:DEF \n\x02YM1:GHI\x03\n".to_vec();
        let mut long = vec![b'X'; MAX_LINE + 10];
        long.push(b'\n');
        let mut all = input.clone();
        all.extend(long);
        all.extend(b"YM1:LAST");
        let mut s = ScannerSource::from_reader("test", std::io::Cursor::new(all));
        let mut got = Vec::new();
        while let Some(Input::Text(t)) = s.next().expect("read") {
            got.push(t);
        }
        assert_eq!(got, vec!["YM1:ABC", "YM1:DEF", "YM1:GHI", "YM1:LAST"]);
    }

    #[test]
    fn boundary_parsing() {
        assert_eq!(
            boundary_of("multipart/x-mixed-replace; boundary=frame").as_deref(),
            Some("frame")
        );
        assert_eq!(
            boundary_of("multipart/x-mixed-replace;boundary=\"--myb\"").as_deref(),
            Some("--myb")
        );
        assert_eq!(boundary_of("image/jpeg"), None);
    }

    #[test]
    fn yuyv_and_grey_conversion() {
        // 2×1 YUYV: Y0=10 U=128 Y1=200 V=128
        let g = convert::yuyv_to_gray(&[10, 128, 200, 128], 2, 1).expect("yuyv");
        assert_eq!(g.as_raw(), &vec![10, 200]);
        assert!(convert::yuyv_to_gray(&[1, 2], 2, 1).is_err());
        let g = convert::grey_to_gray(&[1, 2, 0, 3, 4, 0], 2, 2, 3).expect("grey");
        assert_eq!(g.as_raw(), &vec![1, 2, 3, 4]);
        assert!(convert::jpeg_to_gray(b"not a jpeg").is_err());
    }
}
