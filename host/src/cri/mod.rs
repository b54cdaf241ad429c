//! Control: the pod source. Follows the node's pods through the container runtime's CRI socket
//! and keeps the attribution table in force.
//!
//! Input: the CRI socket (`--cri-socket`), polled every [`POLL_EVERY`] and, for 2 s after a
//! network interface appears (a pod's interface appears as its sandbox starts), every 100 ms;
//! the kernel's links and addresses (`netns`).
//! Output: the table ([`crate::pods::Table`]) published through [`Attribution`] after every good poll;
//! `wasmtap_host_pods`, `wasmtap_host_pod_source_up`, and the polls and errors as counters.
//!
//! A poll costs the runtime one `ListPodSandbox`, and a `PodSandboxStatus` for each sandbox
//! it has not seen before; nothing is asked per packet. When the runtime is down or answers
//! garbage, the last table stays in force (its pods keep running and keep their addresses),
//! the source is down, one warning is logged a minute, and the next poll tries again.

mod client;
mod netns;

pub use client::{Error, Reason};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::pods::{Attribution, Listing, Pod, workload};
use crate::telemetry::{SelfMetrics, Throttle};
use client::{Client, Listed, Status};
use netns::Netlink;

/// The sockets tried, in order, when none is named: containerd's, CRI-O's, cri-dockerd's.
pub const DEFAULT_SOCKETS: [&str; 3] =
    ["/run/containerd/containerd.sock", "/run/crio/crio.sock", "/run/cri-dockerd.sock"];
/// How often the runtime is polled: containerd 1.6 has no event stream, and the kubelet
/// itself relists every second.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// The poll interval after a new interface appears: a pod's sandbox is ready, and its address
/// known, a little after its interface is made, and its first packets should be attributed.
const FAST_EVERY: Duration = Duration::from_millis(100);
/// How long polls stay that fast after an interface appears.
const FAST_FOR: Duration = Duration::from_secs(2);
/// The least time between two warnings that the runtime cannot be read.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Sandboxes kept: far past any node's pod limit; a runtime listing more is answering
/// garbage, and the rest are left out.
const MAX_SANDBOXES: usize = 10_000;

/// The first socket of [`DEFAULT_SOCKETS`] that exists.
pub fn default_socket() -> Option<PathBuf> {
    DEFAULT_SOCKETS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The pod source's self-metrics.
#[derive(Clone)]
pub struct Metrics {
    pods: IntGauge,
    up: IntGauge,
    polls: IntCounter,
    errors: IntCounterVec,
}

impl Metrics {
    pub fn register(m: &SelfMetrics) -> prometheus::Result<Metrics> {
        let pods =
            m.gauge("wasmtap_host_pods", "Pods of this node in the attribution table.", &[])?;
        let up = m.gauge(
            "wasmtap_host_pod_source_up",
            "1 if the last poll of the container runtime (CRI) succeeded, else 0.",
            &[],
        )?;
        let polls = m.counter(
            "wasmtap_host_pod_polls_total",
            "Polls of the container runtime (CRI) for the node's pods.",
            &[],
        )?;
        let errors = m.counter(
            "wasmtap_host_pod_poll_errors_total",
            "Polls of the container runtime (CRI) that failed, by reason.",
            &["reason"],
        )?;
        for r in Reason::ALL {
            errors.with_label_values(&[r.as_str()]);
        }
        Ok(Metrics {
            pods: pods.with_label_values(&[] as &[&str]),
            up: up.with_label_values(&[] as &[&str]),
            polls: polls.with_label_values(&[] as &[&str]),
            errors,
        })
    }

    /// The metrics of a fixed table (`--pods`): its pods, and a source that is up.
    pub fn fixed(&self, pods: usize) {
        self.pods.set(i64::try_from(pods).unwrap_or(i64::MAX));
        self.up.set(1);
    }
}

/// A sandbox seen before: what its status said, and its namespace's id once known.
struct Known {
    listed: Listed,
    status: Status,
    nsid: Option<i32>,
}

/// Follows the runtime on `socket` into `attribution` for ever (the task is dropped at exit).
pub async fn follow(socket: PathBuf, attribution: Arc<Attribution>, metrics: Metrics) {
    let mut client = None;
    let mut known = HashMap::new();
    let warnings = Throttle::new(WARN_EVERY);
    let mut links = subscribe_links();
    let mut fast_until = Instant::now();
    let mut was_up = None;
    let mut seen = HashSet::new();
    loop {
        let polled = tokio::time::Instant::now();
        metrics.polls.inc();
        match poll(&socket, &mut client, &mut known).await {
            Ok(listing) => {
                metrics.pods.set(i64::try_from(listing.pods.len()).unwrap_or(i64::MAX));
                metrics.up.set(1);
                if was_up == Some(false) {
                    tracing::info!(socket = %socket.display(), "the container runtime answers again; pods are attributed");
                }
                was_up = Some(true);
                attribution.publish(listing);
            }
            Err(e) => {
                client = None;
                metrics.errors.with_label_values(&[e.reason().as_str()]).inc();
                metrics.up.set(0);
                attribution.set_up(false);
                was_up = Some(false);
                if warnings.ready() {
                    tracing::warn!(
                        "pods are not attributed anew: {e}; trying again every {POLL_EVERY:?}"
                    );
                }
            }
        }
        // The next poll: a new interface brings it forward, but never closer than
        // FAST_EVERY to the last, however many links come or change.
        loop {
            let every = if Instant::now() < fast_until { FAST_EVERY } else { POLL_EVERY };
            tokio::select! {
                () = tokio::time::sleep_until(polled + every) => break,
                new = next_new_link(&mut links, &mut seen) => {
                    if new {
                        fast_until = Instant::now() + FAST_FOR;
                    }
                }
            }
        }
    }
}

/// The link events of this namespace: a new interface may be a new pod's.
type LinkEvents = Option<(
    futures_util::stream::BoxStream<'static, RouteNetlinkMessage>,
    tokio::task::JoinHandle<()>,
)>;

fn subscribe_links() -> LinkEvents {
    match rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link]) {
        Ok((conn, _, events)) => {
            let task = tokio::spawn(conn);
            let events = events.filter_map(|(m, _)| async move {
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => Some(inner),
                    _ => None,
                }
            });
            Some((events.boxed(), task))
        }
        Err(e) => {
            tracing::warn!(
                "following links for new pods failed ({e}); polling every {POLL_EVERY:?} only"
            );
            None
        }
    }
}

