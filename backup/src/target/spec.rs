//! Target URLs and the config file's `[targets.NAME]` tables.

use std::path::PathBuf;

use serde::Deserialize;

use super::TargetError;

/// Default limit on the number of parts of one multipart upload (AWS S3's limit).
pub const DEFAULT_MAX_PARTS: u32 = 10_000;

/// A named target in the config file:
///
/// ```toml
/// [targets.offsite]
/// url = "s3://bkt/voltool"
/// endpoint = "http://127.0.0.1:9000"   # optional
/// region = "us-east-1"                 # optional
/// path_style = true                    # optional
/// max_parts = 1000                     # optional, the provider's part-count limit
/// checksums = "when-required"          # optional, for stores that reject the SDK's checksums
/// encrypt-to = ["age1..."]             # optional, encrypt every backup here (age)
/// ```
///
/// Table values win over the same keys in the URL's query string.
///
/// `checksums` ([`Checksums`]): `when-supported` (the AWS SDK's default) sends a CRC32 checksum
/// with every upload and has reads ask for the stored checksum and check it; `when-required`
/// sends and checks checksums only where S3 requires them, for stores that reject the
/// checksum headers (older MinIO, older Ceph RGW). Unset, the AWS chain decides
/// (`AWS_REQUEST_CHECKSUM_CALCULATION` / `AWS_RESPONSE_CHECKSUM_VALIDATION`, the profile's
/// settings), which is `when-supported` unless set there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetConfig {
    pub url: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default, alias = "path_style")]
    pub path_style: Option<bool>,
    #[serde(default, alias = "max_parts")]
    pub max_parts: Option<u32>,
    /// `when-required` or `when-supported`, checked by [`TargetSpec::from_config`].
    #[serde(default)]
    pub checksums: Option<String>,
    /// Public keys (`age1...`, `ssh-ed25519 ...`) every backup to this target is encrypted
    /// to, unless the volume names its own (`backup-encrypt`). Checked by the daemon.
    #[serde(default, alias = "encrypt_to")]
    pub encrypt_to: Vec<String>,
}

/// When the S3 client sends request checksums and checks response checksums (`checksums=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksums {
    /// Whenever the operation supports them: a CRC32 checksum on every upload, and reads ask
    /// for the stored checksum and check it (the AWS SDK's default).
    WhenSupported,
    /// Only where S3 requires them (none of the requests voltool makes): for stores that
    /// reject the checksum headers. Uploads are still protected by the SHA-256 of the body in
    /// the request signature, and every backup by its own SHA-256 on verify.
    WhenRequired,
}

impl Checksums {
    /// The value as written in a URL or table.
    pub fn as_str(self) -> &'static str {
        match self {
            Checksums::WhenSupported => "when-supported",
            Checksums::WhenRequired => "when-required",
        }
    }

    /// Parses `when-required` / `when-supported` (any case, `_` for `-` as in the AWS
    /// environment's `WHEN_REQUIRED`).
    fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "when-supported" => Some(Checksums::WhenSupported),
            "when-required" => Some(Checksums::WhenRequired),
            _ => None,
        }
    }
}

/// Where one backup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A directory on this host.
    File(PathBuf),
    S3(S3Spec),
}

/// An S3 (or S3-compatible) bucket and key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// The provider's limit on parts per multipart upload.
    pub max_parts: u32,
    /// `checksums=`; `None`: as the AWS chain says (by default when-supported).
    pub checksums: Option<Checksums>,
}

impl S3Spec {
    /// The object key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", self.prefix) }
    }
}

impl TargetSpec {
    /// Parses a target URL: `file:///abs/path`, a plain absolute path, or
    /// `s3://bucket[/prefix][?endpoint=URL&region=R&path_style=true&max_parts=N&checksums=when-required]`.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        Self::from_config(&TargetConfig { url: url.to_owned(), ..TargetConfig::default() })
    }

    /// Resolves a config-file target (its table keys override the URL's query).
    ///
    /// # Errors
    /// [`TargetError::Config`] saying what is wrong with the URL or a table value.
    pub fn from_config(cfg: &TargetConfig) -> Result<Self, TargetError> {
        let url = cfg.url.trim();
        if url.starts_with('/') {
            return file_spec(url, url);
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            config_error(
                url,
                format!("not a target URL ({e}); use file:///path, an absolute path or s3://bucket/prefix"),
            )
        })?;
        match parsed.scheme() {
            "file" => {
                if parsed.query().is_some() || parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(config_error(url, "a file:// target takes only a path: file:///srv/backups"));
                }
                let path = parsed.to_file_path().map_err(|()| config_error(url, "not an absolute local path"))?;
                file_spec(url, &path.to_string_lossy())
            }
            "s3" => s3_spec(url, &parsed, cfg).map(TargetSpec::S3),
            other => {
                Err(config_error(url, format!("unsupported scheme {other:?}; use file:///path or s3://bucket/prefix")))
            }
        }
    }

    /// The URL users see (no credentials are ever part of a spec).
    pub fn describe(&self) -> String {
        match self {
            TargetSpec::File(p) => format!("file://{}", p.display()),
            TargetSpec::S3(s) => {
                if s.prefix.is_empty() {
                    format!("s3://{}", s.bucket)
                } else {
                    format!("s3://{}/{}", s.bucket, s.prefix)
                }
            }
        }
    }
}

