//! The serial-line output: one line per routed verdict to an RS-232/RS-485 device (LED
//! displays at the gate, PLCs), written by its own thread off the verdict path. Chinese LED
//! displays usually speak GB18030/GBK, so the encoding is configurable.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::act::worker::Worker;
use crate::checkpoint::VerdictReport;

/// What is written for each verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialFormat {
    /// `<reason code> <message>\r\n`, e.g. `expired 码已过期` — for displays.
    Text,
    /// The verdict report as one JSON line — for PLCs and controllers.
    Json,
}

/// Text encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    Gb18030,
}

/// The `[serial]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialConfig {
    pub device: PathBuf,
    pub baud: u32,
    pub format: SerialFormat,
    pub encoding: SerialEncoding,
}

/// Bauds a serial display or PLC plausibly uses.
pub const BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115_200];

/// The bytes written for one verdict.
pub fn line(report: &VerdictReport, format: SerialFormat, encoding: SerialEncoding) -> Vec<u8> {
    let text = match format {
        SerialFormat::Text => format!("{} {}\r\n", report.reason.code(), report.message),
        SerialFormat::Json => format!("{}\r\n", serde_json::to_string(report).unwrap_or_default()),
    };
    match encoding {
        SerialEncoding::Utf8 => text.into_bytes(),
        SerialEncoding::Gb18030 => encoding_rs::GB18030.encode(&text).0.into_owned(),
    }
}

/// Opens the device raw (8N1, no echo, no line discipline) at `baud`. Works on a pty too.
fn open(cfg: &SerialConfig) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_noctty()
        .open(&cfg.device)?;
    let mut t = rustix::termios::tcgetattr(&file)?;
    t.make_raw();
    t.set_speed(cfg.baud)?;
    rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &t)?;
    Ok(file)
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    /// A serial display must never become the daemon's controlling terminal.
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
    }
}

/// The output: lines queued (at most 64; more are dropped and logged, never blocking the
/// gate) and written in order by one thread, which reopens the device after an error.
#[derive(Debug)]
pub struct SerialOutput {
    worker: Worker<Vec<u8>>,
    format: SerialFormat,
    encoding: SerialEncoding,
}

impl SerialOutput {
    pub fn start(cfg: SerialConfig) -> std::io::Result<SerialOutput> {
        let (format, encoding) = (cfg.format, cfg.encoding);
        let mut port: Option<std::fs::File> = None;
        let worker = Worker::start("serial", 64, move |bytes: Vec<u8>| {
            for attempt in 0..2 {
                if port.is_none() {
                    match open(&cfg) {
                        Ok(f) => port = Some(f),
                        Err(e) => {
                            tracing::warn!(device = %cfg.device.display(), error = %e, "serial: cannot open");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    }
                }
                if let Some(f) = port.as_mut() {
                    match f.write_all(&bytes).and_then(|()| f.flush()) {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(device = %cfg.device.display(), error = %e, attempt, "serial: write failed; reopening");
                            port = None;
                        }
                    }
                }
            }
        })?;
        Ok(SerialOutput {
            worker,
            format,
            encoding,
        })
    }

    /// Queues the line for `report`; never waits.
    pub fn send(&self, report: &VerdictReport) {
        if !self.worker.offer(line(report, self.format, self.encoding)) {
            tracing::warn!("serial: queue full; line dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::verdict::Reason;

    fn report(reason: Reason) -> VerdictReport {
        VerdictReport {
            accepted: reason == Reason::Accepted,
            reason,
            message: reason.message(),
            seq: Some(7),
            at_ms: 0,
            clock_trusted: true,
            claims: None,
            subject_ref: None,
            detail: None,
        }
    }

    #[test]
    fn lines_carry_the_reason_code_and_the_chinese_message_in_the_chosen_encoding() {
        let r = report(Reason::Expired);
        assert_eq!(
            line(&r, SerialFormat::Text, SerialEncoding::Utf8),
            "expired 码已过期\r\n".as_bytes()
        );
        let gb = line(&r, SerialFormat::Text, SerialEncoding::Gb18030);
        let (back, _, bad) = encoding_rs::GB18030.decode(&gb);
        assert!(!bad);
        assert_eq!(back, "expired 码已过期\r\n");
        assert_ne!(
            gb,
            "expired 码已过期\r\n".as_bytes(),
            "GB18030 differs from UTF-8"
        );
        let json = line(&r, SerialFormat::Json, SerialEncoding::Utf8);
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(v["reason"], "expired");
        assert_eq!(v["seq"], 7);
    }
}
