//! IP cameras streaming MJPEG over HTTP (`multipart/x-mixed-replace`), part by part, each
//! JPEG bounded in size.

use std::io::{BufRead, BufReader, Read};

use super::scanner::MAX_LINE;
use super::{convert, FrameStamper, Input, Source, SourceError};

/// Largest JPEG part accepted from an MJPEG stream.
pub const MAX_JPEG_BYTES: usize = 8 * 1024 * 1024;

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
        crate::sync::tls::install_provider();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
