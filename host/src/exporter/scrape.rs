//! Stage: exporter (answering `GET /metrics`).
//!
//! Inputs: a render function (the exposition text of the registry and the self-metrics) and
//! each scrape's `Accept-Encoding`.
//! Outputs: HTTP responses carrying a shared, cached render, gzip-compressed when the client
//! accepts it, or 503 when too many scrapes are already in flight.
//!
//! Rendering walks every family under its lock, so it competes with the analyzer workers, and
//! its text is the largest thing the exporter holds. Hence:
//! - single flight: at most one render runs at a time, and the scrapes that arrive while it
//!   runs, or within a short freshness window after it, get its bytes (shared, not copied);
//! - the gzip variant of a render is compressed at most once, on first demand, and shared the
//!   same way;
//! - at most [`MAX_IN_FLIGHT`] scrapes wait for a render at once; beyond that a scrape is
//!   answered 503 at once instead of queueing;
//! - at most [`MAX_LIVE_RENDERS`] renders are alive at once (in the cache or still being
//!   written to slow clients): while more are, scrapes get the cached one, a little stale,
//!   rather than a new render. Memory is then bounded whatever the clients do.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::telemetry::Throttle;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes served or waiting for a render at once; more are answered 503. A node has a handful
/// of legitimate scrapers (an HA pair of Prometheus servers, an agent, a person with curl), and
/// they all share one render, so more concurrency buys nothing; 8 leaves twice that headroom.
pub const MAX_IN_FLIGHT: usize = 8;

/// Renders alive at once: the cached one, the one being made, and one more still being
/// written to a slow client. Each holds the exposition text and maybe its gzip variant, so
/// this bounds the exporter's memory to about three renders whatever clients do; a client too
/// slow to read its copy can only make the others' metrics stale, for at most the write
/// timeout of the HTTP server.
pub const MAX_LIVE_RENDERS: usize = 3;

/// A render is fresh for this many times as long as it took, within the bounds below, so
/// rendering takes at most about 1/11 of one core however hard clients scrape and however
/// large the exposition is.
const FRESH_PER_RENDER: u32 = 10;

/// The shortest freshness window. It keeps a packet's visibility in `/metrics` within the
/// README's "about 150 ms" order (flush latency plus this) while a storm of scrapers gets at
/// most about 10 renders a second.
const MIN_FRESH: Duration = Duration::from_millis(100);

/// The longest freshness window: even a huge exposition is at most a second old, well under
/// any scrape interval (Prometheus' default is 1 minute, commonly 15–30 s).
const MAX_FRESH: Duration = Duration::from_secs(1);

/// gzip level 1: exposition text is repetitive (metric names, label sets), so the fastest level
/// already shrinks it several-fold; higher levels cost CPU next to the capture for a few
/// percent more.
const GZIP_LEVEL: u32 = 1;

