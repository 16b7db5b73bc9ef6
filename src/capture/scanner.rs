//! Hardware scanners that decode by themselves: one code text per line from any byte stream
//! (serial TTY, TCP, stdin), trimmed and bounded.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{Input, Source, SourceError};

/// Longest scanner line accepted; longer lines are discarded (a YM1 text is at most 2,048).
pub const MAX_LINE: usize = 4096;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
