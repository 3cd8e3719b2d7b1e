//! The management API's backup routes (the CLI's `voltool backup ...`).
//!
//! - `GET  /v1/backups[?volume=V]` — the catalog, newest first, with live progress
//! - `POST /v1/backups` `{"volume", "target"?, "verify"?}` — starts a run, answers `202 {"id"}`
//! - `GET  /v1/backups/{id}` — one backup (poll it to follow a run)
//! - `GET  /v1/backups/{id}/manifest` — its manifest, read from the target
//! - `POST /v1/backups/{id}/verify` — re-reads and checks it; answers when done
//! - `POST /v1/backups/prune` `{"volume"?, "keep"?, "dry_run"?}` — retention
//! - `GET  /v1/schedules` — every schedule with its next run

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backups::{Backups, RunRequest};
use crate::error::Error;
use crate::mgmt::status_of;

fn err(e: Error) -> Response {
    (status_of(&e), axum::Json(json!({ "error": e.to_string() }))).into_response()
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Box<Response>> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| Box::new(err(Error::BadRequest(format!("invalid request body: {e}")))))
}

/// The backup routes.
pub fn router(backups: Backups) -> Router {
    Router::new()
        .route("/v1/backups", get(list).post(run))
        .route("/v1/backups/prune", post(prune))
        .route("/v1/backups/{id}", get(show))
        .route("/v1/backups/{id}/manifest", get(manifest))
        .route("/v1/backups/{id}/verify", post(verify))
        .route("/v1/schedules", get(schedules))
        .with_state(backups)
}

#[derive(Deserialize)]
struct ListQuery {
    volume: Option<String>,
}

async fn list(State(b): State<Backups>, Query(q): Query<ListQuery>) -> Response {
    match b.list(q.volume.as_deref()).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => err(e),
    }
}

/// Body of `POST /v1/backups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBackup {
    pub volume: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub verify: bool,
}

async fn run(State(b): State<Backups>, body: Bytes) -> Response {
    let req: RunBackup = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let run = RunRequest {
        volume: req.volume,
        target: req.target,
        verify: req.verify,
        keep: None,
        trigger: "manual",
        restore_test: false,
    };
    match b.start(run).await {
        Ok(id) => (StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response(),
        Err(e) => err(e),
    }
}

async fn show(State(b): State<Backups>, Path(id): Path<String>) -> Response {
    match b.show(&id).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => err(e),
    }
}

async fn manifest(State(b): State<Backups>, Path(id): Path<String>) -> Response {
    match b.manifest(&id).await {
        Ok(m) => axum::Json(m).into_response(),
        Err(e) => err(e),
    }
}

async fn verify(State(b): State<Backups>, Path(id): Path<String>) -> Response {
    match b.verify(&id).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => err(e),
    }
}

/// Body of `POST /v1/backups/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneBackups {
    #[serde(default)]
    pub volume: Option<String>,
    #[serde(default)]
    pub keep: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

async fn prune(State(b): State<Backups>, body: Bytes) -> Response {
    let req: PruneBackups = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match b.prune(req.volume.as_deref(), req.keep.as_deref(), req.dry_run, None).await {
        Ok(items) => axum::Json(items).into_response(),
        Err(e) => err(e),
    }
}

async fn schedules(State(b): State<Backups>) -> Response {
    match b.schedules().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => err(e),
    }
}
