//! Pod source, protocol: the read RPCs of the CRI runtime service over its unix socket.
//!
//! Input: the runtime's socket path.
//! Output: the node's pod sandboxes ([`Client::list`]) and, for a new one, what its verbose
//! status says ([`Client::status`]): addresses, network namespace and whether it shares the
//! node's network. Only `ListPodSandbox` and `PodSandboxStatus` are ever called.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ListPodSandboxRequest, NamespaceMode, PodSandboxState, PodSandboxStatusRequest};
use tonic::transport::{Channel, Endpoint};

/// The bound on one call, connecting included: a runtime that hangs is a runtime that is down.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer read: a `ListPodSandbox` of a few thousand sandboxes with their labels
/// fits many times over; a runtime that answers more is answering garbage.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why a poll of the runtime failed; the reason label of the error counter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the CRI socket {socket}: {message}")]
    Connect { socket: String, message: String },
    #[error("{rpc} on the CRI socket {socket}: {message}")]
    Call { rpc: &'static str, socket: String, message: String },
    #[error("{rpc} on the CRI socket {socket} took over {CALL_TIMEOUT:?}")]
    Timeout { rpc: &'static str, socket: String },
}

impl Error {
    /// The `reason` label of `wasmtap_host_pod_poll_errors_total`.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Connect { .. } => Reason::Connect,
            Error::Call { .. } => Reason::Call,
            Error::Timeout { .. } => Reason::Timeout,
        }
    }
}

/// Why a poll failed, as the error counter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Connect,
    Call,
    Timeout,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Connect, Reason::Call, Reason::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Call => "call",
            Reason::Timeout => "timeout",
        }
    }
}

/// One sandbox as `ListPodSandbox` gives it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ready: bool,
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
}

/// What a sandbox's verbose status adds.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub addresses: Vec<IpAddr>,
    /// Shares the node's network namespace (a hostNetwork pod).
    pub host_network: bool,
    /// Its network namespace, as a path this process can open.
    pub netns: Option<PathBuf>,
}

/// A connection to the runtime service.
pub struct Client {
    socket: PathBuf,
    service: RuntimeServiceClient<Channel>,
}

impl Client {
    /// Connects to the runtime service on `socket`.
    pub async fn connect(socket: &Path) -> Result<Client, Error> {
        let shown = socket.display().to_string();
        let fail = |message: String| Error::Connect { socket: shown.clone(), message };
        // The URI is required and ignored: the connector opens the socket.
        let endpoint = Endpoint::try_from("http://localhost")
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let path = socket.to_path_buf();
        let connector = tower::service_fn(move |_| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        });
        let channel =
            tokio::time::timeout(CALL_TIMEOUT, endpoint.connect_with_connector(connector))
                .await
                .map_err(|_| fail(format!("no answer within {CALL_TIMEOUT:?}")))?
                .map_err(|e| fail(source_chain(&e)))?;
        let service =
            RuntimeServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client { socket: socket.to_path_buf(), service })
    }

    fn error(&self, rpc: &'static str, status: &tonic::Status) -> Error {
        let socket = self.socket.display().to_string();
        if status.code() == tonic::Code::Cancelled || status.code() == tonic::Code::DeadlineExceeded
        {
            return Error::Timeout { rpc, socket };
        }
        let message = format!("{}: {}", status.code(), status.message());
        Error::Call { rpc, socket, message }
    }

    /// Every pod sandbox of the node.
    pub async fn list(&mut self) -> Result<Vec<Listed>, Error> {
        const RPC: &str = "ListPodSandbox";
        let call = self.service.list_pod_sandbox(ListPodSandboxRequest { filter: None });
        let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
        let socket = self.socket.display().to_string();
        let answer = answer.map_err(|_| Error::Timeout { rpc: RPC, socket })?;
        let items = answer.map_err(|s| self.error(RPC, &s))?.into_inner().items;
        Ok(items
            .into_iter()
            .filter_map(|s| {
                let m = s.metadata?;
                Some(Listed {
                    id: s.id,
                    namespace: m.namespace,
                    name: m.name,
                    uid: m.uid,
                    ready: s.state == PodSandboxState::SandboxReady as i32,
                    created_at: s.created_at,
                    labels: s.labels.into_iter().collect(),
                })
            })
            .collect())
    }

    /// A sandbox's verbose status.
    pub async fn status(&mut self, id: &str) -> Result<Status, Error> {
        const RPC: &str = "PodSandboxStatus";
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: true };
        let call = self.service.pod_sandbox_status(request);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
        let socket = self.socket.display().to_string();
        let answer = answer.map_err(|_| Error::Timeout { rpc: RPC, socket })?;
        let answer = answer.map_err(|s| self.error(RPC, &s))?.into_inner();
        let mut out = Status::default();
        if let Some(status) = &answer.status {
            if let Some(n) = &status.network {
                let ips = std::iter::once(&n.ip).chain(n.additional_ips.iter().map(|p| &p.ip));
                out.addresses = ips.filter_map(|ip| ip.parse().ok()).collect();
            }
            let network = status
                .linux
                .as_ref()
                .and_then(|l| l.namespaces.as_ref())
                .and_then(|n| n.options.as_ref())
                .map(|o| o.network);
            out.host_network = network == Some(NamespaceMode::Node as i32);
        }
        out.netns = answer.info.get("info").and_then(|info| netns_path(info));
        Ok(out)
    }
}

