//! Presentations: the same code text seen in consecutive frames is one presentation and is
//! verified once; once it has been out of view for longer than the hold-off, seeing it again
//! is a new presentation (for a dynamic code, that is a replay and the verifier says so).
//!
//! Pure and clock-free: callers pass monotonic frame times.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Default hold-off: a code missed for up to this long (a decode miss, a hand wobble) is
/// still the same presentation.
pub const DEFAULT_HOLD_OFF_MS: i64 = 1500;
/// Most codes tracked at once; a frame cannot hold more than a handful.
const MAX_TRACKED: usize = 64;

/// Tracks which code texts are currently in view.
#[derive(Debug, Clone)]
pub struct Presentations {
    hold_off_ms: i64,
    /// Digest of the text → last time seen (monotonic ms).
    in_view: HashMap<[u8; 16], i64>,
}

fn digest(text: &str) -> [u8; 16] {
    let d = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

impl Presentations {
    pub fn new(hold_off_ms: i64) -> Presentations {
        Presentations {
            hold_off_ms: hold_off_ms.max(0),
            in_view: HashMap::new(),
        }
    }

    /// Records the texts seen in one frame at `now_ms`; returns those that begin a new
    /// presentation (each at most once, in the order given).
    pub fn observe<'a>(&mut self, texts: &'a [String], now_ms: i64) -> Vec<&'a str> {
        let hold_off = self.hold_off_ms;
        self.in_view
            .retain(|_, last| now_ms.saturating_sub(*last) <= hold_off);
        let mut fresh = Vec::new();
        for t in texts {
            let key = digest(t);
            match self.in_view.insert(key, now_ms) {
                Some(_) => {}
                None => {
                    if !fresh.contains(&t.as_str()) {
                        fresh.push(t.as_str());
                    }
                }
            }
        }
        if self.in_view.len() > MAX_TRACKED {
            // Keep the most recently seen; the rest count as gone.
            let mut entries: Vec<([u8; 16], i64)> = self.in_view.drain().collect();
            entries.sort_by_key(|(_, last)| std::cmp::Reverse(*last));
            entries.truncate(MAX_TRACKED);
            self.in_view.extend(entries);
        }
        fresh
    }

    /// Number of codes currently in view.
    pub fn in_view(&self) -> usize {
        self.in_view.len()
    }
}

impl Default for Presentations {
    fn default() -> Self {
        Presentations::new(DEFAULT_HOLD_OFF_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn consecutive_frames_are_one_presentation() {
        let mut p = Presentations::new(1000);
        let a = v(&["A"]);
        assert_eq!(p.observe(&a, 0), vec!["A"]);
        for t in (33..900).step_by(33) {
            assert!(p.observe(&a, t).is_empty(), "frame at {t}");
        }
    }

    #[test]
    fn a_short_miss_does_not_split_but_leaving_does() {
        let mut p = Presentations::new(1000);
        let a = v(&["A"]);
        assert_eq!(p.observe(&a, 0).len(), 1);
        assert!(p.observe(&[], 500).is_empty());
        assert!(
            p.observe(&a, 900).is_empty(),
            "missed for 900 ms: same presentation"
        );
        assert!(p.observe(&[], 1500).is_empty());
        assert_eq!(
            p.observe(&a, 2000),
            vec!["A"],
            "gone 1100 ms: new presentation"
        );
    }

    #[test]
    fn several_codes_are_tracked_separately() {
        let mut p = Presentations::new(1000);
        assert_eq!(p.observe(&v(&["A", "B", "A"]), 0), vec!["A", "B"]);
        assert_eq!(p.observe(&v(&["B", "C"]), 100), vec!["C"]);
        assert_eq!(p.in_view(), 3);
    }

    #[test]
    fn zero_hold_off_makes_every_frame_new() {
        let mut p = Presentations::new(0);
        assert_eq!(p.observe(&v(&["A"]), 0).len(), 1);
        assert_eq!(p.observe(&v(&["A"]), 33).len(), 1);
    }
}
