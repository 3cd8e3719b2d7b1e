//! # voltool-api
//!
//! ## Overview
//! The request and response bodies of the management API (`/run/voltool/api.sock`), as the
//! daemon serialises them and the CLI deserialises them. One definition per body, so the two
//! cannot drift apart.
//!
//! ## Design
//! Plain data: `Serialize + Deserialize`, no behaviour and no dependency on the daemon's
//! crates (the daemon converts its own types into these at the HTTP edge). Field names are
//! the wire names.
//!
//! ## Limitations
//! The API is versioned by its path (`/v1/`); these types describe v1 only.

use serde::{Deserialize, Serialize};

/// The body of every error response: `{"error": "..."}`. The message names the volume,
/// backup or path and never carries a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}
