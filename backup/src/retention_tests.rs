use super::*;
use chrono::TimeZone;

fn t(s: &str) -> DateTime<Utc> {
    // "2026-11-30 14:05" or "2026-11-30 14:05:07"
    let s = if s.len() == 16 { format!("{s}:00") } else { s.to_owned() };
    Utc.from_utc_datetime(&chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S").expect("test time"))
}

fn cands(list: &[(&str, &str)]) -> Vec<Candidate> {
    list.iter()
        .map(|(id, at)| Candidate { id: (*id).to_owned(), created: t(at), verified: false, parent: None })
        .collect()
}

fn kept(decisions: &[Decision]) -> Vec<&str> {
    decisions.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
}

fn policy(s: &str) -> KeepPolicy {
    KeepPolicy::parse(s).expect("test policy")
}

const NOW: &str = "2027-01-01 00:00";

#[test]
fn parse_table() {
    let cases: &[(&str, KeepPolicy)] = &[
        ("", KeepPolicy::default()),
        ("  ", KeepPolicy::default()),
        ("last=3", KeepPolicy { last: Some(3), ..Default::default() }),
        (
            "last=3,hourly=24,daily=7,weekly=4,monthly=6",
            KeepPolicy { last: Some(3), hourly: Some(24), daily: Some(7), weekly: Some(4), monthly: Some(6) },
        ),
        ("monthly=6, daily = 7", KeepPolicy { daily: Some(7), monthly: Some(6), ..Default::default() }),
        ("weekly=0004", KeepPolicy { weekly: Some(4), ..Default::default() }),
    ];
    for (input, want) in cases {
        assert_eq!(KeepPolicy::parse(input).as_ref(), Ok(want), "{input:?}");
        assert_eq!(input.parse::<KeepPolicy>().as_ref(), Ok(want), "{input:?}");
    }
}

#[test]
fn parse_errors() {
    let cases: &[(&str, &str)] = &[
        ("daily=x", r#"backup-keep "daily=x": daily must be a positive integer, not "x""#),
        ("daily=0", r#"backup-keep "daily=0": daily must be a positive integer, not "0""#),
        ("daily=-1", r#"backup-keep "daily=-1": daily must be a positive integer, not "-1""#),
        ("daily=+1", r#"backup-keep "daily=+1": daily must be a positive integer, not "+1""#),
        ("daily=", r#"backup-keep "daily=": daily must be a positive integer, not """#),
        (
            "daily=99999999999",
            r#"backup-keep "daily=99999999999": daily must be a positive integer, not "99999999999""#,
        ),
        (
            "yearly=1",
            r#"backup-keep "yearly=1": unknown key "yearly" (valid keys: last, hourly, daily, weekly, monthly)"#,
        ),
        ("Daily=1", r#"backup-keep "Daily=1": unknown key "Daily" (valid keys: last, hourly, daily, weekly, monthly)"#),
        ("daily=1,daily=2", r#"backup-keep "daily=1,daily=2": daily is given more than once"#),
        ("daily", r#"backup-keep "daily": "daily" is not key=value (keys: last, hourly, daily, weekly, monthly)"#),
        (
            "daily=1,",
            r#"backup-keep "daily=1,": empty entry (expected key=value, keys: last, hourly, daily, weekly, monthly)"#,
        ),
    ];
    for (input, want) in cases {
        let err = KeepPolicy::parse(input).expect_err("should not parse");
        assert_eq!(err.to_string(), *want, "{input:?}");
    }
}

#[test]
fn display_round_trips() {
    for s in ["", "last=3", "daily=7,last=1", "monthly=6,weekly=4,daily=7,hourly=24,last=3"] {
        let p = policy(s);
        let shown = p.to_string();
        assert_eq!(policy(&shown), p, "{s:?} -> {shown:?}");
    }
    assert_eq!(policy("monthly=6,last=2,daily=7").to_string(), "last=2,daily=7,monthly=6");
    assert!(policy("").is_empty());
    assert!(!policy("monthly=1").is_empty());
}

/// Backups used by most rule tests: several per hour/day, gaps, a month change.
fn sample() -> Vec<Candidate> {
    cands(&[
        ("a", "2026-10-15 12:00"),
        ("b", "2026-11-02 09:00"),
        ("c", "2026-11-29 09:10"),
        ("d", "2026-11-29 09:40"),
        ("e", "2026-11-30 12:05"),
        ("f", "2026-11-30 17:10"),
        ("g", "2026-11-30 17:30"),
    ])
}

#[test]
fn rules_table() {
    let cases: &[(&str, &[&str])] = &[
        ("last=1", &["g"]),
        ("last=3", &["g", "f", "e"]),
        ("last=100", &["g", "f", "e", "d", "c", "b", "a"]),
        // Newest in each hour; 17:10 shares 17:00 with 17:30; 09:40 beats 09:10.
        ("hourly=1", &["g"]),
        ("hourly=3", &["g", "e", "d"]),
        ("hourly=100", &["g", "e", "d", "b", "a"]),
        // Days with backups only: 30th, 29th, 2nd (the gap in between is not counted).
        ("daily=2", &["g", "d"]),
        ("daily=3", &["g", "d", "b"]),
        // 2026-11-29 is a Sunday (W48), 11-30 a Monday (W49), 11-02 Monday (W45).
        ("weekly=1", &["g"]),
        ("weekly=2", &["g", "d"]),
        ("weekly=3", &["g", "d", "b"]),
        ("monthly=1", &["g"]),
        ("monthly=2", &["g", "a"]),
        // Mixed rules: the union.
        ("last=2,monthly=2", &["g", "f", "a"]),
        ("last=1,hourly=2,daily=3", &["g", "e", "d", "b"]),
        ("hourly=2,weekly=3,monthly=2", &["g", "e", "d", "b", "a"]),
    ];
    for (p, want) in cases {
        let d = plan(&policy(p), &sample(), t(NOW));
        assert_eq!(kept(&d), *want, "{p}");
        assert_eq!(d.len(), 7);
    }
}

#[test]
fn reasons_are_listed() {
    let d = plan(&policy("last=1,hourly=1,daily=2,weekly=1,monthly=2"), &sample(), t(NOW));
    let by_id = |id: &str| d.iter().find(|d| d.id == id).expect("decision");
    assert_eq!(
        by_id("g").reasons,
        ["last", "hourly 2026-11-30 17:00", "daily 2026-11-30", "weekly 2026-W49", "monthly 2026-11"]
    );
    assert_eq!(by_id("d").reasons, ["daily 2026-11-29"]);
    assert_eq!(by_id("a").reasons, ["monthly 2026-10"]);
    assert!(by_id("f").reasons.is_empty());
    assert!(!by_id("f").keep);
}

#[test]
fn iso_week_across_year_boundary() {
    // 2026-12-28 (Mon) .. 2027-01-03 (Sun) is 2026-W53; 2027-01-04 starts 2027-W01.
    // 2025-12-29 (Mon) .. 2026-01-04 is 2026-W01; 2025-12-28 (Sun) is 2025-W52.
    let b = cands(&[
        ("w52a", "2025-12-27 10:00"),
        ("w52b", "2025-12-28 10:00"),
        ("w01a", "2025-12-29 10:00"),
        ("w01b", "2026-01-02 10:00"),
        ("w53a", "2026-12-31 10:00"),
        ("w53b", "2027-01-03 10:00"),
        ("w01c", "2027-01-04 10:00"),
    ]);
    let now = t("2027-01-05 00:00");
    let d = plan(&policy("weekly=2"), &b, now);
    assert_eq!(kept(&d), ["w01c", "w53b"]);
    assert_eq!(d[1].reasons, ["weekly 2026-W53"]);
    let d = plan(&policy("weekly=5"), &b, now);
    assert_eq!(kept(&d), ["w01c", "w53b", "w01b", "w52b"]);
    assert_eq!(d[3].id, "w01b");
    assert_eq!(d[3].reasons, ["weekly 2026-W01"]);
    assert_eq!(d[5].id, "w52b");
    assert_eq!(d[5].reasons, ["weekly 2025-W52"]);
    // Daily and monthly buckets are calendar-based, not week-based.
    let d = plan(&policy("monthly=3"), &b, now);
    assert_eq!(kept(&d), ["w01c", "w53a", "w01b"]);
}

#[test]
fn input_order_does_not_matter() {
    let mut b = sample();
    let want = plan(&policy("last=2,daily=3"), &b, t(NOW));
    b.reverse();
    assert_eq!(plan(&policy("last=2,daily=3"), &b, t(NOW)), want);
    b.swap(0, 3);
    b.swap(1, 5);
    assert_eq!(plan(&policy("last=2,daily=3"), &b, t(NOW)), want);
    let order: Vec<&str> = want.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(order, ["g", "f", "e", "d", "c", "b", "a"]);
}

#[test]
fn ties_are_broken_by_id() {
    let b = cands(&[("x2", "2026-11-30 10:00"), ("x3", "2026-11-30 10:00"), ("x1", "2026-11-30 10:00")]);
    for p in ["last=1", "hourly=1", "daily=5"] {
        let d = plan(&policy(p), &b, t(NOW));
        let order: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(order, ["x3", "x2", "x1"], "{p}");
        assert_eq!(kept(&d), ["x3"], "{p}");
    }
    let mut rev = b.clone();
    rev.reverse();
    assert_eq!(plan(&policy("last=2"), &rev, t(NOW)), plan(&policy("last=2"), &b, t(NOW)));
}

#[test]
fn newest_verified_is_never_deleted() {
    let mut b = sample();
    for c in &mut b {
        c.verified = matches!(c.id.as_str(), "b" | "d");
    }
    let d = plan(&policy("last=1"), &b, t(NOW));
    assert_eq!(kept(&d), ["g", "d"]);
    assert_eq!(d.iter().find(|d| d.id == "d").expect("decision").reasons, ["newest verified"]);
    // Already kept by a rule: the reason is added, nothing else changes.
    let d = plan(&policy("daily=2"), &b, t(NOW));
    assert_eq!(kept(&d), ["g", "d"]);
    assert_eq!(d.iter().find(|d| d.id == "d").expect("decision").reasons, ["daily 2026-11-29", "newest verified"]);
    // No verified backup at all: only the rules count.
    let d = plan(&policy("last=1"), &sample(), t(NOW));
    assert_eq!(kept(&d), ["g"]);
}

#[test]
fn future_backups_are_kept_and_not_counted() {
    let mut b = sample();
    b.extend(cands(&[("future1", "2027-01-01 00:00:01"), ("future2", "2027-03-01 00:00")]));
    let d = plan(&policy("last=2,monthly=1"), &b, t(NOW));
    assert_eq!(kept(&d), ["future2", "future1", "g", "f"]);
    assert_eq!(d[0].reasons, ["newer than now"]);
    assert_eq!(d[2].reasons, ["last", "monthly 2026-11"]);
    // A backup exactly at `now` is not in the future.
    let b = cands(&[("now", NOW), ("old", "2026-12-31 00:00")]);
    assert_eq!(kept(&plan(&policy("last=1"), &b, t(NOW))), ["now"]);
}

#[test]
fn empty_policy_deletes_nothing() {
    let d = plan(&KeepPolicy::default(), &sample(), t(NOW));
    assert_eq!(kept(&d).len(), 7);
    assert!(d.iter().all(|d| d.reasons == ["no keep policy"]));
}

#[test]
fn no_backups() {
    assert!(plan(&policy("last=1"), &[], t(NOW)).is_empty());
}

/// Chains: (id, time, parent). A policy that keeps an incremental keeps every link it needs.
#[test]
fn kept_incrementals_keep_their_chain() {
    let now = t("2026-12-07 12:00");
    let chain = |list: &[(&str, &str, Option<&str>)]| -> Vec<Candidate> {
        list.iter()
            .map(|(id, at, p)| Candidate {
                id: (*id).into(),
                created: t(at),
                verified: false,
                parent: p.map(Into::into),
            })
            .collect()
    };
    let kept = |policy: &str, c: &[Candidate]| -> Vec<String> {
        let mut k: Vec<String> =
            plan(&KeepPolicy::parse(policy).unwrap(), c, now).into_iter().filter(|d| d.keep).map(|d| d.id).collect();
        k.sort();
        k
    };
    let c = chain(&[
        ("f1", "2026-11-01 00:00", None),
        ("i1", "2026-11-02 00:00", Some("f1")),
        ("i2", "2026-11-03 00:00", Some("i1")),
        ("f2", "2026-12-01 00:00", None),
        ("j1", "2026-12-06 00:00", Some("f2")),
        ("j2", "2026-12-07 00:00", Some("j1")),
    ]);
    // last=1 keeps j2, which needs j1 and f2; nothing of the old chain.
    assert_eq!(kept("last=1", &c), ["f2", "j1", "j2"]);
    // daily=2 keeps j2 and j1 (two days) and their full, older than the window.
    assert_eq!(kept("daily=2", &c), ["f2", "j1", "j2"]);
    // monthly=2 keeps the newest of November (i2): its whole chain stays.
    assert_eq!(kept("monthly=2", &c), ["f1", "f2", "i1", "i2", "j1", "j2"]);
    let reasons = plan(&KeepPolicy::parse("last=1").unwrap(), &c, now);
    let f2 = reasons.iter().find(|d| d.id == "f2").unwrap();
    assert_eq!(f2.reasons, ["needed by j1"]);
    // A parent not among the candidates (another target) is simply not there to keep.
    let lone = chain(&[("k2", "2026-12-07 00:00", Some("elsewhere"))]);
    assert_eq!(kept("last=1", &lone), ["k2"]);
}
