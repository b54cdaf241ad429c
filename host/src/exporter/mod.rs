//! Stage: exporter.
//!
//! Inputs: the registry, the self-metrics, health and the analyzer catalog ([`Exporter`]).
//! Output: HTTP/1.1 on tokio: `GET /metrics` (Prometheus text format 0.0.4, gzip-compressed
//! when the client accepts it), `/healthz` (no capture or worker thread has died), `/readyz`
//! (every named interface captured and an analyzer running) and `/analyzers` (JSON: each
//! analyzer's name, version, source, sha256, state, last error and families) and `/pods` (JSON:
//! the pod attribution table, the format `--pods` reads; 404 when attribution is off). Health
//! answers carry the reason in their body.
//!
//! Scrapes must not hurt the capture, whatever clients do:
//! - `/metrics` renders at most once at a time, and scrapes arriving together share one
//!   render and its one gzip compression; at most 8 scrapes are in flight, more get 503 at
//!   once; at most 3 renders are alive, so memory is bounded (see `scrape`);
//! - at most 128 connections; a request header must arrive within 5 s; a response must be
//!   read within 10 s (see `server`);
//! - on shutdown the server stops accepting, lets responses in progress finish for up to 5 s,
//!   then drops whatever is left and returns.

mod scrape;
mod server;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::health::Health;
use crate::registry::Registry;
use crate::runtime::catalog::Catalog;
use crate::telemetry::SelfMetrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct Exporter {
    pub registry: Arc<Registry>,
    pub metrics: Arc<SelfMetrics>,
    pub health: Arc<Health>,
    pub catalog: Arc<Catalog>,
}

/// The router's state: the exporter and the `/metrics` machinery.
#[derive(Clone)]
struct App {
    exporter: Exporter,
    scrapes: Arc<scrape::Scrapes>,
}

impl FromRef<App> for Exporter {
    fn from_ref(app: &App) -> Exporter {
        app.exporter.clone()
    }
}

/// Runs `f` off the async workers: gathering takes locks, briefly.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("request failed: {e}\n")).into_response()
    })
}

async fn scrape_metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    app.scrapes.respond(&headers).await
}

async fn analyzers(State(e): State<Exporter>) -> Response {
    let catalog = e.catalog;
    match blocking(move || catalog.views()).await {
        Ok(views) => Json(views).into_response(),
        Err(r) => r,
    }
}

async fn pods(State(e): State<Exporter>) -> Response {
    match e.registry.attribution() {
        Some(a) => Json(a.load().listing().clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "pod attribution is off (--cri-socket none, or no CRI socket found)\n",
        )
            .into_response(),
    }
}

async fn healthz(State(e): State<Exporter>) -> impl IntoResponse {
    match e.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")),
    }
}

async fn readyz(State(e): State<Exporter>) -> impl IntoResponse {
    match e.health.ready(e.catalog.running()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

impl Exporter {
    /// Serves until `shutdown` completes, then for at most a few seconds more while the
    /// responses in progress finish (see the module docs).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (registry, metrics) = (self.registry.clone(), self.metrics.clone());
        let render: scrape::RenderFn = Arc::new(move || registry.exposition(Some(&metrics), true));
        let refused = self
            .metrics
            .counter(
                "wasmtap_host_http_refused_total",
                "HTTP requests and connections refused by the exporter's bounds: `busy` (503, \
                 too many scrapes in flight) or `connections` (too many open).",
                &["reason"],
            )
            .map_err(std::io::Error::other)?;
        let busy = refused.with_label_values(&["busy"]);
        let connections = refused.with_label_values(&["connections"]);
        let scrapes = Arc::new(scrape::Scrapes::new(render, Some(busy)));
        let app = App { exporter: self, scrapes };
        let router = Router::new()
            .route("/metrics", get(scrape_metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/analyzers", get(analyzers))
            .route("/pods", get(pods))
            .with_state(app);
        server::run(listener, router, server::LIMITS, shutdown, Some(connections)).await
    }
}
