//! Values as people read them in tables and summaries: sizes in binary units with one
//! decimal, times in UTC to the minute, durations as `1.2s` / `3m05s`. `--json` prints the
//! daemon's exact values instead (bytes, RFC 3339 times, milliseconds).
//!
//! Times are shown in UTC whatever the host's time zone, so the same backup reads the same on
//! every host and in every bug report; the column headers say `(UTC)`.

use chrono::{DateTime, Utc};

/// `bytes` in B, KiB, MiB, GiB, TiB or PiB with one decimal (`100 B`, `2.0 KiB`, `1.5 GiB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.96 KiB would print as `1024.0 KiB`: move up a unit where rounding reaches 1024.
    while v >= 1024.0 - 0.05 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// An RFC 3339 time as `2026-12-07 14:02` (UTC); a value that is not one is shown as it is.
pub fn time(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&Utc).format("%Y-%m-%d %H:%M").to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

/// A duration in milliseconds as `340ms`, `1.2s`, `3m05s` or `2h07m`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        // 59.96 s would round to `60.0s`: whole minutes from there on.
        1_000..59_950 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => {
            let s = (ms + 500) / 1000;
            if s < 3600 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{}h{:02}m", s / 3600, s % 3600 / 60) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_one_decimal_in_binary_units() {
        for (bytes, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (2048, "2.0 KiB"),
            (1536, "1.5 KiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (16 << 20, "16.0 MiB"),
            (3 << 29, "1.5 GiB"),
            (5 << 40, "5.0 TiB"),
            (u64::MAX, "16384.0 PiB"),
        ] {
            assert_eq!(size(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn times_are_utc_to_the_minute() {
        assert_eq!(time("2026-12-07T14:02:59Z"), "2026-12-07 14:02");
        assert_eq!(time("2026-12-07T14:02:00.123456Z"), "2026-12-07 14:02");
        assert_eq!(time("2026-12-07T16:02:00+02:00"), "2026-12-07 14:02");
        assert_eq!(time("2027-01-01T00:30:00-01:00"), "2027-01-01 01:30");
        assert_eq!(time("t0"), "t0");
        assert_eq!(time(""), "");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        for (ms, want) in [
            (0, "0ms"),
            (340, "340ms"),
            (1_000, "1.0s"),
            (1_234, "1.2s"),
            (59_949, "59.9s"),
            (59_950, "1m00s"),
            (185_000, "3m05s"),
            (3_599_400, "59m59s"),
            (3_599_500, "1h00m"),
            (7_620_000, "2h07m"),
        ] {
            assert_eq!(duration_ms(ms), want, "{ms}");
        }
    }
}
