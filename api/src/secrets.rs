//! Secrets: `POST /v1/secrets`, `GET /v1/secrets`, `DELETE /v1/secrets/{name}`. Values go in,
//! never out: a listing shows names, servers and times only.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/secrets`. Its `Debug` never shows the value.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddSecret {
    pub name: String,
    pub value: String,
    /// The servers it may be sent to (`--server`); absent: keep the existing binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
}

impl std::fmt::Debug for AddSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("servers", &self.servers)
            .finish()
    }
}

/// Answer to `POST /v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretAdded {
    pub name: String,
    /// Whether a secret of that name existed and was overwritten.
    pub replaced: bool,
}

/// A secret as `GET /v1/secrets` lists it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    /// RFC 3339 time of the last write.
    pub updated_at: String,
    /// The servers it may be sent to; empty: bound to the first server it is used with.
    #[serde(default)]
    pub servers: Vec<String>,
}
