//! The daemon's Prometheus metrics: one registry, the families issue 16 and SPEC section 9
//! name, and the text exposition (`prometheus`'s `TextEncoder`, format 0.0.4, which every
//! Prometheus and `promtool check metrics` read).
//!
//! Everything a scrape shows is kept up to date as things happen (a run ends, a request is
//! answered, the volume watcher's pass): a scrape only encodes, never measures, so it costs
//! the same whatever the state of the volumes and can never hang on a network server.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::exposition::{Cached, encode_merged, utf8};

/// What registering or encoding the metrics failed with (a bug: names are constants).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// How a finished backup run is counted.
#[derive(Debug, Clone)]
pub struct RunSample<'a> {
    pub volume: &'a str,
    /// The target's name in the catalog (`default`, a `[targets.NAME]`, or the URL given).
    pub target: &'a str,
    /// Unix seconds the run started and ended.
    pub started: i64,
    pub finished: i64,
    pub seconds: f64,
    /// `None`: complete; `Some(reason)`: failed, `reason` a short category
    /// (`mount`, `target`, `read`, `consistency`, ...), never a message.
    pub failure: Option<&'static str>,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub downtime_ms: Option<u64>,
}

/// A volume as the watcher last measured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSample {
    pub name: String,
    pub kind: String,
    /// `none`, `image`, `project`, `tmpfs` ...: how the size limit is enforced.
    pub quota: String,
    pub size_limit: Option<u64>,
    pub used: Option<u64>,
    pub mounts: usize,
    pub mounted: bool,
    /// Network volumes: whether the server answered the bounded check.
    pub server_up: Option<bool>,
}

/// How many groups the volumes' backup series are spread over: a run that ends makes the next
/// scrape encode one of them again (a 16th of a host's backup series), not all.
const BACKUP_SHARDS: usize = 16;

/// The backup families of the volumes of one shard.
struct BackupShard {
    cache: Cached,
    last_success: IntGaugeVec,
    last_attempt: IntGaugeVec,
    bytes: IntGaugeVec,
    failures: IntCounterVec,
    verify_failures: IntCounterVec,
    restore_test_failures: IntCounterVec,
    downtime: GaugeVec,
}

impl BackupShard {
    fn new() -> Result<Self, MetricsError> {
        let cache = Cached::new();
        let r = &cache.registry;
        let (vt, v) = (&["volume", "target"], &["volume"]);
        let downtime = GaugeVec::new(
            Opts::new(
                "voltool_backup_downtime_seconds",
                "How long the volume's containers were stopped or paused for its last backup.",
            ),
            v,
        )?;
        r.register(Box::new(downtime.clone()))?;
        Ok(Self {
            last_success: gauge(
                r,
                "voltool_backup_last_success_timestamp_seconds",
                "When the last complete backup of the volume to the target finished (unix time).",
                vt,
            )?,
            last_attempt: gauge(
                r,
                "voltool_backup_last_attempt_timestamp_seconds",
                "When the last backup run of the volume to the target started, complete or not (unix time).",
                vt,
            )?,
            bytes: gauge(
                r,
                "voltool_backup_bytes",
                "Bytes of the volume's last complete backup: read from the volume, stored on the target.",
                &["volume", "kind"],
            )?,
            failures: counter(
                r,
                "voltool_backup_failures_total",
                "Backup runs that failed, by the kind of failure.",
                &["volume", "reason"],
            )?,
            verify_failures: counter(
                r,
                "voltool_backup_verify_failures_total",
                "Verifications of a backup that failed.",
                v,
            )?,
            restore_test_failures: counter(
                r,
                "voltool_restore_test_failures_total",
                "Restore tests that failed or could not run.",
                v,
            )?,
            downtime,
            cache,
        })
    }
}

/// The registry and its families; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    duration: Histogram,
    size_limit: IntGaugeVec,
    used: IntGaugeVec,
    mounts: IntGaugeVec,
    info: IntGaugeVec,
    server_up: IntGaugeVec,
    plugin_duration: HistogramVec,
    plugin_errors: IntCounterVec,
    notify_sent: IntCounterVec,
    /// The backup families, each volume's series in the shard of its name.
    backups: Vec<BackupShard>,
    /// The host's duration histogram.
    runs: Cached,
    /// The volume families that change when volumes come, go or are resized.
    shape: Cached,
    /// The volume families the watcher's passes change (usage, mounts, servers).
    live: Cached,
    /// The size of the last exposition, to size the next one's buffer.
    last_size: std::sync::atomic::AtomicUsize,
    /// The volumes last set: unchanged ones change nothing, gone ones lose their series.
    volumes: std::sync::Mutex<Vec<VolumeSample>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