/// Waits for the next link event; true for a link whose index `seen` did not hold (the
/// kernel also sends "new link" when a known one changes: up, down, carrier, MTU). Never ends
/// without events.
async fn next_new_link(links: &mut LinkEvents, seen: &mut HashSet<u32>) -> bool {
    let Some((events, _)) = links else { return std::future::pending().await };
    match events.next().await {
        Some(RouteNetlinkMessage::NewLink(m)) => seen.insert(m.header.index),
        Some(RouteNetlinkMessage::DelLink(m)) => {
            seen.remove(&m.header.index);
            false
        }
        Some(_) => false,
        None => {
            *links = None;
            false
        }
    }
}

/// One poll: the sandboxes, the status of new ones, and the node's side of their network.
async fn poll(
    socket: &Path,
    client: &mut Option<Client>,
    known: &mut HashMap<String, Known>,
) -> Result<Listing, Error> {
    let c = match client {
        Some(c) => c,
        None => client.insert(Client::connect(socket).await?),
    };
    let mut listed = c.list().await?;
    listed.retain(|s| s.ready);
    if listed.len() > MAX_SANDBOXES {
        tracing::warn!(
            listed = listed.len(),
            "the runtime lists more sandboxes than {MAX_SANDBOXES}; the rest are left out"
        );
        listed.truncate(MAX_SANDBOXES);
    }
    known.retain(|id, _| listed.iter().any(|s| &s.id == id));
    for s in listed {
        if let Some(k) = known.get_mut(&s.id) {
            k.listed = s;
            continue;
        }
        let status = match c.status(&s.id).await {
            Ok(status) => status,
            // Gone between the two calls, say: asked again at the next poll.
            Err(Error::Call { message, .. }) => {
                tracing::debug!(sandbox = %s.id, "sandbox status: {message}");
                continue;
            }
            Err(e) => return Err(e),
        };
        known.insert(s.id.clone(), Known { listed: s, status, nsid: None });
    }
    let (node_addresses, peers) = node_side(known).await;
    let mut sandboxes: Vec<&Known> = known.values().collect();
    // Newest first: of two sandboxes that list one address, the newer holds it.
    sandboxes.sort_by(|a, b| {
        (b.listed.created_at, &b.listed.id).cmp(&(a.listed.created_at, &a.listed.id))
    });
    let pods = sandboxes
        .into_iter()
        .map(|k| Pod {
            namespace: k.listed.namespace.clone(),
            name: k.listed.name.clone(),
            uid: k.listed.uid.clone(),
            workload: workload(&k.listed.name, &k.listed.labels),
            // A hostNetwork pod's addresses are the node's.
            addresses: if k.status.host_network { Vec::new() } else { k.status.addresses.clone() },
            interface: k.nsid.and_then(|n| peers.get(&n)).and_then(|l| l.first().cloned()),
        })
        .collect();
    let source = format!("cri:{}", socket.display());
    Ok(Listing { source, up: true, node_addresses, pods })
}

/// The node's addresses, and the links into other namespaces by namespace id, with the ids of
/// new sandboxes' namespaces filled in. A netlink failure leaves them empty for this poll.
async fn node_side(
    known: &mut HashMap<String, Known>,
) -> (Vec<std::net::IpAddr>, HashMap<i32, Vec<String>>) {
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            tracing::debug!("{e}");
            return Default::default();
        }
    };
    for k in known.values_mut().filter(|k| k.nsid.is_none()) {
        if let Some(path) = &k.status.netns {
            k.nsid = nl.nsid(path).await;
        }
    }
    let addresses = nl.addresses().await.unwrap_or_default();
    let peers = nl.peers().await.unwrap_or_default();
    (addresses, peers)
}
