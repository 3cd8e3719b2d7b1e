//! Docker's VolumeDriver protocol: DTOs and an axum router over any [`VolumeDriver`].
//!
//! dockerd POSTs JSON without a `Content-Type` header, sometimes with an empty body, so
//! bodies are read as bytes and parsed here (axum's `Json` extractor would answer 415); an
//! empty body means `{}`. Every failure answers `{"Err": "..."}` with status 500, which is
//! what dockerd's plugin client unwraps into the message users see.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

mod request;
use request::{CreateReq, MountReq, NameReq, parse};

/// The media type of plugin replies.
pub const PLUGIN_MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// A volume as Docker's Get/List want it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DockerVolume {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "CreatedAt", skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// The protocol as a trait (the containerd `Snapshotter` shape): the router unpacks requests,
/// the driver does the work, errors become `Err` strings via `Display`.
pub trait VolumeDriver: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;
    fn create(
        &self,
        name: String,
        opts: BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn remove(&self, name: String) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn mount(&self, name: String, id: String) -> impl Future<Output = Result<PathBuf, Self::Error>> + Send;
    fn unmount(&self, name: String, id: String) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn path(&self, name: String) -> impl Future<Output = Result<PathBuf, Self::Error>> + Send;
    /// `Ok(None)` for an unknown volume (answered as `{"Volume": null, "Err": ""}`).
    fn get(&self, name: String) -> impl Future<Output = Result<Option<DockerVolume>, Self::Error>> + Send;
    fn list(&self) -> impl Future<Output = Result<Vec<DockerVolume>, Self::Error>> + Send;
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, PLUGIN_MEDIA_TYPE)], body.to_string()).into_response()
}

fn fail(msg: impl std::fmt::Display) -> Response {
    reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "Err": msg.to_string() }))
}

macro_rules! handler {
    ($driver:ident, $endpoint:literal, |$d:ident, $req:ident: $ty:ty| $body:expr) => {{
        let $d = $driver.clone();
        post(move |bytes: Bytes| async move {
            let $req: $ty = match parse($endpoint, &bytes) {
                Ok(r) => r,
                Err(msg) => return fail(msg),
            };
            $body
        })
    }};
}

/// The plugin API router for `driver`.
pub fn router<D: VolumeDriver>(driver: Arc<D>) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(|| async { reply(StatusCode::OK, json!({ "Implements": ["VolumeDriver"] })) }))
        .route(
            "/VolumeDriver.Capabilities",
            post(|| async { reply(StatusCode::OK, json!({ "Capabilities": { "Scope": "local" } })) }),
        )
        .route(
            "/VolumeDriver.Create",
            handler!(driver, "/VolumeDriver.Create", |d, r: CreateReq| match d
                .create(r.name, r.opts.unwrap_or_default())
                .await
            {
                Ok(()) => reply(StatusCode::OK, json!({ "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .route(
            "/VolumeDriver.Remove",
            handler!(driver, "/VolumeDriver.Remove", |d, r: NameReq| match d.remove(r.name).await {
                Ok(()) => reply(StatusCode::OK, json!({ "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .route(
            "/VolumeDriver.Mount",
            handler!(driver, "/VolumeDriver.Mount", |d, r: MountReq| match d.mount(r.name, r.id).await {
                Ok(p) => reply(StatusCode::OK, json!({ "Mountpoint": p, "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .route(
            "/VolumeDriver.Unmount",
            handler!(driver, "/VolumeDriver.Unmount", |d, r: MountReq| match d.unmount(r.name, r.id).await {
                Ok(()) => reply(StatusCode::OK, json!({ "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .route(
            "/VolumeDriver.Path",
            handler!(driver, "/VolumeDriver.Path", |d, r: NameReq| match d.path(r.name).await {
                Ok(p) => reply(StatusCode::OK, json!({ "Mountpoint": p, "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .route(
            "/VolumeDriver.Get",
            handler!(driver, "/VolumeDriver.Get", |d, r: NameReq| match d.get(r.name).await {
                Ok(v) => reply(StatusCode::OK, json!({ "Volume": v, "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .route(
            "/VolumeDriver.List",
            handler!(driver, "/VolumeDriver.List", |d, _r: Value| match d.list().await {
                Ok(v) => reply(StatusCode::OK, json!({ "Volumes": v, "Err": "" })),
                Err(e) => fail(e),
            }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            reply(StatusCode::NOT_FOUND, json!({ "Err": format!("unknown plugin endpoint {}", uri.path()) }))
        })
}

impl From<crate::service::VolumeView> for DockerVolume {
    fn from(v: crate::service::VolumeView) -> Self {
        DockerVolume {
            name: v.name,
            mountpoint: v.mountpoint.display().to_string(),
            created_at: v.created_at,
            status: v.status.and_then(|s| serde_json::to_value(s).ok()),
        }
    }
}

impl VolumeDriver for crate::service::VolumeService {
    type Error = crate::Error;
    async fn create(&self, name: String, opts: BTreeMap<String, String>) -> crate::Result<()> {
        // Docker's Create has no place for warnings; they are in the daemon's log.
        VolumeService::create(self, &name, opts).await.map(drop)
    }
    async fn remove(&self, name: String) -> crate::Result<()> {
        VolumeService::remove(self, &name, false).await
    }
    async fn mount(&self, name: String, id: String) -> crate::Result<PathBuf> {
        VolumeService::mount(self, &name, &id).await
    }
    async fn unmount(&self, name: String, id: String) -> crate::Result<()> {
        VolumeService::unmount(self, &name, &id).await
    }
    async fn path(&self, name: String) -> crate::Result<PathBuf> {
        VolumeService::path(self, &name).await
    }
    async fn get(&self, name: String) -> crate::Result<Option<DockerVolume>> {
        // An invalid name cannot exist: answer "unknown" rather than an error, as Docker's
        // local driver does.
        match VolumeService::get(self, &name).await {
            Err(crate::Error::Option(_)) => Ok(None),
            r => r.map(|v| v.map(Into::into)),
        }
    }
    async fn list(&self) -> crate::Result<Vec<DockerVolume>> {
        Ok(VolumeService::list(self).await?.into_iter().map(Into::into).collect())
    }
}

use crate::service::VolumeService;

#[cfg(test)]
mod tests;
