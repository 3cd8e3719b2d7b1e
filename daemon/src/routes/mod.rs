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
        .with_state(daemon.clone())
        .merge(volumes::router(daemon.clone()))
        .merge(backups::router(daemon.backups().clone()))
        .merge(restores::router(daemon.restores().clone()))
}
