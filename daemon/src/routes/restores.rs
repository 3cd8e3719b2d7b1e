//! The management API's restore, import, export, restore-test and migration routes.
//!
//! - `POST /v1/volumes/{name}/restore` `{"from", "force"?, "allow_devices"?, "strip_components"?}`
//!   — from a catalog ID or an archive URL; answers when done
//! - `POST /v1/volumes/{name}/import?force=&allow_devices=&strip_components=&preserve_privileges=`
//!   — the request body is the archive (tar, tar.gz or tar.zst), streamed straight into the
//!   extraction; with `manifest_len=N&manifest_name=NAME` its first N bytes are the voltool
//!   manifest of the archive that follows (a local `ID.tar.zst` with `ID.manifest.json` beside
//!   it), which the restore is checked against
//! - `GET  /v1/volumes/{name}/export[?framed=true]` — the volume as a zstd-compressed pax tar,
//!   the same stream a backup stores, produced while it is sent (never spooled); framed: a
//!   migration's frames
//! - `GET  /v1/volumes/{name}/offer` — what a migration of the volume offers its receiver
//! - `POST /v1/backups/{id}/restore-test` `{"check_cmd"?}` — restores into a scratch volume and
//!   runs the check; answers when done
//! - `POST /v1/volumes/{name}/receive/check` (an offer) and `POST /v1/volumes/{name}/receive`
//!   (the offer as one JSON line, then the frames) — the receiving end of `voltool migrate`
//!
//! JSON bodies and answers are the `voltool-api` crate's types. A streamed body refused
//! part-way is drained before the error reply ([`body`]).

use std::io::{self, Read as _};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use voltool_api::{RestoreRequest, RestoreTestRequest};
use voltool_migrate::{Offer, Reply as OfferReply};

use super::body::SharedBody;
use crate::error::{ApiError, Error, JsonBody};
use crate::restores::{RestoreOptions, RestoreOutcome, RestoreTestOutcome, Restores};

type Reply<T> = Result<Json<T>, ApiError>;

/// How much of a receive's body the offer line may take.
const OFFER_LINE_MAX: u64 = 1 << 20;
/// The export stream's read size.
const EXPORT_CHUNK: usize = 1 << 18;

/// The routes.
pub fn router(restores: Restores) -> Router {
    Router::new()
        .route("/v1/volumes/{name}/restore", post(restore))
        .route("/v1/volumes/{name}/import", post(import))
        .route("/v1/volumes/{name}/export", get(export))
        .route("/v1/volumes/{name}/offer", get(offer))
        .route("/v1/backups/{id}/restore-test", post(restore_test))
        .route("/v1/volumes/{name}/receive/check", post(receive_check))
        .route("/v1/volumes/{name}/receive", post(receive))
        .with_state(restores)
}

async fn restore(
    State(r): State<Restores>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> Reply<RestoreOutcome> {
    if !req.paths.is_empty() {
        return Ok(Json(r.restore_paths(&name, &req.from, &req.paths, req.to.as_deref(), req.flags.into()).await?));
    }
    if req.to.is_some() {
        return Err(ApiError::bad_request("--to needs --path: it says where the restored paths go"));
    }
    Ok(Json(r.restore_from(&name, &req.from, req.flags.into()).await?))
}

/// The import route's query: the restore's options and where a manifest leads the body.
/// (Not [`voltool_api::RestoreFlags`] flattened: serde's `flatten` buffers a query string's
/// values as text, and `force=true` then no longer parses as a boolean.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    allow_devices: bool,
    #[serde(default)]
    strip_components: usize,
    #[serde(default)]
    preserve_privileges: bool,
    /// The body's first this many bytes are a manifest.
    manifest_len: Option<u64>,
    manifest_name: Option<String>,
}

