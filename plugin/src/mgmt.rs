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
//! Errors answer `{"error": "..."}` with a status chosen by [`status_of`], a `match` without
//! a catch-all arm so a new error variant forces a decision (the bottlerocket apiserver shape).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::doctor::DoctorReport;
use crate::error::Error;
use crate::secrets::{SecretError, SecretStore};
use crate::service::{VolumeService, VolumeView};

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

#[derive(Clone)]
struct Ctx {
    svc: VolumeService,
    secrets: SecretStore,
    driver: String,
    doctor: std::sync::Arc<dyn Fn() -> DoctorReport + Send + Sync>,
}

/// HTTP status for a service error.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Option(_)
        | Error::Resize { .. }
        | Error::Remote { .. }
        | Error::Unsupported { .. }
        | Error::BadRequest(_)
        | Error::Restore { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } | Error::BackupNotFound { .. } => StatusCode::NOT_FOUND,
        Error::Secret { source, .. } => match source {
            SecretError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            SecretError::Exists { .. } => StatusCode::CONFLICT,
            SecretError::WrongServer { .. } => StatusCode::FORBIDDEN,
            SecretError::Name { .. }
            | SecretError::NotFound { .. }
            | SecretError::Empty { .. }
            | SecretError::TooLarge { .. }
            | SecretError::Server { .. } => StatusCode::BAD_REQUEST,
        },
        Error::Conflict { .. } | Error::InUse { .. } | Error::BackupBusy { .. } | Error::Restoring { .. } => {
            StatusCode::CONFLICT
        }
        Error::Mount { .. }
        | Error::Unmount { .. }
        | Error::Io { .. }
        | Error::Tool { .. }
        | Error::Timeout { .. }
        | Error::Store(_)
        | Error::Backup { .. }
        | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn err(e: Error) -> Response {
    (status_of(&e), axum::Json(json!({ "error": e.to_string() }))).into_response()
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": msg }))).into_response()
}

fn inspect(v: VolumeView, driver: &str) -> VolumeInspect {
    VolumeInspect {
        name: v.name,
        driver: driver.to_string(),
        mountpoint: v.mountpoint.display().to_string(),
        created_at: v.created_at,
        status: v.status.and_then(|s| serde_json::to_value(s).ok()).unwrap_or_else(|| {
            json!({
                "type": v.spec.kind,
                "size_limit": v.spec.size.map_or_else(|| "none".to_string(), crate::options::format_size),
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

/// The management router. `doctor` produces the host report on demand.
pub fn router(svc: VolumeService, driver: String, doctor: impl Fn() -> DoctorReport + Send + Sync + 'static) -> Router {
    let secrets = svc.secrets().clone();
    let ctx = Ctx { svc, secrets, driver, doctor: std::sync::Arc::new(doctor) };
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
        .with_state(ctx)
}

async fn version(State(c): State<Ctx>) -> Response {
    let l = c.svc.layout();
    axum::Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        state_dir: l.state_dir.display().to_string(),
        mount_root: l.mount_root.display().to_string(),
        driver: c.driver.clone(),
    })
    .into_response()
}

async fn list(State(c): State<Ctx>) -> Response {
    match c.svc.list().await {
        Ok(vs) => axum::Json(vs.into_iter().map(|v| inspect(v, &c.driver)).collect::<Vec<_>>()).into_response(),
        Err(e) => err(e),
    }
}

async fn create(State(c): State<Ctx>, body: Bytes) -> Response {
    let req: CreateVolume = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid request body: {e}")),
    };
    let warnings = match c.svc.create(&req.name, req.options).await {
        Ok(w) => w,
        Err(e) => return err(e),
    };
    match c.svc.get(&req.name).await {
        Ok(Some(v)) => axum::Json(VolumeInspect { warnings, ..inspect(v, &c.driver) }).into_response(),
        Ok(None) => err(Error::NotFound { volume: req.name }),
        Err(e) => err(e),
    }
}

async fn get_one(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    match c.svc.get(&name).await {
        Ok(Some(v)) => axum::Json(inspect(v, &c.driver)).into_response(),
        Ok(None) => err(Error::NotFound { volume: name }),
        Err(e) => err(e),
    }
}

/// Body of `POST /v1/volumes/{name}/resize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResizeVolume {
    pub size: String,
}

async fn resize(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let req: ResizeVolume = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid request body: {e}")),
    };
    if let Err(e) = c.svc.resize(&name, &req.size).await {
        return err(e);
    }
    get_one(State(c), Path(name)).await
}

/// Body of `POST /v1/volumes/{name}/mount` and `/unmount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountId {
    pub id: String,
}

