//! The gate relay: a [`Relay`] trait with the real Linux GPIO character-device implementation
//! ([`CdevRelay`], through `gpiocdev`), a file double for commissioning ([`FileRelay`]), and
//! [`RelayOutput`], which drives it from its own thread so that holding the gate open never
//! delays reading the next code.
//!
//! **Invariant:** every accepted opening opens the gate. Openings that arrive while the gate is
//! open coalesce — the line stays energised until the latest deadline — instead of queueing
//! (and overflowing) pulses; a relay that cannot be driven is counted, logged as an error and
//! shown in the status (`yima_relay_up 0`), never dropped silently.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::telemetry::RelayHealth;

/// A relay line that can be energised and released.
pub trait Relay: Send {
    /// Energises (`true`) or releases (`false`) the line.
    fn set(&mut self, active: bool) -> Result<(), String>;
    /// Where the relay is, for logs and the status page.
    fn describe(&self) -> String;
    /// One opening was asked for (the file double records it; hardware needs nothing).
    fn opening(&mut self, _length: Duration) {}
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
            self.request = Some(
                b.request()
                    .map_err(|e| format!("{}: {e}", self.describe()))?,
            );
        }
        self.request
            .as_ref()
            .ok_or_else(|| "line not requested".to_string())
    }
}