/// Reads the manifest that leads an import's body (exactly `len` bytes, parsed as they arrive,
/// at most [`crate::backups::MANIFEST_LIMIT`]).
fn read_leading_manifest(
    name: &str,
    len: u64,
    reader: &mut (dyn io::Read + Send),
    catalog: &crate::backups::Catalog,
) -> Result<voltool_backup::Manifest, Error> {
    let limit = crate::backups::MANIFEST_LIMIT;
    if len > limit {
        return Err(Error::BadRequest(format!("manifest {name} is larger than {limit} bytes")));
    }
    let mut part = reader.take(len);
    // An encrypted manifest (`ID.manifest.json.age` beside a local `ID.tar.zst.age`) is
    // decrypted with the configured identities.
    let m = {
        let mut plain = voltool_backup::crypt::open_if_sealed(&mut part, || catalog.identities(), name)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        voltool_backup::Manifest::from_reader(name, &mut plain, voltool_backup::ManifestLimits { bytes: limit })
            .map_err(|e| Error::BadRequest(format!("manifest {name}: {e}")))?
    };
    // Whitespace after the JSON: still the manifest's bytes.
    io::copy(&mut part, &mut io::sink()).map_err(|e| Error::BadRequest(format!("reading manifest {name}: {e}")))?;
    Ok(m)
}

async fn import(
    State(r): State<Restores>,
    Path(name): Path<String>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Reply<RestoreOutcome> {
    let opts = RestoreOptions::from(voltool_api::RestoreFlags {
        force: q.force,
        allow_devices: q.allow_devices,
        strip_components: q.strip_components,
        preserve_privileges: q.preserve_privileges,
    });
    let body = SharedBody::new(body);
    let mut reader: Box<dyn io::Read + Send> = Box::new(body.reader());
    let manifest = match q.manifest_len {
        None => None,
        Some(len) => {
            let mname = q.manifest_name.unwrap_or_else(|| "the manifest".into());
            let catalog = r.catalog().clone();
            let (m, back) = tokio::task::spawn_blocking(move || {
                let m = read_leading_manifest(&mname, len, &mut *reader, &catalog);
                (m, reader)
            })
            .await?;
            reader = back;
            Some(body.drain_on_error(m).await?)
        }
    };
    let outcome = r.import(&name, reader, manifest, opts).await;
    Ok(Json(body.drain_on_error(outcome).await?))
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default)]
    framed: bool,
}

async fn export(
    State(r): State<Restores>,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<([(header::HeaderName, &'static str); 1], Body), ApiError> {
    let stream = r.export(&name, q.framed).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(stream, EXPORT_CHUNK);
    Ok(([(header::CONTENT_TYPE, "application/zstd")], Body::from_stream(stream)))
}

async fn restore_test(
    State(r): State<Restores>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RestoreTestRequest>,
) -> Reply<RestoreTestOutcome> {
    Ok(Json(r.restore_test(&id, req.check_cmd.as_deref()).await?))
}

async fn offer(State(r): State<Restores>, Path(name): Path<String>) -> Reply<Offer> {
    Ok(Json(r.offer(&name).await?))
}

/// A migration offer sent by `voltool migrate`.
fn parse_offer(bytes: &[u8]) -> Result<Offer, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid migration offer: {e}")))
}

async fn receive_check(State(r): State<Restores>, Path(name): Path<String>, body: Bytes) -> Reply<OfferReply> {
    let offer = parse_offer(&body)?;
    r.check_offer(&name, &offer).await?;
    Ok(Json(OfferReply { ready: true, ..Default::default() }))
}

/// The body is the offer (one JSON line) followed by the frames.
async fn receive(State(r): State<Restores>, Path(name): Path<String>, body: Body) -> Reply<RestoreOutcome> {
    let body = SharedBody::new(body);
    let mut reader = io::BufReader::new(body.reader());
    let (line, reader) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let res = io::BufRead::read_line(&mut (&mut reader).take(OFFER_LINE_MAX), &mut line).map(|_| line);
        (res, reader)
    })
    .await?;
    let line = line.map_err(|e| ApiError::bad_request(format!("reading the migration offer: {e}")))?;
    let offer = parse_offer(line.as_bytes())?;
    let outcome = r.receive(&name, offer, Box::new(reader)).await;
    Ok(Json(body.drain_on_error(outcome).await?))
}
