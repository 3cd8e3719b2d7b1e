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
//! Errors answer `{"error": "..."}` ([`ApiError`]).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use voltool_plugin::doctor::{self, DoctorReport};
use voltool_plugin::secrets::SecretInfo;
use voltool_plugin::service::VolumeView;

use crate::Daemon;
use crate::error::{ApiError, JsonBody, parse_secret_body};

/// A volume in Docker's `docker volume inspect` shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeInspect {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    /// Live status; `null` in listings (usage is only measured on inspect).
    #[serde(rename = "Status")]
    pub status: Value,
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Scope")]
    pub scope: String,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// Things the user should know about the create they just made (not Docker's shape;
    /// only in the reply to a create).
    #[serde(rename = "Warnings", default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Body of `POST /v1/volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateVolume {
    pub name: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Daemon identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub state_dir: String,
    pub mount_root: String,
    pub driver: String,
}

type Reply<T> = Result<Json<T>, ApiError>;

fn inspect(v: VolumeView, driver: &str) -> VolumeInspect {
    VolumeInspect {
        name: v.name,
        driver: driver.to_string(),
        mountpoint: v.mountpoint.display().to_string(),
        created_at: v.created_at,
        status: v.status.and_then(|s| serde_json::to_value(s).ok()).unwrap_or_else(|| {
            json!({
                "type": v.spec.kind,
                "size_limit": v.spec.size.map_or_else(|| "none".to_string(), voltool_plugin::options::format_size),
                "mounted": v.mounted,
                "mount_count": v.mount_count,
            })
        }),
        labels: BTreeMap::new(),
        scope: "local".into(),
        options: v.options,
        warnings: Vec::new(),
    }
}

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
    Ok(Json(vs.into_iter().map(|v| inspect(v, d.driver_name())).collect()))
}

async fn create(State(d): State<Daemon>, JsonBody(req): JsonBody<CreateVolume>) -> Reply<VolumeInspect> {
    let warnings = d.volumes().create(&req.name, req.options).await?;
    match d.volumes().get(&req.name).await? {
        Some(v) => Ok(Json(VolumeInspect { warnings, ..inspect(v, d.driver_name()) })),
        None => Err(voltool_plugin::Error::NotFound { volume: req.name }.into()),
    }
}

async fn get_one(State(d): State<Daemon>, Path(name): Path<String>) -> Reply<VolumeInspect> {
    match d.volumes().get(&name).await? {
        Some(v) => Ok(Json(inspect(v, d.driver_name()))),
        None => Err(voltool_plugin::Error::NotFound { volume: name }.into()),
    }
}

/// Body of `POST /v1/volumes/{name}/resize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResizeVolume {
    pub size: String,
}

async fn resize(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ResizeVolume>,
) -> Reply<VolumeInspect> {
    d.volumes().resize(&name, &req.size).await?;
    get_one(State(d), Path(name)).await
}

/// Body of `POST /v1/volumes/{name}/mount` and `/unmount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountId {
    pub id: String,
}

fn mount_id(body: &Bytes) -> Result<String, ApiError> {
    match serde_json::from_slice::<MountId>(body) {
        Ok(m) if !m.id.is_empty() => Ok(m.id),
        Ok(_) => Err(ApiError::bad_request("the mount id is empty")),
        Err(e) => Err(ApiError::bad_request(format!("invalid request body: {e}"))),
    }
}

async fn mount(State(d): State<Daemon>, Path(name): Path<String>, body: Bytes) -> Reply<Value> {
    let id = mount_id(&body)?;
    let p = d.volumes().mount(&name, &id).await?;
    Ok(Json(json!({ "Mountpoint": p })))
}

async fn unmount(State(d): State<Daemon>, Path(name): Path<String>, body: Bytes) -> Reply<Value> {
    let id = mount_id(&body)?;
    d.volumes().unmount(&name, &id).await?;
    Ok(Json(json!({ "unmounted": name })))
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(State(d): State<Daemon>, Path(name): Path<String>, Query(q): Query<RemoveQuery>) -> Reply<Value> {
    d.remove_volume(&name, q.force).await?;
    Ok(Json(json!({ "removed": name })))
}

async fn doctor_route(State(d): State<Daemon>) -> Reply<DoctorReport> {
    let state_dir = d.volumes().layout().state_dir.clone();
    let report = tokio::task::spawn_blocking(move || doctor::assess(voltool_runtime::probe::kernel_report(&state_dir)));
    Ok(Json(report.await?))
}

/// Body of `POST /v1/secrets`.
#[derive(Serialize, Deserialize)]
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

async fn add_secret(State(d): State<Daemon>, body: Bytes) -> Reply<Value> {
    // The serde error could quote the body; say only where it failed.
    let req: AddSecret = parse_secret_body(&body)?;
    let store = d.volumes().secrets().clone();
    let added = tokio::task::spawn_blocking(move || {
        store.add_bound(&req.name, req.value.as_bytes(), req.servers.as_deref()).map(|r| (req.name, r))
    });
    let (name, replaced) = added.await??;
    Ok(Json(json!({ "name": name, "replaced": replaced })))
}

async fn list_secrets(State(d): State<Daemon>) -> Reply<Vec<SecretInfo>> {
    Ok(Json(d.volumes().secrets().list()?))
}

async fn remove_secret(State(d): State<Daemon>, Path(name): Path<String>) -> Reply<Value> {
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
    Ok(Json(json!({ "removed": name })))
}
