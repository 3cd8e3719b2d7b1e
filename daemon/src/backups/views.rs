//! What the engine answers with. The plain data (progress, verify and prune outcomes,
//! schedules) is the `voltool-api` crate's wire type itself, re-exported here; a
//! [`BackupView`] keeps the whole catalog row inside the daemon and is shown as
//! [`voltool_api::BackupView`] at the HTTP edge (`crate::views`).

use serde::Serialize;
use voltool_plugin::store::BackupRow;

pub use voltool_api::{ProgressView, PruneItem, ScheduleView, VerifyOutcome};

/// A catalog entry with its live progress (the API shows it as [`voltool_api::BackupView`]).
#[derive(Debug, Clone, Serialize)]
pub struct BackupView {
    #[serde(flatten)]
    pub row: BackupRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}