fn mount_id(body: &Bytes) -> Result<String, String> {
    match serde_json::from_slice::<MountId>(body) {
        Ok(m) if !m.id.is_empty() => Ok(m.id),
        Ok(_) => Err("the mount id is empty".into()),
        Err(e) => Err(format!("invalid request body: {e}")),
    }
}

async fn mount(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let id = match mount_id(&body) {
        Ok(id) => id,
        Err(msg) => return bad_request(msg),
    };
    match c.svc.mount(&name, &id).await {
        Ok(p) => axum::Json(json!({ "Mountpoint": p })).into_response(),
        Err(e) => err(e),
    }
}

async fn unmount(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let id = match mount_id(&body) {
        Ok(id) => id,
        Err(msg) => return bad_request(msg),
    };
    match c.svc.unmount(&name, &id).await {
        Ok(()) => axum::Json(json!({ "unmounted": name })).into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(State(c): State<Ctx>, Path(name): Path<String>, Query(q): Query<RemoveQuery>) -> Response {
    match c.svc.remove(&name, q.force).await {
        Ok(()) => axum::Json(json!({ "removed": name })).into_response(),
        Err(e) => err(e),
    }
}

async fn doctor_route(State(c): State<Ctx>) -> Response {
    let f = c.doctor.clone();
    match tokio::task::spawn_blocking(move || f()).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => err(Error::Internal(e.to_string())),
    }
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

fn secret_err(e: SecretError) -> Response {
    let status = match &e {
        SecretError::Name { .. }
        | SecretError::Empty { .. }
        | SecretError::TooLarge { .. }
        | SecretError::Server { .. }
        | SecretError::WrongServer { .. } => StatusCode::BAD_REQUEST,
        SecretError::Exists { .. } => StatusCode::CONFLICT,
        SecretError::NotFound { .. } => StatusCode::NOT_FOUND,
        SecretError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, axum::Json(json!({ "error": e.to_string() }))).into_response()
}

async fn add_secret(State(c): State<Ctx>, body: Bytes) -> Response {
    // The serde error could quote the body; say only where it failed.
    let req: AddSecret = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid request body at line {} column {}", e.line(), e.column())),
    };
    let store = c.secrets.clone();
    let added = tokio::task::spawn_blocking(move || {
        store.add_bound(&req.name, req.value.as_bytes(), req.servers.as_deref()).map(|r| (req.name, r))
    });
    match added.await {
        Ok(Ok((name, replaced))) => axum::Json(json!({ "name": name, "replaced": replaced })).into_response(),
        Ok(Err(e)) => secret_err(e),
        Err(e) => err(Error::Internal(e.to_string())),
    }
}

async fn list_secrets(State(c): State<Ctx>) -> Response {
    match c.secrets.list() {
        Ok(l) => axum::Json(l).into_response(),
        Err(e) => secret_err(e),
    }
}

async fn remove_secret(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    // A CIFS volume that refers to the secret could not be mounted any more.
    let users: Vec<String> = match c.svc.list().await {
        Ok(vs) => vs
            .into_iter()
            .filter(|v| v.spec.cifs.as_ref().and_then(|t| t.secret.as_deref()) == Some(name.as_str()))
            .map(|v| v.name)
            .collect(),
        Err(e) => return err(e),
    };
    if !users.is_empty() {
        let msg = format!("secret {name} is used by volume(s) {}; remove them first", users.join(", "));
        return (StatusCode::CONFLICT, axum::Json(json!({ "error": msg }))).into_response();
    }
    match c.secrets.remove(&name) {
        Ok(()) => axum::Json(json!({ "removed": name })).into_response(),
        Err(e) => secret_err(e),
    }
}