/// [`TargetError::Config`] for the target `url` (shown without credentials).
fn config_error(url: &str, reason: impl Into<String>) -> TargetError {
    TargetError::Config { target: redact(url), reason: reason.into() }
}

/// A directory target: an absolute path without `..`.
fn file_spec(url: &str, path: &str) -> Result<TargetSpec, TargetError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(config_error(url, "the path must be absolute"));
    }
    if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(config_error(url, "the path must not contain '..'"));
    }
    Ok(TargetSpec::File(p))
}

/// An `s3://` target: the bucket and prefix of the URL, its query's settings, then the config
/// table's (which win).
fn s3_spec(url: &str, parsed: &url::Url, cfg: &TargetConfig) -> Result<S3Spec, TargetError> {
    let bad = |reason: &str| config_error(url, reason);
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials do not belong in a target URL; give them to the daemon through the AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)",
        ));
    }
    let bucket = parsed.host_str().unwrap_or_default().to_owned();
    if bucket.is_empty() {
        return Err(bad("missing bucket: s3://bucket/prefix"));
    }
    if !valid_bucket(&bucket) {
        return Err(bad("bucket names are 3-63 characters of a-z, 0-9, '.' and '-'"));
    }
    let prefix = parsed.path().trim_matches('/').to_owned();
    if prefix.split('/').any(|c| c == "." || c == "..") {
        return Err(bad("the prefix must not contain '.' or '..' components"));
    }
    let mut spec = S3Spec {
        bucket,
        prefix,
        endpoint: None,
        region: None,
        path_style: false,
        max_parts: DEFAULT_MAX_PARTS,
        checksums: None,
    };
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "endpoint" => spec.endpoint = Some(v.into_owned()),
            "region" => spec.region = Some(v.into_owned()),
            "path_style" | "path-style" => {
                spec.path_style = parse_bool(&v).ok_or_else(|| bad("path_style must be true or false"))?;
            }
            "max_parts" | "max-parts" => spec.max_parts = parse_parts(url, &v)?,
            "checksums" => spec.checksums = Some(parse_checksums(url, &v)?),
            other => {
                return Err(bad(&format!(
                    "unknown query key {other:?} (valid: endpoint, region, path_style, max_parts, checksums)"
                )));
            }
        }
    }
    if let Some(e) = &cfg.endpoint {
        spec.endpoint = Some(e.clone());
    }
    if let Some(r) = &cfg.region {
        spec.region = Some(r.clone());
    }
    if let Some(p) = cfg.path_style {
        spec.path_style = p;
    }
    if let Some(m) = cfg.max_parts {
        spec.max_parts = parse_parts(url, &m.to_string())?;
    }
    if let Some(c) = &cfg.checksums {
        spec.checksums = Some(parse_checksums(url, c)?);
    }
    if let Some(e) = &spec.endpoint {
        let u = url::Url::parse(e).map_err(|err| bad(&format!("endpoint {e:?}: {err}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(bad("the endpoint must be an http:// or https:// URL"));
        }
    }
    Ok(spec)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A `max_parts` value: 2 to 10,000 (S3's limit).
fn parse_parts(url: &str, v: &str) -> Result<u32, TargetError> {
    match v.parse::<u32>() {
        Ok(n) if (2..=10_000).contains(&n) => Ok(n),
        _ => Err(config_error(url, format!("max_parts {v:?} must be a number from 2 to 10000"))),
    }
}

/// A `checksums` value.
fn parse_checksums(url: &str, v: &str) -> Result<Checksums, TargetError> {
    Checksums::parse(v).ok_or_else(|| {
        config_error(
            url,
            format!(
                "checksums {v:?} must be when-required (for stores that reject the AWS SDK's checksum headers) or when-supported"
            ),
        )
    })
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// A URL as it may appear in a message: user info (which could hold a key) removed.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_targets() {
        assert_eq!(TargetSpec::parse("/srv/b").unwrap(), TargetSpec::File("/srv/b".into()));
        assert_eq!(TargetSpec::parse("file:///srv/b").unwrap(), TargetSpec::File("/srv/b".into()));
        assert!(TargetSpec::parse("relative/dir").is_err());
        assert!(TargetSpec::parse("/srv/../etc").is_err());
        assert!(TargetSpec::parse("file://host/srv").is_err());
    }

    #[test]
    fn s3_targets() {
        let TargetSpec::S3(s) = TargetSpec::parse(
            "s3://bkt/pfx/a/?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true&max_parts=10",
        )
        .unwrap() else {
            panic!("not s3")
        };
        assert_eq!(s.bucket, "bkt");
        assert_eq!(s.prefix, "pfx/a");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("us-east-1"));
        assert!(s.path_style);
        assert_eq!(s.max_parts, 10);
        assert_eq!(s.key("x.tar.zst"), "pfx/a/x.tar.zst");
        let TargetSpec::S3(s) = TargetSpec::parse("s3://bkt").unwrap() else { panic!("not s3") };
        assert_eq!(s.prefix, "");
        assert_eq!(s.key("x"), "x");
        assert_eq!(s.max_parts, DEFAULT_MAX_PARTS);
    }

    #[test]
    fn bad_s3_targets_say_why() {
        for (url, want) in [
            ("s3:///pfx", "missing bucket"),
            ("s3://B_ad/x", "bucket names"),
            ("s3://bkt/x?max_parts=1", "max_parts"),
            ("s3://bkt/x?colour=red", "unknown query key"),
            ("s3://bkt/x?endpoint=ftp://h", "http://"),
            ("gs://bkt/x", "unsupported scheme"),
        ] {
            let e = TargetSpec::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn config_overrides_query() {
        let cfg = TargetConfig {
            url: "s3://bkt/p?region=a".into(),
            region: Some("b".into()),
            max_parts: Some(1000),
            ..TargetConfig::default()
        };
        let TargetSpec::S3(s) = TargetSpec::from_config(&cfg).unwrap() else { panic!("not s3") };
        assert_eq!(s.region.as_deref(), Some("b"));
        assert_eq!(s.max_parts, 1000);
    }

    fn s3(cfg: &TargetConfig) -> S3Spec {
        match TargetSpec::from_config(cfg) {
            Ok(TargetSpec::S3(s)) => s,
            other => panic!("{}: not an s3 spec: {other:?}", cfg.url),
        }
    }

    #[test]
    fn checksums_from_the_query_and_the_table() {
        let url = |u: &str| TargetConfig { url: u.into(), ..TargetConfig::default() };
        assert_eq!(s3(&url("s3://bkt/p")).checksums, None, "unset: the AWS chain decides");
        for (q, want) in [
            ("when-required", Checksums::WhenRequired),
            ("when-supported", Checksums::WhenSupported),
            ("WHEN_REQUIRED", Checksums::WhenRequired),
            ("when_supported", Checksums::WhenSupported),
        ] {
            let spec = s3(&url(&format!("s3://bkt/p?endpoint=http://127.0.0.1:9000&checksums={q}")));
            assert_eq!(spec.checksums, Some(want), "{q}");
        }
        let table =
            |u: &str, c: &str| TargetConfig { url: u.into(), checksums: Some(c.into()), ..TargetConfig::default() };
        assert_eq!(s3(&table("s3://bkt/p", "when-required")).checksums, Some(Checksums::WhenRequired));
        // The table wins over the query.
        let spec = s3(&table("s3://bkt/p?checksums=when-required", "when-supported"));
        assert_eq!(spec.checksums, Some(Checksums::WhenSupported));
        assert_eq!(Checksums::WhenRequired.as_str(), "when-required");
        assert_eq!(Checksums::WhenSupported.as_str(), "when-supported");
    }

    #[test]
    fn bad_checksums_values_name_the_target_and_the_choices() {
        let want = "checksums \"crc32\" must be when-required (for stores that reject the AWS SDK's checksum headers) or when-supported";
        let e = TargetSpec::parse("s3://bkt/p?checksums=crc32").unwrap_err().to_string();
        assert_eq!(e, format!("backup target \"s3://bkt/p?checksums=crc32\": {want}"));
        let cfg = TargetConfig { url: "s3://bkt/q".into(), checksums: Some("crc32".into()), ..TargetConfig::default() };
        let e = TargetSpec::from_config(&cfg).unwrap_err().to_string();
        assert_eq!(e, format!("backup target \"s3://bkt/q\": {want}"));
        for bad in ["", "required", "when-never", "true"] {
            let cfg = TargetConfig { url: "s3://bkt/q".into(), checksums: Some(bad.into()), ..TargetConfig::default() };
            let e = TargetSpec::from_config(&cfg).unwrap_err().to_string();
            assert!(e.contains("must be when-required") && e.contains("s3://bkt/q"), "{bad:?}: {e}");
        }
        // The table's key as a config file gives it.
        let t: TargetConfig =
            serde_json::from_str(r#"{"url": "s3://bkt/q", "checksums": "when-required"}"#).expect("table");
        assert_eq!(t.checksums.as_deref(), Some("when-required"));
    }

    #[test]
    fn credentials_in_urls_are_not_echoed() {
        let e = TargetSpec::parse("s3://AKIA:SECRETKEY@bkt/x?colour=1").unwrap_err().to_string();
        assert!(!e.contains("SECRETKEY"), "{e}");
    }
}
