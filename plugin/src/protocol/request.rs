//! The request bodies dockerd sends, and their parsing: std, serde and thiserror only, so the
//! fuzz target (fuzz/fuzz_targets/plugin_request.rs) compiles this very file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct NameReq {
    #[serde(rename = "Name")]
    pub(crate) name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CreateReq {
    #[serde(rename = "Name")]
    pub(crate) name: String,
    #[serde(rename = "Opts")]
    pub(crate) opts: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MountReq {
    #[serde(rename = "Name")]
    pub(crate) name: String,
    #[serde(rename = "ID")]
    pub(crate) id: String,
}

/// Why a request body was refused; the router answers it as `{"Err": "..."}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Not JSON, or JSON of the wrong shape for the endpoint.
    #[error("invalid request body for {endpoint}: {source}")]
    Json { endpoint: &'static str, source: serde_json::Error },
    /// JSON, but not an object (serde would take an array for a struct, by position).
    #[error("invalid request body for {endpoint}: expected a JSON object, got {got}")]
    NotObject { endpoint: &'static str, got: &'static str },
}

/// Parses a request body; empty means `{}`.
///
/// # Errors
/// [`RequestError`] naming the endpoint.
pub(crate) fn parse<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, RequestError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let bad = |source| RequestError::Json { endpoint, source };
    // serde accepts a JSON array for a struct (fields by position); the protocol only
    // ever sends objects, so anything else is refused.
    match serde_json::from_slice::<Value>(body).map_err(bad)? {
        v @ Value::Object(_) => serde_json::from_value(v).map_err(bad),
        other => Err(RequestError::NotObject { endpoint, got: kind_of(&other) }),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
