//! [`super::Target::list`] on S3: ListObjectsV2 under the prefix with the delimiter `/` (so
//! deeper prefixes, another target's objects, come back as common prefixes and are left
//! out), [`PAGE`] keys a request, following continuation tokens. The bucket's answer is
//! untrusted like any object on it: [`Pager`] (pure, tested without a server) counts every
//! key and common prefix against the caller's limit, drops keys outside the prefix or that are
//! not plain object names, and stops a listing that does not advance (a truncated page
//! without a new token, or page after page of nothing).

use super::retry::with_retries;
use super::{Shared, TargetError, block};
use crate::target::{Listed, is_object_name};

/// Keys asked for per ListObjectsV2 request (S3's maximum).
pub(super) const PAGE: i32 = 1000;
/// Truncated pages in a row without a single entry before a listing is given up.
const EMPTY_PAGES: u32 = 10;

/// One page of a listing, as the server answered it.
#[derive(Debug, Default)]
pub(super) struct Page {
    /// (key, size) of each object.
    pub keys: Vec<(String, i64)>,
    pub common_prefixes: usize,
    pub truncated: bool,
    pub next_token: Option<String>,
}

/// Why a listing stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// More entries than the limit.
    TooMany,
    /// The server's pages do not advance.
    Stuck,
}

/// The state of a listing across its pages.
#[derive(Debug)]
pub(super) struct Pager {
    /// The key prefix objects are under: `prefix/`, or empty for a whole bucket.
    prefix: String,
    limit: usize,
    seen: usize,
    empty_in_a_row: u32,
    token: Option<String>,
    out: Vec<Listed>,
}

impl Pager {
    pub(super) fn new(prefix: String, limit: usize) -> Self {
        Self { prefix, limit, seen: 0, empty_in_a_row: 0, token: None, out: Vec::new() }
    }

    /// The continuation token the next request sends.
    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Takes one page; `Ok(true)` when another page is to be asked for.
    pub(super) fn take(&mut self, page: Page) -> Result<bool, Stop> {
        let entries = page.keys.len() + page.common_prefixes;
        self.seen = self.seen.saturating_add(entries);
        if self.seen > self.limit {
            return Err(Stop::TooMany);
        }
        for (key, size) in page.keys {
            let Some(name) = key.strip_prefix(&self.prefix) else { continue };
            if is_object_name(name) {
                self.out.push(Listed { name: name.to_owned(), size: u64::try_from(size).unwrap_or(0) });
            }
        }
        if !page.truncated {
            return Ok(false);
        }
        self.empty_in_a_row = if entries == 0 { self.empty_in_a_row + 1 } else { 0 };
        match page.next_token {
            Some(t) if self.empty_in_a_row < EMPTY_PAGES && self.token.as_deref() != Some(t.as_str()) => {
                self.token = Some(t);
                Ok(true)
            }
            _ => Err(Stop::Stuck),
        }
    }

    /// The objects found, sorted by name.
    pub(super) fn finish(mut self) -> Vec<Listed> {
        self.out.sort_by(|a, b| a.name.cmp(&b.name));
        self.out.dedup_by(|a, b| a.name == b.name);
        self.out
    }
}

impl Shared {
    /// The objects under the prefix, `page` keys a request.
    pub(super) fn list(&self, limit: usize, page: i32) -> Result<Vec<Listed>, TargetError> {
        let prefix = if self.spec.prefix.is_empty() { String::new() } else { format!("{}/", self.spec.prefix) };
        let mut pager = Pager::new(prefix.clone(), limit);
        loop {
            let token = pager.token().map(str::to_owned);
            let sent = block(
                &self.rt,
                with_retries(|| {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.spec.bucket)
                        .prefix(&prefix)
                        .delimiter("/")
                        .max_keys(page)
                        .set_continuation_token(token.clone())
                        .send()
                }),
            );
            let out = sent.map_err(|f| self.error("listing", &prefix, &f))?;
            let page = Page {
                keys: out
                    .contents()
                    .iter()
                    .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0))))
                    .collect(),
                common_prefixes: out.common_prefixes().len(),
                truncated: out.is_truncated() == Some(true),
                next_token: out.next_continuation_token().map(str::to_owned),
            };
            match pager.take(page) {
                Ok(true) => {}
                Ok(false) => return Ok(pager.finish()),
                Err(Stop::TooMany) => return Err(TargetError::TooManyObjects { target: self.describe.clone(), limit }),
                Err(Stop::Stuck) => {
                    return Err(self.s3_error(
                        "listing",
                        &prefix,
                        "the server's listing does not advance (a truncated page without a new continuation token)"
                            .into(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[(&str, i64)], prefixes: usize, next: Option<&str>) -> Page {
        Page {
            keys: keys.iter().map(|(k, s)| ((*k).to_owned(), *s)).collect(),
            common_prefixes: prefixes,
            truncated: next.is_some(),
            next_token: next.map(str::to_owned),
        }
    }

    fn names(p: Pager) -> Vec<String> {
        p.finish().into_iter().map(|l| l.name).collect()
    }

    #[test]
    fn pages_are_followed_and_only_plain_names_under_the_prefix_kept() {
        let mut p = Pager::new("pfx/".into(), 100);
        assert_eq!(
            p.take(page(&[("pfx/b.tar.zst", 7), ("pfx/.b.partial", 1), ("other/x", 1)], 1, Some("t1"))),
            Ok(true)
        );
        assert_eq!(p.token(), Some("t1"));
        assert_eq!(p.take(page(&[("pfx/a.manifest.json", -3), ("pfx/", 0), ("pfx/c\u{7}", 1)], 0, None)), Ok(false));
        let got = p.finish();
        assert_eq!(
            got,
            [Listed { name: "a.manifest.json".into(), size: 0 }, Listed { name: "b.tar.zst".into(), size: 7 }]
        );
        let mut whole_bucket = Pager::new(String::new(), 10);
        assert_eq!(whole_bucket.take(page(&[("x.tar.zst", 1)], 0, None)), Ok(false));
        assert_eq!(names(whole_bucket), ["x.tar.zst"]);
    }

    #[test]
    fn every_key_and_common_prefix_counts_against_the_limit() {
        let mut p = Pager::new("p/".into(), 3);
        assert_eq!(p.take(page(&[("p/a", 1), ("p/.hidden", 1)], 1, Some("t"))), Ok(true));
        assert_eq!(p.take(page(&[("p/b", 1)], 0, Some("u"))), Err(Stop::TooMany));
        let mut exact = Pager::new("p/".into(), 2);
        assert_eq!(exact.take(page(&[("p/a", 1), ("p/b", 1)], 0, None)), Ok(false));
    }

    #[test]
    fn a_listing_that_does_not_advance_is_stopped() {
        let mut same = Pager::new("p/".into(), 100);
        assert_eq!(same.take(page(&[("p/a", 1)], 0, Some("t"))), Ok(true));
        assert_eq!(same.take(page(&[("p/b", 1)], 0, Some("t"))), Err(Stop::Stuck), "the same token again");
        let mut none = Pager::new("p/".into(), 100);
        let truncated_without_token = Page { truncated: true, ..page(&[("p/a", 1)], 0, None) };
        assert_eq!(none.take(truncated_without_token), Err(Stop::Stuck));
        let mut empty = Pager::new("p/".into(), 100);
        for i in 0..EMPTY_PAGES - 1 {
            assert_eq!(empty.take(page(&[], 0, Some(&format!("t{i}")))), Ok(true));
        }
        assert_eq!(empty.take(page(&[], 0, Some("last"))), Err(Stop::Stuck), "page after page of nothing");
    }
}
