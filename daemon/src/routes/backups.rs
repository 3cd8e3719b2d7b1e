//! The management API's backup routes (the CLI's `voltool backup ...`).
//!
//! - `GET  /v1/backups[?volume=V]` — the catalog, newest first, with live progress
//! - `POST /v1/backups` `{"volume", "target"?, "verify"?}` — starts a run, answers `202 {"id"}`
//! - `GET  /v1/backups/{id}[?wait_ms=N]` — one backup; with `wait_ms`, once the run in flight
//!   ends or after N ms (at most 5 s), to follow a run
//! - `GET  /v1/backups/{id}/manifest` — its manifest, read from the target
//! - `GET  /v1/backups/{id}/cat?path=P` — one file's bytes, read alone from the frames that hold it
//! - `POST /v1/backups/{id}/verify` — re-reads and checks it; answers when done
//! - `POST /v1/backups/prune` `{"volume"?, "keep"?, "dry_run"?}` — retention
//! - `POST /v1/backups/sync` `{"target"?, "adopt"?}` — the catalog from the target(s)
//! - `GET  /v1/targets/backups[?target=T]` — what a target holds (not the catalog)
//! - `GET  /v1/schedules` — every schedule with its next run
//!
//! Bodies are the `voltool-api` crate's types.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use voltool_api::{
    BackupStarted, BackupView, PruneBackups, PruneItem, RunBackup, ScheduleView, SyncBackups, SyncReport,
    TargetListing, VerifyOutcome,
};
use voltool_backup::Manifest;

use crate::backups::{Backups, RunRequest};
use crate::error::{ApiError, JsonBody};

type Reply<T> = Result<Json<T>, ApiError>;

/// The backup routes.
pub fn router(backups: Backups) -> Router {
    Router::new()
        .route("/v1/backups", get(list).post(run))
        .route("/v1/backups/prune", post(prune))
        .route("/v1/backups/sync", post(sync))
        .route("/v1/targets/backups", get(target_listing))
        .route("/v1/backups/{id}", get(show))
        .route("/v1/backups/{id}/manifest", get(manifest))
        .route("/v1/backups/{id}/cat", get(cat))
        .route("/v1/backups/{id}/verify", post(verify))
        .route("/v1/schedules", get(schedules))
        .with_state(backups)
}

#[derive(Deserialize)]
struct ListQuery {
    volume: Option<String>,
}

async fn list(State(b): State<Backups>, Query(q): Query<ListQuery>) -> Reply<Vec<BackupView>> {
    Ok(Json(b.list(q.volume.as_deref()).await?.into_iter().map(BackupView::from).collect()))
}

async fn run(
    State(b): State<Backups>,
    JsonBody(req): JsonBody<RunBackup>,
) -> Result<(StatusCode, Json<BackupStarted>), ApiError> {
    let run = RunRequest {
        volume: req.volume,
        target: req.target,
        verify: req.verify,
        keep: None,
        trigger: "manual",
        restore_test: false,
        consistency: req.consistency,
        incremental: req.incremental.then_some(true),
        rehash: req.rehash,
    };
    let id = b.start(run).await?;
    Ok((StatusCode::ACCEPTED, Json(BackupStarted { id })))
}

/// `?wait_ms=N`: answer when the run in flight ends or after N ms (at most 5 s).
#[derive(Debug, Deserialize)]
struct ShowQuery {
    wait_ms: Option<u64>,
}

async fn show(State(b): State<Backups>, Path(id): Path<String>, Query(q): Query<ShowQuery>) -> Reply<BackupView> {
    let v = match q.wait_ms {
        Some(ms) => b.show_waiting(&id, std::time::Duration::from_millis(ms)).await?,
        None => b.show(&id).await?,
    };
    Ok(Json(v.into()))
}

/// `?path=P`: the file to read.
#[derive(Debug, Deserialize)]
struct CatQuery {
    path: String,
}

async fn cat(
    State(b): State<Backups>,
    Path(id): Path<String>,
    Query(q): Query<CatQuery>,
) -> Result<([(axum::http::header::HeaderName, &'static str); 1], axum::body::Body), ApiError> {
    let stream = b.cat(&id, &q.path).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(stream, 1 << 16);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], axum::body::Body::from_stream(stream)))
}

async fn manifest(State(b): State<Backups>, Path(id): Path<String>) -> Reply<Manifest> {
    Ok(Json(b.manifest(&id).await?))
}

async fn verify(State(b): State<Backups>, Path(id): Path<String>) -> Reply<VerifyOutcome> {
    Ok(Json(b.verify(&id).await?))
}

async fn prune(State(b): State<Backups>, JsonBody(req): JsonBody<PruneBackups>) -> Reply<Vec<PruneItem>> {
    Ok(Json(b.prune(req.volume.as_deref(), req.keep.as_deref(), req.dry_run, None).await?))
}

async fn sync(State(b): State<Backups>, JsonBody(req): JsonBody<SyncBackups>) -> Reply<SyncReport> {
    Ok(Json(b.sync(req).await?))
}

#[derive(Deserialize)]
struct TargetQuery {
    target: Option<String>,
}

async fn target_listing(State(b): State<Backups>, Query(q): Query<TargetQuery>) -> Reply<TargetListing> {
    Ok(Json(b.target_listing(q.target.as_deref()).await?))
}

async fn schedules(State(b): State<Backups>) -> Reply<Vec<ScheduleView>> {
    Ok(Json(b.schedules().await?))
}
