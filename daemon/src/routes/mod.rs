//! The management API (the `voltool` CLI's unix socket): one router per area, merged.
//! Every handler returns `Result<_, ApiError>` ([`crate::error`]); request bodies are read
//! as bytes whatever their Content-Type ([`crate::error::JsonBody`]).

pub mod backups;
mod body;
pub mod restores;
pub mod volumes;

use axum::Router;

use crate::Daemon;

/// All management routes.
pub fn router(daemon: Daemon) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(crate::http::metrics))
        .route("/v1/status", axum::routing::get(status))
        .route("/v1/notify/test", axum::routing::post(notify_test))
        .with_state(daemon.clone())
        .merge(volumes::router(daemon.clone()))
        .merge(backups::router(daemon.backups().clone()))
        .merge(restores::router(daemon.restores().clone()))
}

/// `GET /v1/status`: the host at a glance (`voltool status`).
async fn status(
    axum::extract::State(d): axum::extract::State<Daemon>,
) -> Result<axum::Json<voltool_api::status::StatusView>, crate::error::ApiError> {
    Ok(axum::Json(d.status().await?))
}

/// `POST /v1/notify/test`: a test message to one notifier or all, waited for (`voltool notify
/// test [NAME]`).
async fn notify_test(
    axum::extract::State(d): axum::extract::State<Daemon>,
    body: crate::error::JsonBody<voltool_api::status::NotifyTest>,
) -> Result<axum::Json<Vec<voltool_api::status::NotifyTestOutcome>>, crate::error::ApiError> {
    let req = body.0;
    let sent =
        d.notifiers().send_test(req.name.as_deref()).await.map_err(|e| crate::Error::BadRequest(e.to_string()))?;
    Ok(axum::Json(
        sent.into_iter()
            .map(|(name, r)| voltool_api::status::NotifyTestOutcome {
                name,
                ok: r.is_ok(),
                error: r.err().map(|e| e.to_string()),
            })
            .collect(),
    ))
}