/// At most one "scrapes refused" warning per this many seconds: a storm of scrapers must not
/// turn into a storm of log lines.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a scrape could not be answered with metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rendering the exposition failed: {0}")]
    Render(#[source] tokio::task::JoinError),
    #[error("compressing the exposition failed: {0}")]
    Compress(#[source] std::io::Error),
    #[error("compressing the exposition failed: {0}")]
    CompressTask(#[source] tokio::task::JoinError),
}

/// Produces the exposition text; called off the async workers.
pub type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Counts renders whose bytes are still alive: decremented when the last copy of a render's
/// text and of its gzip variant has been dropped (by the cache and by every response that
/// carried it).
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes that keep their render counted as alive while any response still holds them.
struct Tracked {
    data: Vec<u8>,
    _alive: Arc<Alive>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// One exposition, as rendered once and shared by every scrape that gets it.
pub struct Render {
    identity: Bytes,
    gzip: OnceCell<Bytes>,
    alive: Arc<Alive>,
    done: Instant,
    fresh_for: Duration,
}

impl Render {
    fn new(text: String, took: Duration, alive: Arc<Alive>) -> Render {
        let fresh_for = took.saturating_mul(FRESH_PER_RENDER).clamp(MIN_FRESH, MAX_FRESH);
        let identity =
            Bytes::from_owner(Tracked { data: text.into_bytes(), _alive: alive.clone() });
        Render { identity, gzip: OnceCell::new(), alive, done: Instant::now(), fresh_for }
    }

    fn is_fresh(&self) -> bool {
        self.done.elapsed() < self.fresh_for
    }

    /// The text, uncompressed.
    pub fn identity(&self) -> Bytes {
        self.identity.clone()
    }

    /// The text gzip-compressed: compressed by the first scrape that asks, off the async
    /// workers, and shared with every later one. The compression runs in its own task, so a
    /// client that goes away meanwhile does not make the next one start over.
    pub async fn gzip(self: &Arc<Self>) -> Result<Bytes, Error> {
        if let Some(b) = self.gzip.get() {
            return Ok(b.clone());
        }
        let me = self.clone();
        let task = tokio::spawn(async move {
            me.gzip
                .get_or_try_init(|| async {
                    let (text, alive) = (me.identity.clone(), me.alive.clone());
                    tokio::task::spawn_blocking(move || compress(&text, alive))
                        .await
                        .map_err(Error::CompressTask)?
                })
                .await
                .cloned()
        });
        task.await.map_err(Error::CompressTask)?
    }
}

fn compress(text: &[u8], alive: Arc<Alive>) -> Result<Bytes, Error> {
    // Typical exposition text compresses about ten-fold at level 1.
    let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::new(GZIP_LEVEL));
    gz.write_all(text).map_err(Error::Compress)?;
    let data = gz.finish().map_err(Error::Compress)?;
    Ok(Bytes::from_owner(Tracked { data, _alive: alive }))
}

/// The single-flight cache of renders.
pub struct Renders {
    render: RenderFn,
    /// Held while a render runs: the lock is the single flight.
    cached: Arc<Mutex<Option<Arc<Render>>>>,
    /// Renders alive (see [`MAX_LIVE_RENDERS`]).
    alive: Arc<AtomicUsize>,
}

impl Renders {
    pub fn new(render: RenderFn) -> Renders {
        Renders { render, cached: Arc::default(), alive: Arc::default() }
    }

    /// Renders alive right now.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }

    /// The cached render if it is fresh (or too many renders are alive to make another),
    /// else a new one. Scrapes that arrive while a render runs wait for it and share it. The
    /// render runs in its own task, so a scrape that goes away meanwhile neither cancels it
    /// nor lets a second one start beside it.
    pub async fn current(&self) -> Result<Arc<Render>, Error> {
        let mut cached = self.cached.clone().lock_owned().await;
        if let Some(r) = cached.as_ref()
            && (r.is_fresh() || self.alive() >= MAX_LIVE_RENDERS)
        {
            return Ok(r.clone());
        }
        let (render, alive) = (self.render.clone(), self.alive.clone());
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let text =
                tokio::task::spawn_blocking(move || render()).await.map_err(Error::Render)?;
            alive.fetch_add(1, Ordering::AcqRel);
            let r = Arc::new(Render::new(text, start.elapsed(), Arc::new(Alive(alive))));
            *cached = Some(r.clone());
            Ok(r)
        });
        task.await.map_err(Error::Render)?
    }
}

/// `GET /metrics`: the in-flight bound, single-flight renders and gzip negotiation.
pub struct Scrapes {
    renders: Renders,
    in_flight: Semaphore,
    /// Scrapes answered 503 so far.
    refused: AtomicU64,
    /// The same, in the self-metrics (`wasmtap_host_http_refused_total{reason="busy"}`).
    refused_metric: Option<prometheus::IntCounter>,
    /// Lets one "scrapes refused" warning through per [`WARN_EVERY`].
    warnings: Throttle,
}

impl Scrapes {
    pub fn new(render: RenderFn, refused_metric: Option<prometheus::IntCounter>) -> Scrapes {
        Scrapes {
            renders: Renders::new(render),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            refused: AtomicU64::new(0),
            refused_metric,
            warnings: Throttle::new(WARN_EVERY),
        }
    }

    /// Answers one scrape whose request carried `headers`.
    pub async fn respond(&self, headers: &HeaderMap) -> Response {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return self.busy();
        };
        let render = match self.renders.current().await {
            Ok(r) => r,
            Err(e) => return failed(&e),
        };
        let gzip = accepts_gzip(headers);
        let body = if gzip {
            match render.gzip().await {
                Ok(b) => b,
                Err(e) => return failed(&e),
            }
        } else {
            render.identity()
        };
        let mut response = Response::new(Body::from(body));
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    }

    /// 503: [`MAX_IN_FLIGHT`] scrapes are already being answered.
    fn busy(&self) -> Response {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(m) = &self.refused_metric {
            m.inc();
        }
        if self.warnings.ready() {
            tracing::warn!(
                limit = MAX_IN_FLIGHT,
                refused_so_far = refused,
                "too many concurrent scrapes of /metrics: answering 503"
            );
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("too many concurrent scrapes (limit {MAX_IN_FLIGHT}); retry later\n"),
        )
            .into_response()
    }
}

