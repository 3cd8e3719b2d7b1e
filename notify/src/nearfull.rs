//! `volume-near-full`: when a volume's usage crosses 80% and 95% of its size limit, one event
//! per crossing.
//!
//! [`NearFull`] is a state machine without I/O: the daemon feeds it each measurement
//! ([`NearFull::observe`]) and sends what it returns. Per volume it keeps how many thresholds
//! are "armed off" (0, 1 or 2). Rising past a threshold sends one event (jumping past both at
//! once sends one, naming the higher); staying above sends nothing; a threshold is re-armed
//! only when usage falls below it by more than [`NearFull::HYSTERESIS`] points, so usage
//! wobbling around 80% does not page anyone on every measurement.
//!
//! Limitation: the state is in memory; after a daemon restart a volume already above a
//! threshold is reported once more.

use std::collections::HashMap;

use crate::event::{Event, EventKind};

/// Per-volume near-full state; see the module docs.
#[derive(Debug, Default)]
pub struct NearFull {
    host: String,
    level: HashMap<String, usize>,
}

impl NearFull {
    /// The thresholds, in percent of the size limit.
    pub const THRESHOLDS: [u64; 2] = [80, 95];
    /// How far (percentage points) usage must fall below a threshold to re-arm it.
    pub const HYSTERESIS: u64 = 5;

    /// Events will name `host`.
    pub fn new(host: impl Into<String>) -> Self {
        NearFull { host: host.into(), level: HashMap::new() }
    }

    /// Records that `volume` uses `used` of `limit` bytes; returns the event to send, if this
    /// measurement crossed a threshold. A `limit` of 0 (no limit) never sends anything.
    pub fn observe(&mut self, volume: &str, used: u64, limit: u64) -> Option<Event> {
        if limit == 0 {
            return None;
        }
        // Hundredths of a percent, in u128 so no product overflows.
        let bp = (u128::from(used) * 10_000 / u128::from(limit)) as u64;
        let level = self.level.entry(volume.to_string()).or_insert(0);
        while *level > 0 && bp < (Self::THRESHOLDS[*level - 1] - Self::HYSTERESIS) * 100 {
            *level -= 1;
        }
        let reached = Self::THRESHOLDS.iter().filter(|t| bp >= *t * 100).count();
        if reached <= *level {
            return None;
        }
        *level = reached;
        let threshold = Self::THRESHOLDS[reached - 1];
        let percent = format!("{}.{:02}", bp / 100, bp % 100);
        Some(
            Event::new(EventKind::VolumeNearFull, self.host.clone())
                .volume(volume)
                .reason(format!("{}% used ({used} of {limit} bytes), past the {threshold}% threshold", bp / 100))
                .detail("used_bytes", used.to_string())
                .detail("limit_bytes", limit.to_string())
                .detail("percent", percent)
                .detail("threshold", threshold.to_string()),
        )
    }

    /// Drops what is known about `volume` (it was removed).
    pub fn forget(&mut self, volume: &str) {
        self.level.remove(volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (percent used, threshold of the event expected or None), one volume, in order.
    fn run(steps: &[(u64, Option<&str>)]) {
        let mut nf = NearFull::new("h");
        for (i, (pct, want)) in steps.iter().enumerate() {
            let got = nf.observe("db", *pct * 10, 1000);
            let got = got.as_ref().map(|e| e.detail["threshold"].as_str());
            assert_eq!(got, *want, "step {i}: {pct}%");
        }
    }

    #[test]
    fn the_issue_table() {
        run(&[(79, None), (81, Some("80")), (90, None), (96, Some("95")), (99, None), (70, None), (85, Some("80"))]);
    }

    #[test]
    fn hysteresis_keeps_a_wobble_quiet() {
        run(&[(81, Some("80")), (78, None), (81, None), (76, None), (80, None), (74, None), (80, Some("80"))]);
        run(&[(96, Some("95")), (91, None), (96, None), (89, None), (95, Some("95"))]);
    }

    #[test]
    fn jumping_past_both_sends_one_naming_the_higher() {
        run(&[(50, None), (97, Some("95")), (100, None), (120, None)]);
    }

    #[test]
    fn exact_thresholds_count_and_volumes_are_apart() {
        let mut nf = NearFull::new("h");
        assert!(nf.observe("a", 800, 1000).is_some());
        assert!(nf.observe("b", 799, 1000).is_none());
        assert!(nf.observe("b", 950, 1000).is_some());
        assert!(nf.observe("a", 800, 1000).is_none());
        assert!(nf.observe("a", 1, 0).is_none());
        nf.forget("a");
        let e = nf.observe("a", 810, 1000).unwrap();
        assert_eq!(e.kind, EventKind::VolumeNearFull);
        assert_eq!(e.volume.as_deref(), Some("a"));
        assert_eq!(e.detail["percent"], "81.00");
        assert_eq!(e.reason.as_deref(), Some("81% used (810 of 1000 bytes), past the 80% threshold"));
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let mut nf = NearFull::new("h");
        assert!(nf.observe("v", u64::MAX - 1, u64::MAX).is_some());
    }
}
