//! The handshake's and the result's JSON lines: the sender's [`Offer`] and the receiver's
//! [`Reply`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The sender's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub protocol: u32,
    pub volume: String,
    /// The volume's options (never secret values).
    pub options: BTreeMap<String, String>,
    /// Names of secrets the options refer to; the receiver must have them.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// The receiver's answers: first `ready` (or `error`), at the end `ok` (or `error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}