/// The network namespace in a verbose status' `info` JSON: the path in the runtime spec's
/// namespaces (containerd, CRI-O), else `/proc/PID/ns/net` of the sandbox's process.
fn netns_path(info: &str) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(info).ok()?;
    let from_spec = info
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array())
        .and_then(|all| {
            all.iter().find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
        })
        .and_then(|n| n.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    from_spec.or_else(|| {
        let pid = info.get("pid")?.as_u64().filter(|p| *p > 0)?;
        Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
    })
}

/// An error with its causes, as tonic's transport errors say little on their own.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_netns_comes_from_the_runtime_spec_or_the_sandbox_process() {
        let containerd = r#"{"pid": 42, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1234"}]}}}"#;
        assert_eq!(netns_path(containerd), Some(PathBuf::from("/var/run/netns/cni-1234")));
        let no_path = r#"{"pid": 42, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "network"}]}}}"#;
        assert_eq!(netns_path(no_path), Some(PathBuf::from("/proc/42/ns/net")));
        assert_eq!(netns_path("not json"), None);
        assert_eq!(netns_path(r#"{"pid": 0}"#), None);
    }

    /// A socket that accepts and then does `serve` with each connection.
    fn fake_runtime(
        dir: &Path,
        serve: impl Fn(tokio::net::UnixStream) -> tokio::task::JoinHandle<()> + Send + 'static,
    ) -> PathBuf {
        let socket = dir.join("runtime.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream);
            }
        });
        socket
    }

    #[tokio::test]
    async fn a_runtime_that_answers_garbage_is_an_error_naming_the_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_runtime(dir.path(), |mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot a gRPC answer at all").await;
            })
        });
        let started = std::time::Instant::now();
        let outcome = match Client::connect(&socket).await {
            Ok(mut c) => c.list().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = outcome.expect_err("garbage taken for sandboxes");
        assert!(e.to_string().contains("runtime.sock"), "{e}");
        assert!(started.elapsed() < CALL_TIMEOUT * 3, "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_runtime_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        // Accepts and holds every connection, reading nothing.
        let socket = fake_runtime(dir.path(), |s| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(s);
            })
        });
        let started = std::time::Instant::now();
        let outcome = match Client::connect(&socket).await {
            Ok(mut c) => c.list().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = outcome.expect_err("an answer from a runtime that never answers");
        assert!(matches!(e.reason(), Reason::Timeout | Reason::Connect), "{e}");
        assert!(e.to_string().contains("runtime.sock"), "{e}");
        assert!(started.elapsed() < CALL_TIMEOUT * 3, "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let Err(e) = Client::connect(&socket).await else { panic!("connected to nothing") };
        assert_eq!(e.reason(), Reason::Connect);
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
}
