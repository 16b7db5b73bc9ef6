//! Time the terminal can vouch for: an injected clock, and a trusted-time floor (last platform
//! time plus monotonic time since) that never moves backwards.
//!
//! **Invariant:** only [`SystemTimeSource`] reads the operating system's clocks; everything else
//! is handed a [`VerifyTime`] or a [`Clock`], so tests move time by hand and never sleep.
//!
//! When the system clock jumps while the gate runs: with a platform anchor (an enrolled gate)
//! the wall clock is not consulted at all; without one, a clock set back behind the floor is
//! untrusted until it catches up or an anchor arrives, and a clock set forward is followed
//! (a correction and an attack look alike without a reference) — the floor then holds it.

use std::path::PathBuf;
use std::sync::Mutex;

/// The moment a verification happens, and whether the terminal vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyTime {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
    /// False when the terminal cannot vouch for its clock (rule 7: dynamic codes refused).
    pub trusted: bool,
}

impl VerifyTime {
    pub fn trusted(unix_ms: i64) -> VerifyTime {
        VerifyTime {
            unix_ms,
            trusted: true,
        }
    }

    pub fn untrusted(unix_ms: i64) -> VerifyTime {
        VerifyTime {
            unix_ms,
            trusted: false,
        }
    }
}

/// Where verification time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> VerifyTime;
    /// The floor a live clock wants persisted across restarts; `None` for clocks that do not
    /// follow real time (fixed, audit).
    fn floor_ms(&self) -> Option<i64> {
        None
    }
    /// The platform's time arrived in a signed bundle; clocks that can use it do.
    fn anchor(&self, _platform_ms: i64) {}
}

/// A clock stopped at one moment (`verify --at`, audits, tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub VerifyTime);

impl Clock for FixedClock {
    fn now(&self) -> VerifyTime {
        self.0
    }
}

/// Raw readings of the machine's clocks.
pub trait TimeSource: Send + Sync {
    /// Wall-clock time, ms since the Unix epoch (may be wrong, may jump).
    fn wall_ms(&self) -> i64;
    /// Monotonic milliseconds since an arbitrary point in this boot (never jumps).
    fn mono_ms(&self) -> i64;
    /// True when the operating system reports the wall clock synchronized (NTP).
    fn wall_synchronized(&self) -> bool;
}

/// The operating system's clocks. The wall clock counts as synchronized when
/// systemd-timesyncd says so (`/run/systemd/timesync/synchronized`) or the technician has
/// declared it trusted (a GPS/PTP-disciplined clock, chrony with its own checks).
#[derive(Debug)]
pub struct SystemTimeSource {
    start: std::time::Instant,
    sync_flag: PathBuf,
    declared_trusted: bool,
}

impl SystemTimeSource {
    pub fn new(declared_trusted: bool) -> SystemTimeSource {
        SystemTimeSource {
            start: std::time::Instant::now(),
            sync_flag: PathBuf::from("/run/systemd/timesync/synchronized"),
            declared_trusted,
        }
    }
}

/// Monotonic milliseconds since this process first asked: the one time base of frame capture
/// times, presentations and ages (never a verification time).
pub fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    i64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// The raw wall clock, ms since the Unix epoch. For naming files and defaults only; never a
/// verification time (use a [`Clock`]).
pub fn wall_clock_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl TimeSource for SystemTimeSource {
    fn wall_ms(&self) -> i64 {
        wall_clock_ms()
    }

    fn mono_ms(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn wall_synchronized(&self) -> bool {
        self.declared_trusted || self.sync_flag.exists()
    }
}

/// How long a platform time anchor is trusted without a new one: monotonic clocks drift by
/// up to ~100 ppm, so after a day the error may approach 10 s.
pub const ANCHOR_MAX_AGE_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    platform_ms: i64,
    mono_ms: i64,
}

#[derive(Debug)]
struct State {
    anchor: Option<Anchor>,
    /// Never returned time below this; persisted by the caller across restarts.
    floor_ms: i64,
}

/// The trusted clock: platform anchor (plus monotonic time) first, a synchronized wall clock
/// second, and never earlier than the floor. A wall clock found behind the floor by more than
/// the tolerance has been set back: it is not trusted until a platform anchor arrives.
#[derive(Debug)]
pub struct TrustedClock<S> {
    source: S,
    tolerance_ms: i64,
    state: Mutex<State>,
}

