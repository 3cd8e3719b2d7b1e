use super::*;
use chrono::{Datelike, Weekday};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("test time").with_timezone(&Utc)
}

fn sched(s: &str) -> Schedule {
    Schedule::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// The next `n` slots after `from`.
fn slots(s: &Schedule, from: &str, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut cur = t(from);
    for _ in 0..n {
        cur = s.next_after(cur).expect("next slot");
        out.push(cur);
    }
    out
}

// 2026-11-30 is a Monday.
const MON: &str = "2026-11-30T00:00:00Z";

#[test]
fn next_after_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("0 3 * * *", MON, "2026-11-30T03:00:00Z"),
        ("0 3 * * *", "2026-11-30T03:00:00Z", "2026-12-01T03:00:00Z"),
        ("0 3 * * *", "2026-11-30T02:59:59.999Z", "2026-11-30T03:00:00Z"),
        ("0 3 * * *", "2026-11-30T03:00:00.5Z", "2026-12-01T03:00:00Z"),
        ("*/15 * * * *", "2026-11-30T10:07:00Z", "2026-11-30T10:15:00Z"),
        ("5-10/5 * * * *", "2026-11-30T10:06:00Z", "2026-11-30T10:10:00Z"),
        ("30 0 3 * * *", MON, "2026-11-30T03:00:30Z"),
        ("*/10 * * * * *", "2026-11-30T10:00:01Z", "2026-11-30T10:00:10Z"),
        ("0 0 1 JAN *", MON, "2027-01-01T00:00:00Z"),
        ("0 0 29 feb *", MON, "2028-02-29T00:00:00Z"),
        ("0 12 * jan,DEC sat", MON, "2026-12-05T12:00:00Z"),
        ("@hourly", "2026-11-30T10:07:00Z", "2026-11-30T11:00:00Z"),
        ("@daily", "2026-11-30T10:07:00Z", "2026-12-01T00:00:00Z"),
        ("@midnight", "2026-11-30T10:07:00Z", "2026-12-01T00:00:00Z"),
        ("@weekly", MON, "2026-12-06T00:00:00Z"),
        ("@monthly", MON, "2026-12-01T00:00:00Z"),
        ("@yearly", MON, "2027-01-01T00:00:00Z"),
        ("@Annually", MON, "2027-01-01T00:00:00Z"),
        ("  0  3\t* * *  ", MON, "2026-11-30T03:00:00Z"),
    ];
    for (expr, from, want) in cases {
        assert_eq!(sched(expr).next_after(t(from)), Some(t(want)), "{expr:?} after {from}");
    }
}

#[test]
fn day_of_week_uses_standard_numbering() {
    use Weekday::*;
    let cases: &[(&str, &[Weekday])] = &[
        ("0 3 * * 0", &[Sun]),
        ("0 3 * * 7", &[Sun]),
        ("0 3 * * SUN", &[Sun]),
        ("0 3 * * 1", &[Mon]),
        ("0 3 * * 6", &[Sat]),
        ("0 3 * * 1-5", &[Mon, Tue, Wed, Thu, Fri]),
        ("0 3 * * mon-fri", &[Mon, Tue, Wed, Thu, Fri]),
        ("0 3 * * 1,3,5", &[Mon, Wed, Fri]),
        ("0 3 * * 1-5/2", &[Mon, Wed, Fri]),
        ("0 3 * * */2", &[Sun, Tue, Thu, Sat]),
        ("0 3 * * 5-7", &[Fri, Sat, Sun]),
        ("0 3 * * 0,7", &[Sun]),
        ("0 3 * * 4/1", &[Thu, Fri, Sat, Sun]),
        ("0 3 * * sat,sunday", &[Sat, Sun]),
        ("0 3 * * 0-7", &[Mon, Tue, Wed, Thu, Fri, Sat, Sun]),
        ("0 0 3 * * 1-5", &[Mon, Tue, Wed, Thu, Fri]),
    ];
    for (expr, want) in cases {
        let s = sched(expr);
        // Two weeks of slots, starting on a Monday: every slot is at 03:00 on a wanted day and
        // every wanted day comes up.
        let got = slots(&s, MON, want.len() * 2);
        let mut days: Vec<Weekday> = got.iter().map(|d| d.weekday()).collect();
        assert!(got.iter().all(|d| d.format("%H:%M:%S").to_string() == "03:00:00"), "{expr}: {got:?}");
        assert!(got.last().expect("slots") < &t("2026-12-14T00:00:00Z"), "{expr}: {got:?}");
        days.sort_by_key(|d| d.num_days_from_monday());
        days.dedup();
        let mut want = want.to_vec();
        want.sort_by_key(|d| d.num_days_from_monday());
        assert_eq!(days, want, "{expr}");
    }
}