/// The host's histogram of backup run durations.
fn duration_family(r: &Registry) -> Result<Histogram, MetricsError> {
    let duration = Histogram::with_opts(
        HistogramOpts::new(
            "voltool_backup_duration_seconds",
            "How long backup runs took, failed ones included, all volumes.",
        )
        .buckets(prometheus::exponential_buckets(0.25, 4.0, 9)?),
    )?;
    r.register(Box::new(duration.clone()))?;
    Ok(duration)
}

/// The families encoded at every scrape besides the process's: plugin requests (timing,
/// errors) and notifications.
fn fast_families(r: &Registry) -> Result<(HistogramVec, IntCounterVec, IntCounterVec), MetricsError> {
    Ok((
        histogram(
            r,
            "voltool_plugin_request_duration_seconds",
            "Time to answer Docker's volume plugin requests, by method.",
            &["method"],
            prometheus::exponential_buckets(0.000_25, 2.0, 16)?,
        )?,
        counter(
            r,
            "voltool_plugin_request_errors_total",
            "Docker volume plugin requests answered with an error, by method.",
            &["method"],
        )?,
        counter(
            r,
            "voltool_notifications_total",
            "Notifications by notifier and outcome (delivered, failed, dropped).",
            &["notifier", "outcome"],
        )?,
    ))
}

impl Metrics {
    /// A registry with every family, and the process metrics (CPU, memory, fds, start time).
    ///
    /// # Errors
    /// [`MetricsError`] (a name registered twice: a bug).
    pub fn new() -> Result<Self, MetricsError> {
        // `r`: what changes all the time (process, plugin requests, notifications), encoded at
        // every scrape. The rest is encoded again only after a change, in groups: the backups
        // of the volumes (in shards: a run ends, a check fails), the run durations, the
        // volumes' shape (created, removed, resized), and what the watcher measures (usage,
        // mounts, servers).
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let (runs, shape, live) = (Cached::new(), Cached::new(), Cached::new());
        let v = &["volume"];
        let (plugin_duration, plugin_errors, notify_sent) = fast_families(&r)?;
        Ok(Self {
            // One histogram for the host, not one per volume: 18 series per volume would be most
            // of a scrape of a host with hundreds of volumes (the catalog has each run's time).
            duration: duration_family(&runs.registry)?,
            backups: (0..BACKUP_SHARDS).map(|_| BackupShard::new()).collect::<Result<_, _>>()?,
            size_limit: gauge(
                &shape.registry,
                "voltool_volume_size_limit_bytes",
                "The volume's size limit (size=).",
                v,
            )?,
            used: gauge(&live.registry, "voltool_volume_used_bytes", "Bytes the volume uses, as last measured.", v)?,
            mounts: gauge(
                &live.registry,
                "voltool_volume_mounts",
                "Containers (Mount IDs) holding the volume mounted.",
                v,
            )?,
            info: gauge(
                &shape.registry,
                "voltool_volume_info",
                "One per volume: its type and how its size limit is enforced.",
                &["volume", "type", "quota"],
            )?,
            server_up: gauge(
                &live.registry,
                "voltool_network_server_up",
                "Network volumes: 1 when the server answered the last bounded check, 0 when not.",
                v,
            )?,
            plugin_duration,
            plugin_errors,
            notify_sent,
            registry: r,
            runs,
            shape,
            live,
            last_size: std::sync::atomic::AtomicUsize::new(16 << 10),
            volumes: std::sync::Mutex::default(),
        })
    }

