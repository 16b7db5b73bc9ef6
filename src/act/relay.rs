//! The gate relay: a [`Relay`] trait with the real Linux GPIO character-device implementation
//! ([`CdevRelay`], through `gpiocdev`) and [`RelayOutput`], which pulses it on its own thread so
//! that a 500 ms pulse never delays reading the next code.

use std::path::PathBuf;
use std::time::Duration;

/// A relay that can be pulsed (energised for a while, then released).
pub trait Relay: Send {
    fn pulse(&mut self, length: Duration) -> Result<(), String>;
    fn describe(&self) -> String;
}

/// A GPIO line on a `/dev/gpiochipN`, driven through the character device (uAPI v2).
pub struct CdevRelay {
    chip: PathBuf,
    line: u32,
    active_low: bool,
    request: Option<gpiocdev::Request>,
}

impl std::fmt::Debug for CdevRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdevRelay")
            .field("chip", &self.chip)
            .field("line", &self.line)
            .field("active_low", &self.active_low)
            .finish()
    }
}

impl CdevRelay {
    pub fn new(chip: PathBuf, line: u32, active_low: bool) -> CdevRelay {
        CdevRelay {
            chip,
            line,
            active_low,
            request: None,
        }
    }

    /// Requests the line as an output, released (inactive). Kept for the process lifetime so
    /// no other program can drive the gate.
    fn request(&mut self) -> Result<&gpiocdev::Request, String> {
        if self.request.is_none() {
            let mut b = gpiocdev::Request::builder();
            b.on_chip(&self.chip)
                .with_consumer("yima-gate")
                .with_line(self.line)
                .as_output(gpiocdev::line::Value::Inactive);
            if self.active_low {
                b.as_active_low();
            }
            self.request = Some(b.request().map_err(|e| e.to_string())?);
        }
        self.request
            .as_ref()
            .ok_or_else(|| "line not requested".to_string())
    }
}

impl Relay for CdevRelay {
    fn pulse(&mut self, length: Duration) -> Result<(), String> {
        let line = self.line;
        let set = |r: &gpiocdev::Request, v| r.set_value(line, v).map_err(|e| e.to_string());
        let result = {
            let req = self.request()?;
            set(req, gpiocdev::line::Value::Active).and_then(|()| {
                std::thread::sleep(length);
                set(req, gpiocdev::line::Value::Inactive)
            })
        };
        if result.is_err() {
            // Re-request next time (chip replugged, line taken away).
            self.request = None;
        }
        result
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.chip.display(), self.line)
    }
}

/// Pulses a relay from its own thread; accepted verdicts queue pulses without waiting.
#[derive(Debug)]
pub struct RelayOutput {
    /// Dropping it finishes the queued pulses.
    worker: crate::act::worker::Worker<Duration>,
}

/// Pulses that may wait behind one in progress (a queue of people at a turnstile).
const PULSE_QUEUE: usize = 8;

impl RelayOutput {
    pub fn start(mut relay: Box<dyn Relay>) -> std::io::Result<RelayOutput> {
        let name = relay.describe();
        let worker = crate::act::worker::Worker::start("relay", PULSE_QUEUE, move |length| {
            if let Err(e) = relay.pulse(length) {
                tracing::error!(relay = %name, error = %e, "relay: pulse failed; gate did not open");
            }
        })?;
        Ok(RelayOutput { worker })
    }

    /// Queues a pulse; false (and an error log) when the queue is full.
    pub fn open(&self, length: Duration) -> bool {
        let queued = self.worker.offer(length);
        if !queued {
            tracing::error!("relay: {PULSE_QUEUE} pulses already waiting (or the relay thread is gone); this opening dropped");
        }
        queued
    }
}

/// A relay double for tests: records pulses instead of driving hardware.
#[derive(Debug, Clone, Default)]
pub struct RecordingRelay {
    pub pulses: std::sync::Arc<std::sync::Mutex<Vec<Duration>>>,
}

impl Relay for RecordingRelay {
    fn pulse(&mut self, length: Duration) -> Result<(), String> {
        self.pulses
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .push(length);
        Ok(())
    }

    fn describe(&self) -> String {
        "recording".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_pulses_in_order_without_blocking_the_caller() {
        let relay = RecordingRelay::default();
        let pulses = relay.pulses.clone();
        let out = RelayOutput::start(Box::new(relay)).expect("start");
        assert!(out.open(Duration::from_millis(500)));
        assert!(out.open(Duration::from_millis(300)));
        drop(out); // drains the queue
        assert_eq!(
            *pulses.lock().expect("lock"),
            vec![Duration::from_millis(500), Duration::from_millis(300)]
        );
    }

    #[test]
    fn a_missing_gpio_chip_is_an_error_not_a_panic() {
        let mut r = CdevRelay::new(PathBuf::from("/dev/gpiochip-none"), 3, false);
        assert!(r.pulse(Duration::from_millis(1)).is_err());
        assert_eq!(r.describe(), "/dev/gpiochip-none:3");
    }
}

/// A relay for commissioning without hardware: each pulse appends a JSON line to a file.
#[derive(Debug)]
pub struct FileRelay {
    path: PathBuf,
}

impl FileRelay {
    pub fn new(path: PathBuf) -> FileRelay {
        FileRelay { path }
    }
}

impl Relay for FileRelay {
    fn pulse(&mut self, length: Duration) -> Result<(), String> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| e.to_string())?;
        let line = serde_json::json!({
            "pulse_ms": length.as_millis() as u64,
            "at_ms": crate::clock::wall_clock_ms(),
        });
        writeln!(f, "{line}").map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}