#[test]
fn restricted_day_fields_are_ored() {
    // 13th of the month or a Friday.
    let got = slots(&sched("0 0 13 * FRI"), "2026-11-01T00:00:00Z", 5);
    let want = ["2026-11-06", "2026-11-13", "2026-11-20", "2026-11-27", "2026-12-04"];
    let got: Vec<String> = got.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();
    assert_eq!(got, want);
    // `*`-led day-of-month: both must match (Vixie cron): odd days that are Mondays.
    let got = slots(&sched("0 0 */2 * MON"), "2026-11-01T00:00:00Z", 3);
    let got: Vec<String> = got.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();
    assert_eq!(got, ["2026-11-09", "2026-11-23", "2026-12-07"]);
}

#[test]
fn expr_is_kept() {
    for e in ["0 3 * * 7", "@daily", " */5 * * * * * "] {
        let s = sched(e);
        assert_eq!(s.expr(), e);
        assert_eq!(s.to_string(), e);
        assert_eq!(e.parse::<Schedule>().expect("parse"), s);
    }
}

#[test]
fn parse_errors() {
    let fc = "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (a seconds field first)";
    let cases: &[(&str, String)] = &[
        ("", r#"schedule "": empty cron expression"#.into()),
        ("   ", r#"schedule "   ": empty cron expression"#.into()),
        ("0 3 * *", format!(r#"schedule "0 3 * *": {fc}, found 4"#)),
        ("0 0 3 * * * 2030", format!(r#"schedule "0 0 3 * * * 2030": {fc}, found 7"#)),
        (
            "@reboot",
            r#"schedule "@reboot": unknown macro "@reboot" (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)"#
                .into(),
        ),
        ("61 3 * * *", r#"schedule "61 3 * * *": minute field "61": 61 is out of range 0-59"#.into()),
        ("0 24 * * *", r#"schedule "0 24 * * *": hour field "24": 24 is out of range 0-23"#.into()),
        ("0 3 0 * *", r#"schedule "0 3 0 * *": day-of-month field "0": 0 is out of range 1-31"#.into()),
        ("0 3 * 13 *", r#"schedule "0 3 * 13 *": month field "13": 13 is out of range 1-12"#.into()),
        ("0 3 * * 8", r#"schedule "0 3 * * 8": day-of-week field "8": 8 is out of range 0-7"#.into()),
        ("60 0 3 * * *", r#"schedule "60 0 3 * * *": second field "60": 60 is out of range 0-59"#.into()),
        (
            "0 3 * * FOO",
            r#"schedule "0 3 * * FOO": day-of-week field "FOO": "FOO" is not a number or a day-of-week name"#
                .into(),
        ),
        (
            "0 3 * * MON/x",
            r#"schedule "0 3 * * MON/x": day-of-week field "MON/x": step "x" must be a positive integer"#.into(),
        ),
        ("x 3 * * *", r#"schedule "x 3 * * *": minute field "x": "x" is not a number"#.into()),
        (
            "0 3 * * FRI-MON",
            r#"schedule "0 3 * * FRI-MON": day-of-week field "FRI-MON": range "FRI-MON" runs backwards (ranges do not wrap around)"#
                .into(),
        ),
        (
            "*/0 * * * *",
            r#"schedule "*/0 * * * *": minute field "*/0": step "0" must be a positive integer"#.into(),
        ),
        ("1,,2 * * * *", r#"schedule "1,,2 * * * *": minute field "1,,2": empty list item"#.into()),
        ("1-2-3 * * * *", r#"schedule "1-2-3 * * * *": minute field "1-2-3": "2-3" is not a number"#.into()),
        ("0 3 * * ?", String::new()),
        ("0 0 30 2 *", r#"schedule "0 0 30 2 *": never fires"#.into()),
        ("0 0 31 4,6,9,11 *", r#"schedule "0 0 31 4,6,9,11 *": never fires"#.into()),
    ];
    for (expr, want) in cases {
        match Schedule::parse(expr) {
            Ok(_) => assert!(want.is_empty(), "{expr:?} parsed, want {want}"),
            Err(e) => assert_eq!(&e.to_string(), want, "{expr:?}"),
        }
    }
}

#[test]
fn latest_slot_agrees_with_forward_search() {
    // The crate's backwards search (used for `Due::Now`'s slot) against a forward walk.
    let exprs = ["0 3 * * *", "0 3 * * 1-5", "0 0 13 * FRI", "0 0 29 2 *", "*/7 5 1,31 * *", "15 */6 * * 0"];
    let mut now = t("2027-12-25T00:00:00Z");
    let step = TimeDelta::seconds(987_654);
    for _ in 0..200 {
        now += step;
        for e in exprs {
            let s = sched(e);
            let latest = s.latest_at_or_before(now).expect("latest slot");
            assert!(latest <= now && s.next_after(latest).expect("next slot") > now, "{e} at {now}: {latest}");
            // `latest` is itself a slot (and the one after it is past `now`, above).
            assert_eq!(s.next_after(latest - TimeDelta::nanoseconds(1)), Some(latest), "{e} at {now}");
        }
    }
    // Exactly on a slot, and a nanosecond before it.
    let s = sched("0 3 * * *");
    assert_eq!(s.latest_at_or_before(t("2026-11-30T03:00:00Z")), Some(t("2026-11-30T03:00:00Z")));
    assert_eq!(s.latest_at_or_before(t("2026-11-30T02:59:59.999999999Z")), Some(t("2026-11-29T03:00:00Z")));
}

#[test]
fn due_table() {
    let daily = sched("0 3 * * *");
    let at = |s: &str| Due::At(t(s));
    let now = |s: &str, missed: u32| Due::Now { slot: t(s), missed };
    let anchor = t("2026-11-30T01:00:00Z");
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, Due);
    let cases: &[Case] = &[
        // New schedule, before its first slot: wait for it.
        ("new, before first slot", None, "2026-11-30T02:00:00Z", at("2026-11-30T03:00:00Z")),
        // New schedule, first slot reached.
        ("new, first slot", None, "2026-11-30T03:00:00Z", now("2026-11-30T03:00:00Z", 0)),
        ("new, a bit late", None, "2026-11-30T03:00:07Z", now("2026-11-30T03:00:00Z", 0)),
        // Handled today's run; next one tomorrow.
        ("handled", Some("2026-11-30T03:00:00Z"), "2026-11-30T03:00:01Z", at("2026-12-01T03:00:00Z")),
        ("on time", Some("2026-11-30T03:00:00Z"), "2026-12-01T03:00:00Z", now("2026-12-01T03:00:00Z", 0)),
        ("missed one", Some("2026-11-30T03:00:00Z"), "2026-12-02T04:00:00Z", now("2026-12-02T03:00:00Z", 1)),
        ("missed many", Some("2026-11-30T03:00:00Z"), "2026-12-31T02:59:59Z", now("2026-12-30T03:00:00Z", 29)),
        // The clock went backwards below the last slot: wait for the slot after it.
        ("clock backwards", Some("2026-11-30T03:00:00Z"), "2026-11-29T00:00:00Z", at("2026-12-01T03:00:00Z")),
        ("past 2100", Some("2100-12-31T03:00:00Z"), "2101-01-01T00:00:00Z", Due::Never),
    ];
    for (name, last, now_s, want) in cases {
        let got = due(&daily, last.map(t), anchor, t(now_s));
        assert_eq!(got, *want, "{name}");
    }
}

#[test]
fn due_runs_once_then_waits() {
    // After downtime the caller records the returned slot; the next call waits.
    let s = sched("*/15 * * * *");
    let anchor = t("2026-11-30T00:00:00Z");
    let Due::Now { slot, missed } = due(&s, None, anchor, t("2026-11-30T10:20:00Z")) else { panic!() };
    assert_eq!((slot, missed), (t("2026-11-30T10:15:00Z"), 40));
    assert_eq!(due(&s, Some(slot), anchor, t("2026-11-30T10:20:00Z")), Due::At(t("2026-11-30T10:30:00Z")));
}

#[test]
fn due_six_fields_and_ored_days() {
    let s = sched("30 0 3 * * *");
    let anchor = t("2026-11-30T03:00:00Z");
    assert_eq!(due(&s, None, anchor, t("2026-11-30T03:00:29Z")), Due::At(t("2026-11-30T03:00:30Z")));
    assert_eq!(
        due(&s, None, anchor, t("2026-12-03T03:00:30Z")),
        Due::Now { slot: t("2026-12-03T03:00:30Z"), missed: 3 }
    );
    // 13th or Friday: Fri 11-06, Fri 11-13 (also the 13th, one slot), Fri 11-20.
    let s = sched("0 0 13 * 5");
    assert_eq!(
        due(&s, Some(t("2026-11-01T00:00:00Z")), anchor, t("2026-11-21T00:00:00Z")),
        Due::Now { slot: t("2026-11-20T00:00:00Z"), missed: 2 }
    );
}

#[test]
fn every_second_after_a_year_down_is_fast_and_capped() {
    let s = sched("* * * * * *");
    let started = std::time::Instant::now();
    let got = due(&s, Some(t("2025-11-30T00:00:00Z")), t("2025-01-01T00:00:00Z"), t("2026-11-30T12:34:56.789Z"));
    assert_eq!(got, Due::Now { slot: t("2026-11-30T12:34:56Z"), missed: MISSED_COUNT_CAP });
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    // Exactly at the cap is still exact.
    let last = t("2026-11-30T12:00:00Z");
    let now = last + TimeDelta::seconds(i64::from(MISSED_COUNT_CAP));
    assert_eq!(due(&s, Some(last), last, now), Due::Now { slot: now, missed: MISSED_COUNT_CAP - 1 });
}

#[test]
fn field_errors_are_told_apart_by_kind() {
    let kind = |expr: &str| match Schedule::parse(expr) {
        Err(ScheduleError::Field { reason, .. }) => *reason,
        other => panic!("{expr:?}: {other:?}"),
    };
    assert_eq!(kind("61 3 * * *"), FieldError::OutOfRange { value: "61".into(), min: 0, max: 59 });
    assert_eq!(kind("1,,2 * * * *"), FieldError::EmptyItem);
    assert_eq!(kind("*/0 * * * *"), FieldError::Step { step: "0".into() });
    assert_eq!(kind("0 3 * * FRI-MON"), FieldError::Backwards { range: "FRI-MON".into() });
    assert_eq!(kind("x 3 * * *"), FieldError::NotANumber { value: "x".into() });
    assert_eq!(kind("0 3 * JUNO *"), FieldError::NotANumberOrName { value: "JUNO".into(), field: "month" });
}
