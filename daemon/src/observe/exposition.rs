//! Cached text expositions of groups of families, and the merging of a family that is split
//! over several groups (the backup families, one group per shard of the volumes).
//!
//! A group is encoded again (by `prometheus`' `TextEncoder`) only after one of its families
//! changed. Each family is kept as its header (`# HELP`, `# TYPE`) and its samples, so a
//! family whose series are spread over shards is written once: one header, then the samples
//! of every shard. A run that ends changes one shard, and the next scrape encodes that
//! shard's series only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use prometheus::{Encoder, Registry, TextEncoder};

use super::metrics::MetricsError;

/// One family as the encoder wrote it.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    name: String,
    /// `# HELP` and `# TYPE`.
    header: String,
    samples: String,
}

/// A registry whose exposition is kept until one of its families changes.
pub(super) struct Cached {
    pub(super) registry: Registry,
    /// Bumped by every change to the registry's families.
    pub(super) generation: AtomicU64,
    /// The families as last encoded, and the generation they were encoded at.
    text: Mutex<(u64, Vec<Encoded>)>,
}

impl Cached {
    pub(super) fn new() -> Self {
        Self { registry: Registry::new(), generation: AtomicU64::new(1), text: Mutex::new((0, Vec::new())) }
    }

    pub(super) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The families, encoded again first if one changed since the last time.
    fn fresh(&self) -> Result<MutexGuard<'_, (u64, Vec<Encoded>)>, MetricsError> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut cached = self.text.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != generation {
            let mut families = Vec::new();
            for mf in self.registry.gather() {
                let mut text = Vec::new();
                TextEncoder::new().encode(std::slice::from_ref(&mf), &mut text)?;
                let mut header = utf8(text)?;
                let samples = header.split_off(header_len(&header));
                families.push(Encoded { name: mf.name().to_owned(), header, samples });
            }
            // A change during the encoding bumped the generation: the next scrape encodes again.
            *cached = (generation, families);
        }
        Ok(cached)
    }

    /// Appends the group's exposition.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), MetricsError> {
        for f in &self.fresh()?.1 {
            out.extend_from_slice(f.header.as_bytes());
            out.extend_from_slice(f.samples.as_bytes());
        }
        Ok(())
    }
}

/// Appends the exposition of groups that hold the same families for different series: each
/// family once, its header from the first group that has it, then every group's samples.
pub(super) fn encode_merged<'a>(
    groups: impl IntoIterator<Item = &'a Cached>,
    out: &mut Vec<u8>,
) -> Result<(), MetricsError> {
    let fresh = groups.into_iter().map(Cached::fresh).collect::<Result<Vec<_>, _>>()?;
    let mut by_name: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
    for g in &fresh {
        for f in &g.1 {
            by_name.entry(&f.name).or_insert_with(|| (&f.header, Vec::new())).1.push(&f.samples);
        }
    }
    for (header, samples) in by_name.values() {
        out.extend_from_slice(header.as_bytes());
        for s in samples {
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(())
}

/// The length of the comment lines (`# HELP`, `# TYPE`) at the start of a family's text.
fn header_len(text: &str) -> usize {
    let mut at = 0;
    while text[at..].starts_with('#') {
        match text[at..].find('\n') {
            Some(nl) => at += nl + 1,
            None => return text.len(),
        }
    }
    at
}

/// The encoder writes UTF-8 (names are ASCII, label values Rust strings): checked, not copied.
pub(super) fn utf8(bytes: Vec<u8>) -> Result<String, MetricsError> {
    String::from_utf8(bytes).map_err(|e| MetricsError::from(prometheus::Error::Msg(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_split_over_groups_is_written_once_with_every_series() {
        let groups = [Cached::new(), Cached::new()];
        let mut gauges = Vec::new();
        for g in &groups {
            let v = prometheus::IntGaugeVec::new(prometheus::Opts::new("t_g", "help with\nnewline"), &["v"])
                .expect("gauge");
            g.registry.register(Box::new(v.clone())).expect("register");
            gauges.push(v);
        }
        gauges[0].with_label_values(&["a"]).set(1);
        gauges[1].with_label_values(&["b"]).set(2);
        let mut out = Vec::new();
        encode_merged(&groups, &mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text, "# HELP t_g help with\\nnewline\n# TYPE t_g gauge\nt_g{v=\"a\"} 1\nt_g{v=\"b\"} 2\n");
        // A change in one group shows; an empty group adds nothing.
        gauges[1].with_label_values(&["b"]).set(3);
        groups[1].changed();
        gauges[0].reset();
        groups[0].changed();
        let mut out = Vec::new();
        encode_merged(&groups, &mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.matches("# TYPE").count(), 1, "{text}");
        assert!(text.ends_with("t_g{v=\"b\"} 3\n") && !text.contains("v=\"a\""), "{text}");
    }

    #[test]
    fn the_header_is_the_leading_comment_lines() {
        assert_eq!(header_len("# HELP a b\n# TYPE a gauge\na 1\n"), 26);
        assert_eq!(header_len("a 1\n"), 0);
        assert_eq!(header_len("# TYPE a gauge"), 14);
    }
}
