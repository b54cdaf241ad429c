//! The tests' HTTP client: `GET path` from a server, the status and the body. A server in this
//! process's network namespace is asked over a socket of this process ([`get`], fast enough to
//! time answers of a few milliseconds); one inside a test namespace, which no thread here can
//! enter, with curl run there ([`get_in`]). Every request is bounded in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::process::{require_tools, run_with_timeout};
use super::topology::netns_exec;

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body of a 2xx answer; `None` for any other status.
    pub fn ok(self) -> Option<String> {
        (200..300).contains(&self.status).then_some(self.body)
    }
}

/// `GET path` from `addr` over HTTP/1.1, the whole exchange bounded by `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut s = TcpStream::connect_timeout(&addr, left()).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        s.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read after {} bytes: {e}", raw.len())),
        }
        if Instant::now() >= deadline {
            return Err(format!("no complete answer within {timeout:?}"));
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body)? } else { body.to_owned() };
    Ok(Response { status, body })
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk size")?;
        let size =
            usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk size: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or("truncated chunk")?);
        rest = after.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// `GET path` from `addr` as seen from inside namespace `ns` (curl there), bounded by
/// `timeout`.
pub fn get_in(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Response, String> {
    require_tools(&["curl"]);
    let url = format!("http://{addr}{path}");
    let secs = format!("{:.3}", timeout.as_secs_f64());
    // The status on a line of its own after the body (which may lack a final newline).
    let r = run_with_timeout(
        netns_exec(ns, "curl").args(["-s", "--max-time", &secs, "-w", "\n%{http_code}", &url]),
        timeout + Duration::from_secs(5),
    );
    if !r.success() {
        return Err(format!("curl {url} in {ns}: {}", r.describe()));
    }
    let (body, status) = r.stdout.rsplit_once('\n').ok_or("no status from curl")?;
    let status: u16 =
        status.trim().parse().map_err(|e| format!("curl's status {status:?}: {e}"))?;
    Ok(Response { status, body: body.to_owned() })
}
