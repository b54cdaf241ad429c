//! Stage: exporter (the HTTP/1 server).
//!
//! Inputs: a listening socket, the router that answers requests and a shutdown signal.
//! Outputs: HTTP/1.1 connections served with hyper, under limits that no client can push past:
//! - at most [`Limits::max_connections`] connections; a connection beyond that is closed as
//!   soon as it is accepted;
//! - a request's header must arrive within [`Limits::header_read`] (hyper's header read
//!   timeout, which also closes keep-alive connections idle that long);
//! - every burst of response bytes must be handed to the kernel within [`Limits::write`], so a
//!   client that stops reading, or reads a trickle, is disconnected;
//! - on shutdown: stop accepting, ask every connection to finish its current response, and
//!   after [`Limits::grace`] drop whatever is left and return.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use crate::telemetry::Throttle;

/// The server's limits (see the module docs); [`LIMITS`] in production.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time from the start of waiting for a request (connected, or the previous response
    /// sent) to its complete header.
    pub header_read: Duration,
    /// Time a burst of response bytes may take to reach the kernel.
    pub write: Duration,
    /// Time connections get to finish after shutdown, before they are dropped.
    pub grace: Duration,
}

/// The limits `wasmtap run` serves with.
pub const LIMITS: Limits = Limits {
    // A node has a handful of legitimate clients (Prometheus, probes, a person with curl);
    // 128 is ample for them and bounds what connections can hold: a task, a read buffer of
    // at most `MAX_BUF` and a kernel socket each, a few MiB in all.
    max_connections: 128,
    // Scrapers send their whole request (a few hundred bytes) right after connecting, so 5 s
    // is generous even on a congested link; it disconnects clients that send half a request
    // or nothing, and keep-alive connections idle that long.
    header_read: Duration::from_secs(5),
    // Prometheus gives up on a scrape after its scrape_timeout (10 s by default), so writing
    // a response for longer than that serves no one.
    write: Duration::from_secs(10),
    // A scrape in progress normally finishes in milliseconds; 5 s leaves most of Kubernetes'
    // 30 s termination grace period to stopping the capture and the workers.
    grace: Duration::from_secs(5),
};

/// hyper's read buffer limit per connection: far above any scraper's request (Prometheus
/// sends about 300 bytes of header), while bounding what a client can make a connection hold.
/// hyper's minimum is 8 KiB.
const MAX_BUF: usize = 16 * 1024;

