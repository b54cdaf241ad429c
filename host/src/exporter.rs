//! Stage: exporter.
//!
//! Inputs: the registry and self-metrics ([`Shared`]), the analyzer catalog and a readiness
//! flag. Output: HTTP on tokio: `GET /metrics` (Prometheus text format 0.0.4), `/healthz` (the
//! process serves), `/readyz` (analyzers loaded and every capture open) and `/analyzers`
//! (JSON: each analyzer's name, version, source, sha256, state, last error and families).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::runtime::catalog::Catalog;
use crate::telemetry::Shared;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct Exporter {
    pub shared: Shared,
    pub ready: Arc<AtomicBool>,
    pub catalog: Arc<Catalog>,
}

/// Runs `f` off the async workers: gathering takes locks, briefly.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("request failed: {e}\n")).into_response()
    })
}

async fn metrics(State(e): State<Exporter>) -> Response {
    let shared = e.shared;
    match blocking(move || shared.telemetry.exposition(&shared.registry, true)).await {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(r) => r,
    }
}

async fn analyzers(State(e): State<Exporter>) -> Response {
    let catalog = e.catalog;
    match blocking(move || catalog.views()).await {
        Ok(views) => Json(views).into_response(),
        Err(r) => r,
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(e): State<Exporter>) -> impl IntoResponse {
    if e.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

impl Exporter {
    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/analyzers", get(analyzers))
            .with_state(self);
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}
