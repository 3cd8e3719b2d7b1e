//! The TCP endpoint (`--http ADDR` / `[http] listen`): `GET /metrics` for Prometheus, behind
//! the `[http] token` when one is set (always for a non-loopback address, see
//! [`crate::config::HttpListen`]). Also the timing of Docker's plugin requests
//! ([`time_plugin_request`]), a layer on the plugin router.

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Daemon;
use crate::observe::{Metrics, Observer};

/// The routes served over TCP.
pub fn router(daemon: Daemon, token: Option<String>) -> Router {
    let routes = Router::new().route("/metrics", get(metrics)).route("/", get(page)).with_state(daemon);
    match token {
        Some(t) => routes.layer(axum::middleware::from_fn_with_state(std::sync::Arc::<str>::from(t), require_token)),
        None => routes,
    }
}

/// `GET /metrics`: the text exposition (also on the management socket, see
/// [`crate::routes`]).
pub async fn metrics(State(d): State<Daemon>) -> Response {
    d.observer().count_notifications(d.notifiers());
    match d.observer().metrics().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, HeaderValue::from_static(Metrics::content_type()))], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n").into_response()
        }
    }
}

/// `GET /`: the status page ([`crate::status_page`]), self-contained: a policy that lets it
/// load nothing.
async fn page(State(d): State<Daemon>) -> Response {
    match d.status().await {
        Ok(s) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            crate::status_page::render(&s),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "could not put the status page together");
            (StatusCode::INTERNAL_SERVER_ERROR, "the status could not be read\n").into_response()
        }
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a request without `Authorization: Bearer TOKEN` (401, naming nothing).
async fn require_token(State(token): State<std::sync::Arc<str>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.trim().as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, "a bearer token is required ([http] token)\n").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

/// The plugin method a request path names (`/VolumeDriver.Mount` → `Mount`); anything else is
/// `other`, so a client cannot make a series per path.
fn plugin_method(path: &str) -> &'static str {
    match path {
        "/Plugin.Activate" => "Activate",
        "/VolumeDriver.Capabilities" => "Capabilities",
        "/VolumeDriver.Create" => "Create",
        "/VolumeDriver.Remove" => "Remove",
        "/VolumeDriver.Mount" => "Mount",
        "/VolumeDriver.Unmount" => "Unmount",
        "/VolumeDriver.Path" => "Path",
        "/VolumeDriver.Get" => "Get",
        "/VolumeDriver.List" => "List",
        _ => "other",
    }
}

/// Times every plugin request into `voltool_plugin_request_duration_seconds{method}` and
/// counts those answered with an error.
pub async fn time_plugin_request(State(o): State<Observer>, req: Request, next: Next) -> Response {
    let method = plugin_method(req.uri().path());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    o.metrics().plugin_request(method, t0.elapsed().as_secs_f64(), !resp.status().is_success());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"abc"));
        assert_eq!(plugin_method("/VolumeDriver.Mount"), "Mount");
        assert_eq!(plugin_method("/VolumeDriver.Mount/../x"), "other");
    }
}
