//! Stage: exporter.
//!
//! Input: the registry and self-metrics ([`Shared`]) and a readiness flag.
//! Output: HTTP on tokio: `GET /metrics` (Prometheus text format 0.0.4), `/healthz` (the
//! process serves) and `/readyz` (analyzers loaded and every capture open).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::telemetry::Shared;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Exporter {
    shared: Shared,
    ready: Arc<AtomicBool>,
}

async fn metrics(State(e): State<Exporter>) -> impl IntoResponse {
    // Gathering takes each family's lock briefly; keep it off the async workers.
    let shared = e.shared.clone();
    let body =
        tokio::task::spawn_blocking(move || shared.telemetry.exposition(&shared.registry, true))
            .await;
    match body {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(err) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("gathering metrics failed: {err}\n"))
                .into_response()
        }
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

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Exporter { shared, ready });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