impl<S: TimeSource> TrustedClock<S> {
    /// `floor_ms` is the last trusted time persisted before this start (0 if none);
    /// `tolerance_ms` is the skew tolerance.
    pub fn new(source: S, floor_ms: i64, tolerance_ms: i64) -> TrustedClock<S> {
        TrustedClock {
            source,
            tolerance_ms,
            state: Mutex::new(State {
                anchor: None,
                floor_ms,
            }),
        }
    }

    /// Records the platform's time (from a signed bundle) as seen now.
    pub fn anchor(&self, platform_ms: i64) {
        let mono_ms = self.source.mono_ms();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.anchor = Some(Anchor {
            platform_ms,
            mono_ms,
        });
    }
}

impl<S: TimeSource> Clock for TrustedClock<S> {
    fn anchor(&self, platform_ms: i64) {
        TrustedClock::anchor(self, platform_ms);
    }

    fn now(&self) -> VerifyTime {
        let wall = self.source.wall_ms();
        let mono = self.source.mono_ms();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let anchored = st.anchor.and_then(|a| {
            let age = mono.saturating_sub(a.mono_ms);
            (0..=ANCHOR_MAX_AGE_MS)
                .contains(&age)
                .then(|| a.platform_ms.saturating_add(age))
        });
        let (t, trusted) = match anchored {
            Some(t) => (t, true),
            None => {
                let set_back = wall < st.floor_ms.saturating_sub(self.tolerance_ms);
                (wall, self.source.wall_synchronized() && !set_back)
            }
        };
        let t = t.max(st.floor_ms);
        if trusted {
            st.floor_ms = t;
        }
        VerifyTime {
            unix_ms: t,
            trusted,
        }
    }

    /// The latest trusted time handed out (persist it to survive restarts).
    fn floor_ms(&self) -> Option<i64> {
        Some(
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .floor_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    #[derive(Debug, Default, Clone)]
    struct FakeSource {
        wall: Arc<AtomicI64>,
        mono: Arc<AtomicI64>,
        synced: Arc<AtomicBool>,
    }

    impl TimeSource for FakeSource {
        fn wall_ms(&self) -> i64 {
            self.wall.load(Ordering::SeqCst)
        }
        fn mono_ms(&self) -> i64 {
            self.mono.load(Ordering::SeqCst)
        }
        fn wall_synchronized(&self) -> bool {
            self.synced.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn unsynced_wall_clock_is_untrusted() {
        let src = FakeSource::default();
        src.wall.store(1_000_000, Ordering::SeqCst);
        let c = TrustedClock::new(src, 0, 5000);
        assert_eq!(c.now(), VerifyTime::untrusted(1_000_000));
    }

    #[test]
    fn synced_wall_clock_is_trusted_and_raises_floor() {
        let src = FakeSource::default();
        src.wall.store(1_000_000, Ordering::SeqCst);
        src.synced.store(true, Ordering::SeqCst);
        let c = TrustedClock::new(src.clone(), 0, 5000);
        assert_eq!(c.now(), VerifyTime::trusted(1_000_000));
        assert_eq!(c.floor_ms(), Some(1_000_000));
        // a small step back is absorbed by the floor and still trusted
        src.wall.store(998_000, Ordering::SeqCst);
        assert_eq!(c.now(), VerifyTime::trusted(1_000_000));
        // a large step back is not trusted, and time still does not go backwards
        src.wall.store(900_000, Ordering::SeqCst);
        assert_eq!(c.now(), VerifyTime::untrusted(1_000_000));
    }

    #[test]
    fn persisted_floor_detects_clock_set_back_across_restart() {
        let src = FakeSource::default();
        src.synced.store(true, Ordering::SeqCst);
        src.wall.store(5_000_000, Ordering::SeqCst);
        let c = TrustedClock::new(src, 9_000_000, 5000);
        assert_eq!(c.now(), VerifyTime::untrusted(9_000_000));
    }

    #[test]
    fn platform_anchor_wins_and_ages_out() {
        let src = FakeSource::default();
        src.wall.store(1, Ordering::SeqCst); // RTC battery dead: 1970
        src.mono.store(10_000, Ordering::SeqCst);
        let c = TrustedClock::new(src.clone(), 0, 5000);
        assert!(!c.now().trusted);
        c.anchor(1_800_000_000_000);
        src.mono.store(70_000, Ordering::SeqCst);
        assert_eq!(c.now(), VerifyTime::trusted(1_800_000_060_000));
        src.mono
            .store(10_000 + ANCHOR_MAX_AGE_MS + 1, Ordering::SeqCst);
        let late = c.now();
        assert!(!late.trusted);
        assert!(late.unix_ms >= 1_800_000_060_000, "never moves backwards");
    }
}
