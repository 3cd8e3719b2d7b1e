//! The management API the `voltool` CLI talks to over a unix socket.
//!
//! Routes (JSON in and out; bodies parsed from bytes, Content-Type not required):
//! - `GET /v1/version`
//! - `GET /v1/volumes`, `POST /v1/volumes` `{"name", "options"}`
//! - `GET /v1/volumes/{name}`, `DELETE /v1/volumes/{name}?force=true`
//! - `POST /v1/volumes/{name}/resize` `{"size": "128m"}`
//! - `POST /v1/volumes/{name}/mount` / `unmount` `{"id": "..."}`: the same reference-counted
//!   mounts Docker makes, for use without Docker
//! - `GET /v1/doctor`
//! - `GET /v1/secrets`, `POST /v1/secrets` `{"name", "value", "servers"?}`,
//!   `DELETE /v1/secrets/{name}` (values go in, never out; `servers` binds the secret)
//!
//! Bodies are the `voltool-api` crate's types; errors answer `{"error": "..."}` ([`ApiError`]).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use voltool_api::{
    AddSecret, CreateVolume, DoctorReport, MountId, Mounted, Removed, ResizeVolume, SecretAdded, SecretInfo, Unmounted,
    VersionInfo, VolumeInspect,
};

use crate::Daemon;
use crate::error::{ApiError, JsonBody, parse_secret_body};
use crate::views::{doctor_report, secret_info, volume_inspect};

type Reply<T> = Result<Json<T>, ApiError>;

/// The volume, doctor and secret routes.
pub fn router(daemon: Daemon) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/volumes", get(list).post(create))
        .route("/v1/volumes/{name}", get(get_one).delete(remove))
        .route("/v1/volumes/{name}/resize", axum::routing::post(resize))
        .route("/v1/volumes/{name}/mount", axum::routing::post(mount))
        .route("/v1/volumes/{name}/unmount", axum::routing::post(unmount))
        .route("/v1/doctor", get(doctor_route))
        .route("/v1/secrets", get(list_secrets).post(add_secret))
        .route("/v1/secrets/{name}", axum::routing::delete(remove_secret))
        .with_state(daemon)
}

async fn version(State(d): State<Daemon>) -> Json<VersionInfo> {
    let l = d.volumes().layout();
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        state_dir: l.state_dir.display().to_string(),
        mount_root: l.mount_root.display().to_string(),
        driver: d.driver_name().to_owned(),
    })
}

async fn list(State(d): State<Daemon>) -> Reply<Vec<VolumeInspect>> {
    let vs = d.volumes().list().await?;
    Ok(Json(vs.into_iter().map(|v| volume_inspect(v, d.driver_name())).collect()))
}

async fn create(State(d): State<Daemon>, JsonBody(req): JsonBody<CreateVolume>) -> Reply<VolumeInspect> {
    let warnings = d.volumes().create(&req.name, req.options).await?;
    match d.volumes().get(&req.name).await? {
        Some(v) => Ok(Json(VolumeInspect { warnings, ..volume_inspect(v, d.driver_name()) })),
        None => Err(voltool_plugin::Error::NotFound { volume: req.name }.into()),
    }
}

async fn get_one(State(d): State<Daemon>, Path(name): Path<String>) -> Reply<VolumeInspect> {
    match d.volumes().get(&name).await? {
        Some(v) => Ok(Json(volume_inspect(v, d.driver_name()))),
        None => Err(voltool_plugin::Error::NotFound { volume: name }.into()),
    }
}

async fn resize(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ResizeVolume>,
) -> Reply<VolumeInspect> {
    d.volumes().resize(&name, &req.size).await?;
    get_one(State(d), Path(name)).await
}

fn mount_id(body: &Bytes) -> Result<String, ApiError> {
    match serde_json::from_slice::<MountId>(body) {
        Ok(m) if !m.id.is_empty() => Ok(m.id),
        Ok(_) => Err(ApiError::bad_request("the mount id is empty")),
        Err(e) => Err(ApiError::bad_request(format!("invalid request body: {e}"))),
    }
}

async fn mount(State(d): State<Daemon>, Path(name): Path<String>, body: Bytes) -> Reply<Mounted> {
    let id = mount_id(&body)?;
    let p = d.volumes().mount(&name, &id).await?;
    Ok(Json(Mounted { mountpoint: p.to_string_lossy().into_owned() }))
}

async fn unmount(State(d): State<Daemon>, Path(name): Path<String>, body: Bytes) -> Reply<Unmounted> {
    let id = mount_id(&body)?;
    d.volumes().unmount(&name, &id).await?;
    Ok(Json(Unmounted { unmounted: name }))
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(State(d): State<Daemon>, Path(name): Path<String>, Query(q): Query<RemoveQuery>) -> Reply<Removed> {
    d.remove_volume(&name, q.force).await?;
    Ok(Json(Removed { removed: name }))
}

async fn doctor_route(State(d): State<Daemon>) -> Reply<DoctorReport> {
    let state_dir = d.volumes().layout().state_dir.clone();
    let report = tokio::task::spawn_blocking(move || doctor_report(&state_dir));
    Ok(Json(report.await?))
}

async fn add_secret(State(d): State<Daemon>, body: Bytes) -> Reply<SecretAdded> {
    // The serde error could quote the body; say only where it failed.
    let req: AddSecret = parse_secret_body(&body)?;
    let store = d.volumes().secrets().clone();
    let added = tokio::task::spawn_blocking(move || {
        store.add_bound(&req.name, req.value.as_bytes(), req.servers.as_deref()).map(|r| (req.name, r))
    });
    let (name, replaced) = added.await??;
    Ok(Json(SecretAdded { name, replaced }))
}

async fn list_secrets(State(d): State<Daemon>) -> Reply<Vec<SecretInfo>> {
    Ok(Json(d.volumes().secrets().list()?.into_iter().map(secret_info).collect()))
}

async fn remove_secret(State(d): State<Daemon>, Path(name): Path<String>) -> Reply<Removed> {
    // A CIFS volume that refers to the secret could not be mounted any more.
    let users: Vec<String> = d
        .volumes()
        .list()
        .await?
        .into_iter()
        .filter(|v| v.spec.cifs.as_ref().and_then(|t| t.secret.as_deref()) == Some(name.as_str()))
        .map(|v| v.name)
        .collect();
    if !users.is_empty() {
        let msg = format!("secret {name} is used by volume(s) {}; remove them first", users.join(", "));
        return Err(ApiError::new(StatusCode::CONFLICT, msg));
    }
    d.volumes().secrets().remove(&name)?;
    Ok(Json(Removed { removed: name }))
}