/// After an accept error such as EMFILE, wait this long before accepting again: retrying at
/// once would spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning of each kind (accept errors, connections refused) per this period: a
/// flood of either must not flood the log; the counts so far go with each warning.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then drains the
/// connections for at most `limits.grace`.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    refused_metric: Option<prometheus::IntCounter>,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read).max_buf_size(MAX_BUF);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let (mut refused, mut accept_errors) = (0u64, 0u64);
    let (accept_warnings, refused_warnings) =
        (Throttle::new(WARN_EVERY), Throttle::new(WARN_EVERY));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Shutdown first, so a flood of connections cannot hold it off.
            biased;
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Per-connection failures (ECONNABORTED) or a lack of resources
                        // (EMFILE): nothing to stop serving for.
                        accept_errors += 1;
                        if accept_warnings.ready() {
                            tracing::warn!(
                                errors_so_far = accept_errors,
                                "accepting an HTTP connection: {e}"
                            );
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                while conns.try_join_next().is_some() {}
                if conns.len() >= limits.max_connections {
                    refused += 1;
                    if let Some(m) = &refused_metric {
                        m.inc();
                    }
                    if refused_warnings.ready() {
                        tracing::warn!(
                            limit = limits.max_connections,
                            refused_so_far = refused,
                            "too many HTTP connections: closing new ones"
                        );
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let drain = drain_rx.clone();
                conns.spawn(connection(http.clone(), stream, router.clone(), limits, drain));
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let open = conns.len();
    let drained =
        tokio::time::timeout(limits.grace, async { while conns.join_next().await.is_some() {} })
            .await;
    if drained.is_err() {
        tracing::warn!(
            open_at_shutdown = open,
            still_open = conns.len(),
            grace_ms = limits.grace.as_millis() as u64,
            "HTTP connections still open after the shutdown grace period: dropping them"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Serves one connection until it ends, or until `drain` is set; then asks it to finish its
/// current response (the caller bounds how long that may take).
async fn connection(
    http: http1::Builder,
    stream: TcpStream,
    router: Router,
    limits: Limits,
    mut drain: watch::Receiver<bool>,
) {
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write));
    let conn = http.serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(conn);
    let drained = async move {
        // An error means the server is gone, which is a drain too.
        let _ = drain.wait_for(|d| *d).await;
    };
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = drained => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        // Timeouts and clients that go away mid-request end here; nothing to do about them.
        tracing::debug!("HTTP connection: {e}");
    }
}

/// A socket whose every burst of writes must complete within a deadline.
///
/// A burst starts with the first write after the last successful flush. hyper flushes once its
/// write buffer is empty, that is once a response (or everything queued of it) has been
/// handed to the kernel, so a response to a client that does not read, or reads too slowly,
/// fails with `TimedOut` when the deadline passes and hyper closes the connection.
struct WriteDeadline<T> {
    io: T,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> WriteDeadline<T> {
    fn new(io: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline { io, limit, deadline: Box::pin(tokio::time::sleep(limit)), armed: false }
    }

    /// Starts the deadline at a burst's first write; fails a write still pending after it.
    fn check<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + self.limit;
            self.deadline.as_mut().reset(at);
        }
        if r.is_pending() && self.deadline.as_mut().poll(cx).is_ready() {
            let msg = format!("the client read no response within {:?}", self.limit);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, msg)));
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper queues the (shared) body bytes instead of copying them when this holds.
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            this.armed = false;
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::net::TcpSocket;

    // tokio's io-util extension traits are not enabled; these are all the tests need.
    async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            s.writable().await?;
            match s.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            s.readable().await?;
            match s.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
        }
    }

    /// Bigger than any socket buffers, so a client that does not read stalls the write.
    const BIG: usize = 32 << 20;

    fn router() -> Router {
        Router::new()
            .route("/big", get(|| async { vec![b'x'; BIG] }))
            .route("/small", get(|| async { "ok" }))
    }

    /// Starts the server on an ephemeral loopback port; returns its address, a trigger for
    /// shutdown and the server task.
    async fn start(
        limits: Limits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            run(listener, router(), limits, shutdown, None).await.expect("serve");
        });
        (addr, tx, task)
    }

    /// A client with a tiny receive buffer that sends `request` and then reads nothing.
    async fn non_reader(addr: std::net::SocketAddr, request: &str) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
        let s = socket.connect(addr).await.expect("connect");
        write_all(&s, request.as_bytes()).await.expect("write");
        s
    }

    fn get_request(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
    }

    /// Reads until EOF, a reset or `timeout`; returns what was read and whether it ended.
    async fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, read(s, &mut buf)).await {
                Err(_) => return (got, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// One keep-alive request; returns the status line.
    async fn small(s: &mut TcpStream) -> String {
        write_all(s, get_request("/small").as_bytes()).await.expect("write");
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), read(s, &mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_a_request_is_cut_by_the_header_timeout() {
        let limits = Limits { header_read: Duration::from_millis(300), ..LIMITS };
        let (addr, _stop, _task) = start(limits).await;
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        write_all(&s, b"GET /small HTTP/1.1\r\nHost: te").await.expect("write");
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        let took = start.elapsed();
        assert!(closed, "not disconnected within 3 s");
        assert!(took >= Duration::from_millis(250), "disconnected too early: {took:?}");
        // The server carries on.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(small(&mut s).await, "HTTP/1.1 200 OK");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_capped_and_a_non_reader_is_cut_by_the_write_deadline() {
        let limits = Limits { max_connections: 1, write: Duration::from_millis(500), ..LIMITS };
        let (addr, _stop, _task) = start(limits).await;
        let mut stuck = non_reader(addr, &get_request("/big")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The one connection allowed is taken: a second one is closed unanswered.
        let mut refused = TcpStream::connect(addr).await.expect("connect");
        let _ = write_all(&refused, get_request("/small").as_bytes()).await;
        let (got, closed) = read_until_closed(&mut refused, Duration::from_secs(2)).await;
        assert!(closed && got.is_empty(), "beyond the cap: got {} bytes", got.len());
        // Once the write deadline has cut the non-reader, a new connection is served.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(small(&mut s).await, "HTTP/1.1 200 OK");
        let (got, closed) = read_until_closed(&mut stuck, Duration::from_secs(5)).await;
        assert!(closed && got.len() < BIG, "the non-reader got {} bytes", got.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_within_the_grace_period_whatever_clients_do() {
        let limits = Limits {
            header_read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            grace: Duration::from_millis(400),
            ..LIMITS
        };
        let (addr, stop, task) = start(limits).await;
        let mut half = TcpStream::connect(addr).await.expect("connect");
        write_all(&half, b"GET /small HT").await.expect("write");
        let _stuck = non_reader(addr, &get_request("/big")).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(small(&mut idle).await, "HTTP/1.1 200 OK");
        tokio::time::sleep(Duration::from_millis(100)).await;

        let start = Instant::now();
        stop.send(()).expect("server running");
        // The idle keep-alive connection is closed at once.
        let (_, closed) = read_until_closed(&mut idle, Duration::from_millis(300)).await;
        assert!(closed, "idle keep-alive connection still open 300 ms after shutdown");
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("server returned within 3 s")
            .expect("server task");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(350), "returned before the grace period: {took:?}");
        assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
        let (_, closed) = read_until_closed(&mut half, Duration::from_secs(1)).await;
        assert!(closed, "the half-request client is still connected after shutdown");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
    }
}