    /// The text exposition of every family.
    ///
    /// # Errors
    /// [`MetricsError`] when encoding fails (a bug).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = Vec::with_capacity(self.last_size.load(Ordering::Relaxed) + (4 << 10));
        encode_merged(self.backups.iter().map(|b| &b.cache), &mut out)?;
        for cached in [&self.runs, &self.shape, &self.live] {
            cached.encode_into(&mut out)?;
        }
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        self.last_size.store(out.len(), Ordering::Relaxed);
        utf8(out)
    }

    /// Changes the backup families of `volume`'s shard with `f`, then marks the shard changed
    /// (after the change: a scrape in between encodes again at the next one, never keeps a
    /// value from before it).
    fn update(&self, volume: &str, f: impl FnOnce(&BackupShard)) {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same shard for a name in every process.
        let mut h = std::hash::DefaultHasher::new();
        volume.hash(&mut h);
        let shard = &self.backups[usize::try_from(h.finish() % BACKUP_SHARDS as u64).unwrap_or(0)];
        f(shard);
        shard.cache.changed();
    }

    /// The content type of [`Self::encode`]'s output.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }

    /// Counts a finished backup run.
    pub fn run_finished(&self, s: &RunSample<'_>) {
        self.duration.observe(s.seconds);
        self.runs.changed();
        self.update(s.volume, |b| {
            let vt = &[s.volume, s.target];
            let attempt = b.last_attempt.with_label_values(vt);
            attempt.set(attempt.get().max(s.started));
            match s.failure {
                None => {
                    let ok = b.last_success.with_label_values(vt);
                    ok.set(ok.get().max(s.finished));
                    b.bytes.with_label_values(&[s.volume, "read"]).set(clamp(s.bytes_read));
                    b.bytes.with_label_values(&[s.volume, "stored"]).set(clamp(s.bytes_stored));
                    if let Some(ms) = s.downtime_ms {
                        b.downtime.with_label_values(&[s.volume]).set(ms as f64 / 1000.0);
                    }
                }
                Some(reason) => b.failures.with_label_values(&[s.volume, reason]).inc(),
            }
        });
    }

    /// The bytes of a volume's newest complete backup, from the catalog at start.
    pub fn seed_bytes(&self, volume: &str, read: u64, stored: u64) {
        self.update(volume, |b| {
            b.bytes.with_label_values(&[volume, "read"]).set(clamp(read));
            b.bytes.with_label_values(&[volume, "stored"]).set(clamp(stored));
        });
    }

    /// What the catalog says of past runs, at start: the last success and attempt per
    /// (volume, target); the counters start at 0 (Prometheus' counters restart with the process).
    pub fn seed_last(&self, volume: &str, target: &str, started: Option<i64>, succeeded: Option<i64>) {
        self.update(volume, |b| {
            for (g, t) in [(&b.last_attempt, started), (&b.last_success, succeeded)] {
                if let Some(t) = t {
                    let g = g.with_label_values(&[volume, target]);
                    g.set(g.get().max(t));
                }
            }
        });
    }

    pub fn verify_failed(&self, volume: &str) {
        self.update(volume, |b| b.verify_failures.with_label_values(&[volume]).inc());
    }

    pub fn restore_test_failed(&self, volume: &str) {
        self.update(volume, |b| b.restore_test_failures.with_label_values(&[volume]).inc());
    }

    /// One answered plugin request (`method`: `Mount`, `Unmount`, ...).
    pub fn plugin_request(&self, method: &str, seconds: f64, error: bool) {
        self.plugin_duration.with_label_values(&[method]).observe(seconds);
        if error {
            self.plugin_errors.with_label_values(&[method]).inc();
        }
    }

    /// `n` more notifications of `notifier` with this fate (`delivered`, `failed`, `dropped`).
    pub fn notifications(&self, notifier: &str, outcome: &str, n: u64) {
        self.notify_sent.with_label_values(&[notifier, outcome]).inc_by(n);
    }

    /// Replaces the volume families with `volumes` (the watcher's last pass): volumes that
    /// are gone lose their series.
    pub fn set_volumes(&self, volumes: &[VolumeSample]) {
        let mut known = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        if *known == volumes {
            return;
        }
        let shape_of = |v: &VolumeSample| (v.name.clone(), v.kind.clone(), v.quota.clone(), v.size_limit);
        let shape_changed =
            known.len() != volumes.len() || known.iter().zip(volumes).any(|(a, b)| shape_of(a) != shape_of(b));
        let now: HashMap<&str, (&str, &str)> =
            volumes.iter().map(|v| (v.name.as_str(), (v.kind.as_str(), v.quota.as_str()))).collect();
        for v in known.iter() {
            if now.get(v.name.as_str()) != Some(&(v.kind.as_str(), v.quota.as_str())) {
                let _ = self.info.remove_label_values(&[&v.name, &v.kind, &v.quota]);
            }
            if !now.contains_key(v.name.as_str()) {
                for g in [&self.size_limit, &self.used, &self.mounts, &self.server_up] {
                    let _ = g.remove_label_values(&[&v.name]);
                }
            }
        }
        for v in volumes {
            let n = &[v.name.as_str()];
            self.info.with_label_values(&[&v.name, &v.kind, &v.quota]).set(1);
            self.mounts.with_label_values(n).set(i64::try_from(v.mounts).unwrap_or(i64::MAX));
            set_or_remove(&self.size_limit, n, v.size_limit.map(clamp));
            set_or_remove(&self.used, n, v.used.map(clamp));
            set_or_remove(&self.server_up, n, v.server_up.map(i64::from));
        }
        *known = volumes.to_vec();
        if shape_changed {
            self.shape.changed();
        }
        // The names may be the same with other values: the live families are set again anyway.
        self.live.changed();
    }
}

fn set_or_remove(g: &IntGaugeVec, labels: &[&str], v: Option<i64>) {
    match v {
        Some(v) => g.with_label_values(labels).set(v),
        None => {
            let _ = g.remove_label_values(labels);
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
