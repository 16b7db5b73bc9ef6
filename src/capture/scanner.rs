//! Hardware scanners that decode by themselves: one code text per line from a serial TTY,
//! stdin, or a TCP port that keeps listening — trimmed, bounded, any of CR, LF or CR LF ending
//! a line.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::{Input, Source, SourceError};

/// Longest scanner line accepted; longer lines are discarded (a YM1 text is at most 2,048).
pub const MAX_LINE: usize = 4096;

/// Splits a byte stream into scanner lines: CR, LF or CR LF end a line; control characters
/// (STX/ETX framing some scanners add) are dropped, whitespace trimmed, empty lines skipped,
/// and a line longer than [`MAX_LINE`] is discarded whole.
#[derive(Debug, Default)]
struct Lines {
    pending: Vec<u8>,
    /// The current line overflowed: skip to its end.
    discarding: bool,
    ready: std::collections::VecDeque<String>,
}

impl Lines {
    fn push(&mut self, bytes: &[u8], source: &str) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.discarding {
                    let text: String = String::from_utf8_lossy(&self.pending)
                        .chars()
                        .filter(|c| !c.is_control())
                        .collect();
                    let text = text.trim();
                    if !text.is_empty() {
                        self.ready.push_back(text.to_string());
                    }
                }
                self.pending.clear();
                self.discarding = false;
            } else if !self.discarding {
                if self.pending.len() == MAX_LINE {
                    tracing::warn!(%source, "scanner: over-long line discarded");
                    self.pending.clear();
                    self.discarding = true;
                } else {
                    self.pending.push(b);
                }
            }
        }
    }

    /// The text of an unterminated last line, at the end of the stream.
    fn finish(&mut self, source: &str) {
        if !self.pending.is_empty() {
            self.push(b"\n", source);
        }
    }

    fn pop(&mut self) -> Option<String> {
        self.ready.pop_front()
    }
}

/// Line-oriented text from a byte stream: a serial TTY (configure its speed with `stty` or the
/// unit's `ExecStartPre`), a FIFO, stdin.
pub struct ScannerSource {
    name: String,
    reader: Box<dyn Read + Send>,
    lines: Lines,
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
            reader: Box::new(reader),
            lines: Lines::default(),
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
        let mut buf = [0u8; 1024];
        loop {
            if let Some(t) = self.lines.pop() {
                return Ok(Some(Input::Text(t)));
            }
            match self.reader.read(&mut buf) {
                Ok(0) => {
                    self.lines.finish(&self.name);
                    return Ok(self.lines.pop().map(Input::Text));
                }
                Ok(n) => self.lines.push(&buf[..n], &self.name),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SourceError::new(&self.name, e)),
            }
        }
    }
}

/// How often a connected TCP scanner's read wakes to look for a newer connection.
const TCP_POLL: Duration = Duration::from_millis(500);

/// A scanner (or a scanner bridge) connecting over TCP. The port keeps listening for the whole
/// run: one connection is served at a time, and a newer connection from an allowed peer takes
/// over (a scanner that rebooted leaves a dead connection behind); peers outside the
/// allowlist are refused. A disconnect never ends the source.
#[derive(Debug)]
pub struct TcpScannerSource {
    name: String,
    listener: TcpListener,
    /// Peers allowed to connect; empty = any.
    allow: Vec<IpAddr>,
    conn: Option<(TcpStream, SocketAddr)>,
    lines: Lines,
}

impl TcpScannerSource {
    /// Serves `listener` (bound by the caller, so that a port in use is a start-up error).
    pub fn new(listener: TcpListener, allow: Vec<IpAddr>) -> Result<TcpScannerSource, SourceError> {
        let name = format!(
            "tcp:{}",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        listener
            .set_nonblocking(true)
            .map_err(|e| SourceError::new(&name, e))?;
        Ok(TcpScannerSource {
            name,
            listener,
            allow,
            conn: None,
            lines: Lines::default(),
        })
    }

    /// A waiting connection from an allowed peer, if any (refusing the others).
    fn accept_pending(&self) -> Result<Option<(TcpStream, SocketAddr)>, SourceError> {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if !self.allow.is_empty() && !self.allow.contains(&peer.ip()) {
                        tracing::warn!(source = %self.name, %peer, "scanner: connection from a peer outside the allowlist refused");
                        continue;
                    }
                    stream
                        .set_nonblocking(false)
                        .and_then(|_| stream.set_read_timeout(Some(TCP_POLL)))
                        .map_err(|e| SourceError::new(&self.name, e))?;
                    return Ok(Some((stream, peer)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EMFILE and friends: let the capture loop back off and reopen.
                Err(e) => return Err(SourceError::new(&self.name, e)),
            }
        }
    }
}

impl Source for TcpScannerSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&mut self) -> Result<Option<Input>, SourceError> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(t) = self.lines.pop() {
                return Ok(Some(Input::Text(t)));
            }
            if let Some(newer) = self.accept_pending()? {
                if let Some((_, old)) = &self.conn {
                    tracing::info!(source = %self.name, %old, new = %newer.1, "scanner: a newer connection takes over");
                }
                tracing::info!(source = %self.name, peer = %newer.1, "scanner connected");
                self.conn = Some(newer);
                self.lines = Lines::default();
            }
            let Some((stream, peer)) = self.conn.as_mut() else {
                std::thread::sleep(TCP_POLL / 5);
                continue;
            };
            match stream.read(&mut buf) {
                Ok(0) => {
                    tracing::info!(source = %self.name, peer = %peer, "scanner disconnected; listening");
                    self.lines.finish(&self.name);
                    self.conn = None;
                }
                Ok(n) => self.lines.push(&buf[..n], &self.name),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    tracing::warn!(source = %self.name, peer = %peer, error = %e, "scanner connection failed; listening");
                    self.conn = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn scanner_lines_are_trimmed_bounded_and_never_empty() {
        let input = b"YM1:ABC\r\n\r\n  YM1:DEF \n\x02YM1:GHI\x03\nYM1:CR\rYM1:CR2\r".to_vec();
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
        assert_eq!(
            got,
            vec!["YM1:ABC", "YM1:DEF", "YM1:GHI", "YM1:CR", "YM1:CR2", "YM1:LAST"]
        );
    }

    #[test]
    fn the_tcp_scanner_survives_disconnects_and_a_newer_connection_takes_over() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut s = TcpScannerSource::new(listener, vec![]).expect("source");
        let mut first = TcpStream::connect(addr).expect("connect");
        first.write_all(b"YM1:ONE\r\n").expect("write");
        assert!(matches!(s.next().expect("next"), Some(Input::Text(t)) if t == "YM1:ONE"));
        drop(first);
        let mut second = TcpStream::connect(addr).expect("reconnect");
        second.write_all(b"YM1:TWO\n").expect("write");
        assert!(matches!(s.next().expect("next"), Some(Input::Text(t)) if t == "YM1:TWO"));
        // a half-open old connection does not hold the port: the newer one is served
        let mut third = TcpStream::connect(addr).expect("third");
        third.write_all(b"YM1:THREE\n").expect("write");
        assert!(matches!(s.next().expect("next"), Some(Input::Text(t)) if t == "YM1:THREE"));
        drop(second);
    }

    #[test]
    fn peers_outside_the_allowlist_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let allowed: IpAddr = "10.9.9.9".parse().expect("ip");
        let s = TcpScannerSource::new(listener, vec![allowed]).expect("source");
        let _c = TcpStream::connect(addr).expect("connect");
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.accept_pending().expect("accept").is_none());
    }
}