impl Relay for CdevRelay {
    fn set(&mut self, active: bool) -> Result<(), String> {
        let line = self.line;
        let value = if active {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        let result = self.request().and_then(|r| {
            r.set_value(line, value)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
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

/// A relay for commissioning without hardware: each opening asked for and each change of the
/// line is appended to a file as a JSON line.
#[derive(Debug)]
pub struct FileRelay {
    path: PathBuf,
}

impl FileRelay {
    pub fn new(path: PathBuf) -> FileRelay {
        FileRelay { path }
    }

    fn append(&self, line: serde_json::Value) -> Result<(), String> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        writeln!(f, "{line}").map_err(|e| e.to_string())
    }
}

impl Relay for FileRelay {
    fn set(&mut self, active: bool) -> Result<(), String> {
        self.append(serde_json::json!({
            "line": if active { "on" } else { "off" },
            "at_ms": crate::clock::wall_clock_ms(),
        }))
    }

    fn opening(&mut self, length: Duration) {
        let _ = self.append(serde_json::json!({
            "opening": true,
            "pulse_ms": length.as_millis() as u64,
            "at_ms": crate::clock::wall_clock_ms(),
        }));
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// A relay double for tests: records every change of the line.
#[derive(Debug, Clone, Default)]
pub struct RecordingRelay {
    pub changes: Arc<Mutex<Vec<bool>>>,
    /// When set, every `set` fails (a relay that cannot be driven).
    pub broken: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay for RecordingRelay {
    fn set(&mut self, active: bool) -> Result<(), String> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("relay broken".into());
        }
        self.changes
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .push(active);
        Ok(())
    }

    fn describe(&self) -> String {
        "recording".into()
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Openings asked for and not yet taken by the relay thread (their lengths).
    asked: Vec<Duration>,
    stop: bool,
}

/// Drives a relay from its own thread: [`RelayOutput::open`] never waits and never drops.
#[derive(Debug)]
pub struct RelayOutput {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    health: Arc<RelayHealth>,
}

impl RelayOutput {
    /// Claims the relay (released) and starts its thread; a relay that cannot be claimed —
    /// no such GPIO chip or line, a line another program holds — is an error here, at start,
    /// not at the first accepted code.
    pub fn start(
        mut relay: Box<dyn Relay>,
        health: Arc<RelayHealth>,
    ) -> Result<RelayOutput, String> {
        let name = relay.describe();
        health.describe(&name);
        relay.set(false).inspect_err(|e| health.failed(e))?;
        health.ok();
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn({
                let shared = shared.clone();
                let health = health.clone();
                move || relay_loop(relay.as_mut(), &shared, &health, &name)
            })
            .map_err(|e| e.to_string())?;
        Ok(RelayOutput {
            shared,
            thread: Some(thread),
            health,
        })
    }

    /// Opens the gate for `length` (from now); while it is open, the later deadline wins.
    pub fn open(&self, length: Duration) {
        self.health.opening();
        let (lock, wake) = &*self.shared;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .asked
            .push(length);
        wake.notify_one();
    }
}

impl Drop for RelayOutput {
    /// Finishes the opening in progress (the gate closes on time), then stops.
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay_loop(
    relay: &mut dyn Relay,
    shared: &(Mutex<Shared>, Condvar),
    health: &RelayHealth,
    name: &str,
) {
    let (lock, wake) = shared;
    let mut open_until: Option<Instant> = None;
    let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let asked = std::mem::take(&mut st.asked);
        if !asked.is_empty() {
            drop(st);
            let now = Instant::now();
            let was_open = open_until.is_some();
            for length in &asked {
                relay.opening(*length);
                let until = now + *length;
                open_until = Some(open_until.map_or(until, |u| u.max(until)));
            }
            if was_open {
                health.coalesced(asked.len() as u64);
            } else {
                health.coalesced(asked.len() as u64 - 1);
                match relay.set(true) {
                    Ok(()) => health.activated(),
                    Err(e) => {
                        tracing::error!(relay = %name, error = %e, "relay: cannot open the gate");
                        health.failed(&e);
                        open_until = None;
                    }
                }
            }
            st = lock.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        match open_until {
            Some(until) => {
                let now = Instant::now();
                if now >= until {
                    drop(st);
                    open_until = None;
                    match relay.set(false) {
                        Ok(()) => health.ok(),
                        Err(e) => {
                            tracing::error!(relay = %name, error = %e, "relay: cannot close the gate");
                            health.failed(&e);
                        }
                    }
                    st = lock.lock().unwrap_or_else(|p| p.into_inner());
                } else {
                    st = wake
                        .wait_timeout(st, until - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            None if st.stop => return,
            None => st = wake.wait(st).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn a_burst_of_openings_coalesces_and_none_is_dropped() {
        let relay = RecordingRelay::default();
        let changes = relay.changes.clone();
        let health = Arc::new(RelayHealth::default());
        let out = RelayOutput::start(Box::new(relay), health.clone()).expect("start");
        for _ in 0..100 {
            out.open(Duration::from_millis(200));
        }
        wait_for("the gate to close", || {
            changes.lock().expect("lock").last() == Some(&false)
                && changes.lock().expect("lock").len() >= 3
        });
        let r = health.report();
        assert_eq!(r.openings, 100, "every opening reached the relay");
        assert_eq!(r.activations, 1, "one continuous opening");
        assert_eq!(r.coalesced, 99);
        assert_eq!(*changes.lock().expect("lock"), vec![false, true, false]);
        drop(out);
    }

    #[test]
    fn a_relay_that_fails_is_an_alarm_and_a_status() {
        let relay = RecordingRelay::default();
        let broken = relay.broken.clone();
        let health = Arc::new(RelayHealth::default());
        let out = RelayOutput::start(Box::new(relay), health.clone()).expect("start");
        broken.store(true, std::sync::atomic::Ordering::SeqCst);
        out.open(Duration::from_millis(10));
        wait_for("the failure", || !health.report().up);
        let r = health.report();
        assert_eq!(r.failures, 1);
        assert_eq!(r.last_error.as_deref(), Some("relay broken"));
        drop(out);
    }

    #[test]
    fn a_missing_gpio_chip_fails_at_start() {
        let health = Arc::new(RelayHealth::default());
        let err = RelayOutput::start(
            Box::new(CdevRelay::new(
                PathBuf::from("/dev/gpiochip-none"),
                3,
                false,
            )),
            health.clone(),
        )
        .expect_err("no chip");
        assert!(err.contains("/dev/gpiochip-none:3"), "{err}");
        assert!(!health.report().up);
    }
}