fn failed(e: &Error) -> Response {
    tracing::error!("/metrics: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): `gzip` or `x-gzip` with a
/// non-zero quality, or else `*` with a non-zero quality.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let items = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for item in items {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim().parse::<f32>().unwrap_or(0.0))
            })
            .next_back()
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(quality);
        } else if coding == "*" {
            any = Some(quality);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::AtomicU32;

    fn headers(accept: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(a).expect("header value"));
        }
        h
    }

    #[test]
    fn gzip_negotiation() {
        for (accept, want) in [
            (None, false),
            (Some("gzip"), true),
            (Some("GZip"), true),
            (Some("x-gzip"), true),
            (Some("identity"), false),
            (Some("deflate, br"), false),
            (Some("br;q=1.0, gzip;q=0.8, *;q=0.1"), true),
            (Some("gzip;q=0"), false),
            (Some("gzip; q=0.000"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some("identity, *;q=0.5"), true),
        ] {
            assert_eq!(accepts_gzip(&headers(accept)), want, "Accept-Encoding: {accept:?}");
        }
    }

    /// A render function that counts its calls and takes `delay`.
    fn slow_render(delay: Duration) -> (RenderFn, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let f: RenderFn = Arc::new(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(delay);
            format!("# TYPE x gauge\nx {n}\n").repeat(100)
        });
        (f, calls)
    }

    async fn body(r: Response) -> (StatusCode, HeaderMap, Bytes) {
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, bytes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_render_and_excess_ones_get_503() {
        let (f, calls) = slow_render(Duration::from_millis(300));
        let scrapes = Arc::new(Scrapes::new(f, None));
        let mut tasks = Vec::new();
        for i in 0..MAX_IN_FLIGHT + 4 {
            let s = scrapes.clone();
            tasks.push(tokio::spawn(async move {
                let accept = (i % 2 == 0).then_some("gzip");
                body(s.respond(&headers(accept)).await).await
            }));
            // Let the first ones take their permits before the excess ones arrive.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (mut ok, mut busy, mut identity) = (0, 0, Vec::new());
        for t in tasks {
            let (status, h, b) = t.await.expect("task");
            match status {
                StatusCode::OK => {
                    ok += 1;
                    assert_eq!(h[header::CONTENT_TYPE], TEXT_FORMAT);
                    let text = if h.get(header::CONTENT_ENCODING).is_some() {
                        let mut s = String::new();
                        flate2::read::GzDecoder::new(&b[..])
                            .read_to_string(&mut s)
                            .expect("valid gzip");
                        s
                    } else {
                        String::from_utf8(b.to_vec()).expect("utf-8")
                    };
                    identity.push(text);
                }
                StatusCode::SERVICE_UNAVAILABLE => busy += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!((ok, busy), (MAX_IN_FLIGHT, 4));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one render for all concurrent scrapes");
        assert!(identity.iter().all(|t| *t == identity[0] && t.ends_with("x 1\n")));

        // Within the freshness window: the same render, the very same bytes.
        let a = scrapes.renders.current().await.expect("render");
        let b = scrapes.renders.current().await.expect("render");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.identity().as_ptr(), b.identity().as_ptr());
        assert_eq!(a.gzip().await.expect("gzip").as_ptr(), b.gzip().await.expect("gzip").as_ptr());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_render_is_replaced_unless_too_many_are_alive() {
        let (f, calls) = slow_render(Duration::from_millis(1));
        let renders = Renders::new(f);
        let mut held = vec![renders.current().await.expect("render").identity()];
        assert_eq!(renders.alive(), 1);
        for n in 2..=MAX_LIVE_RENDERS {
            tokio::time::sleep(MIN_FRESH + Duration::from_millis(20)).await;
            held.push(renders.current().await.expect("render").identity());
            assert_eq!(calls.load(Ordering::SeqCst) as usize, n);
        }
        assert_eq!(renders.alive(), MAX_LIVE_RENDERS);
        // Slow clients hold every older render: the cached one is served, stale.
        tokio::time::sleep(MIN_FRESH + Duration::from_millis(20)).await;
        let stale = renders.current().await.expect("render");
        assert_eq!(calls.load(Ordering::SeqCst) as usize, MAX_LIVE_RENDERS);
        assert_eq!(stale.identity().as_ptr(), held[MAX_LIVE_RENDERS - 1].as_ptr());
        // Once they are done, a fresh render is made.
        drop(held);
        drop(stale);
        assert_eq!(renders.alive(), 1);
        let fresh = renders.current().await.expect("render");
        assert_eq!(calls.load(Ordering::SeqCst) as usize, MAX_LIVE_RENDERS + 1);
        assert!(fresh.is_fresh());
        assert_eq!(renders.alive(), 1);
    }
}
