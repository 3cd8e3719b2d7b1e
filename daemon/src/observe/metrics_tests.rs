//! Tests of [`super`] (the metrics): what a scrape shows after runs, changes and volumes that
//! go away, and (ignored) what encoding costs.

mod shows {
    use super::super::*;

    fn sample<'a>(failure: Option<&'static str>, finished: i64) -> RunSample<'a> {
        RunSample {
            volume: "db",
            target: "default",
            started: finished - 3,
            finished,
            seconds: 3.0,
            failure,
            bytes_read: 100,
            bytes_stored: 40,
            downtime_ms: Some(1500),
        }
    }

    #[test]
    fn a_success_then_a_failure_keeps_the_success_time_and_counts_the_failure() {
        let m = Metrics::new().expect("metrics");
        m.run_finished(&sample(None, 1_000));
        m.run_finished(&sample(Some("target"), 2_000));
        let text = m.encode().expect("encode");
        assert!(
            text.contains("voltool_backup_last_success_timestamp_seconds{target=\"default\",volume=\"db\"} 1000"),
            "{text}"
        );
        assert!(
            text.contains("voltool_backup_last_attempt_timestamp_seconds{target=\"default\",volume=\"db\"} 1997"),
            "{text}"
        );
        assert!(text.contains("voltool_backup_failures_total{reason=\"target\",volume=\"db\"} 1"), "{text}");
        assert!(text.contains("voltool_backup_bytes{kind=\"stored\",volume=\"db\"} 40"), "{text}");
        assert!(text.contains("voltool_backup_downtime_seconds{volume=\"db\"} 1.5"), "{text}");
        assert!(text.contains("voltool_backup_duration_seconds_count 2"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    /// The backup and volume families are encoded again after every change, never served stale.
    #[test]
    fn a_change_after_a_scrape_shows_at_the_next_one() {
        let m = Metrics::new().expect("metrics");
        m.run_finished(&sample(None, 1_000));
        assert!(m.encode().expect("encode").contains("target=\"default\",volume=\"db\"} 1000"));
        let before = m.live.generation.load(Ordering::Relaxed);
        m.run_finished(&sample(None, 5_000));
        let text = m.encode().expect("encode");
        assert!(
            text.contains("voltool_backup_last_success_timestamp_seconds{target=\"default\",volume=\"db\"} 5000"),
            "{text}"
        );
        let v = VolumeSample {
            name: "db".into(),
            kind: "local".into(),
            quota: "none".into(),
            size_limit: None,
            used: Some(1),
            mounts: 0,
            mounted: false,
            server_up: None,
        };
        m.set_volumes(std::slice::from_ref(&v));
        let after = m.live.generation.load(Ordering::Relaxed);
        assert!(after > before);
        let shape = m.shape.generation.load(Ordering::Relaxed);
        m.set_volumes(std::slice::from_ref(&v));
        assert_eq!(m.live.generation.load(Ordering::Relaxed), after, "the same volumes change nothing");
        m.set_volumes(&[VolumeSample { used: Some(7), ..v.clone() }]);
        assert_eq!(m.shape.generation.load(Ordering::Relaxed), shape, "usage alone leaves the shape as it was");
        assert!(m.encode().expect("encode").contains("voltool_volume_used_bytes{volume=\"db\"} 7"));
        m.set_volumes(&[VolumeSample { used: Some(2), ..v }]);
        assert!(m.encode().expect("encode").contains("voltool_volume_used_bytes{volume=\"db\"} 2"));
    }

    #[test]
    fn a_volume_that_goes_away_loses_its_series() {
        let m = Metrics::new().expect("metrics");
        let v = |name: &str, used| VolumeSample {
            name: name.into(),
            kind: "local".into(),
            quota: "image".into(),
            size_limit: Some(1 << 20),
            used,
            mounts: 2,
            mounted: true,
            server_up: None,
        };
        m.set_volumes(&[v("a", Some(10)), v("b", Some(20))]);
        let text = m.encode().expect("encode");
        assert!(text.contains("voltool_volume_used_bytes{volume=\"b\"} 20"), "{text}");
        assert!(text.contains("voltool_volume_info{quota=\"image\",type=\"local\",volume=\"a\"} 1"), "{text}");
        m.set_volumes(&[v("a", None)]);
        let text = m.encode().expect("encode");
        assert!(!text.contains("volume=\"b\""), "{text}");
        assert!(!text.contains("voltool_volume_used_bytes{volume=\"a\"}"), "unmeasured usage is absent: {text}");
        assert!(text.contains("voltool_volume_mounts{volume=\"a\"} 2"), "{text}");
    }
}

mod cost {
    use super::super::*;

    /// `cargo test --release -p voltool-daemon --lib encode_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn encode_cost() {
        let m = Metrics::new().expect("metrics");
        let vols: Vec<VolumeSample> = (0..500)
            .map(|i| VolumeSample {
                name: format!("vol{i:04}"),
                kind: "local".into(),
                quota: "none".into(),
                size_limit: None,
                used: None,
                mounts: 0,
                mounted: false,
                server_up: None,
            })
            .collect();
        m.set_volumes(&vols);
        for v in &vols {
            m.seed_last(&v.name, "default", Some(1), Some(2));
            m.run_finished(&RunSample {
                volume: &v.name,
                target: "default",
                started: 1,
                finished: 2,
                seconds: 0.1,
                failure: None,
                bytes_read: 1,
                bytes_stored: 1,
                downtime_ms: None,
            });
        }
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let _ = m.encode().expect("encode");
        }
        eprintln!(
            "encode, nothing changed: {:?} per scrape, {} bytes",
            t.elapsed() / 1000,
            m.encode().expect("encode").len()
        );
        let t = std::time::Instant::now();
        for i in 0..1000 {
            m.run_finished(&RunSample {
                volume: &vols[i % vols.len()].name,
                target: "default",
                started: 3,
                finished: 4,
                seconds: 0.1,
                failure: None,
                bytes_read: 1,
                bytes_stored: 1,
                downtime_ms: None,
            });
            let _ = m.encode().expect("encode");
        }
        eprintln!("encode after a run ended: {:?} per scrape", t.elapsed() / 1000);
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            m.live.changed();
            let _ = m.encode().expect("encode");
        }
        eprintln!("encode after a watcher pass measured new usage: {:?} per scrape", t.elapsed() / 1000);
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let _ = m.registry.gather();
        }
        eprintln!("gather alone: {:?}", t.elapsed() / 1000);
        let p = prometheus::process_collector::ProcessCollector::for_self();
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let _ = prometheus::core::Collector::collect(&p);
        }
        eprintln!("process collector alone: {:?}", t.elapsed() / 1000);
    }
}
