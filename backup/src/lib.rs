//! # voltool-backup
//!
//! ## Overview
//! The backup engine: pax tar + zstd archive stream with a manifest and sha256, sinks for
//! local disk and S3, the catalog, the cron scheduler and retention.
//!
//! ## Status
//! Not built yet (issue 4). The crate exists so the workspace layout is final; it exports
//! nothing, and the daemon refuses the `backup-*` volume options with a clear message until
//! it does.
