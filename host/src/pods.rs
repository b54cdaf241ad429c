//! Attribution table: which pod of this node holds an address or an interface.
//!
//! Input: pods as the container runtime describes them (from `cri`, live), or as a `/pods`
//! JSON file (`--pods`, for a replay or a node without runtime access), and the node's own
//! addresses.
//! Output: a [`Table`] published through [`Attribution`], which the registry reads without a
//! lock when it applies an update: an address → the [`Owner`] (namespace, workload, pod), an
//! interface name → the pod behind it. Also the JSON that `GET /pods` serves and `--pods`
//! reads.
//!
//! The workload of a pod is derived from the labels the kubelet copies from the pod onto its
//! sandbox ([`workload`]): a Job's pod → the Job, a Deployment's → the Deployment, a
//! StatefulSet's or DaemonSet's → its controller, a bare pod → itself.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// The workload of the node's own addresses (hostNetwork pods share them).
pub const NODE_WORKLOAD: &str = "node";

/// Who holds an address or an interface: the values of the namespace, workload and pod
/// labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: Arc<str>,
    pub workload: Arc<str>,
    pub pod: Arc<str>,
}

/// One pod of the node, as `/pods` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    /// Derived by [`workload`] when a file leaves it out.
    #[serde(default)]
    pub workload: String,
    pub addresses: Vec<IpAddr>,
    /// The pod's host-side interface, when known.
    #[serde(default)]
    pub interface: Option<String>,
}

/// The attribution table: what `/pods` shows and `--pods` reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Listing {
    /// Where the table comes from: `cri:SOCKET` or `file:PATH`.
    #[serde(default)]
    pub source: String,
    /// Whether the last poll of the source succeeded.
    #[serde(default)]
    pub up: bool,
    #[serde(default)]
    pub node_addresses: Vec<IpAddr>,
    pub pods: Vec<Pod>,
}

/// Why a `--pods` file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading pods file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("pods file {path} is not the JSON of GET /pods: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("pods file {path} is {got} bytes, over the limit of {limit}")]
    TooLarge { path: String, got: u64, limit: u64 },
}

/// The largest `--pods` file read: a node's pods take a few hundred bytes each, so this holds
/// a table far past any node's pod limit (10 000 pods are about 2 MiB).
const MAX_FILE_BYTES: u64 = 64 << 20;

impl Listing {
    /// Reads a `--pods` file: the JSON of `GET /pods`. A pod without a workload gets one by
    /// the rule of [`workload`] (from its name alone).
    pub fn from_file(path: &Path) -> Result<Listing, FileError> {
        let shown = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|source| FileError::Read { path: shown.clone(), source })?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(FileError::TooLarge { path: shown, got: len, limit: MAX_FILE_BYTES });
        }
        let text = std::fs::read(path)
            .map_err(|source| FileError::Read { path: shown.clone(), source })?;
        let mut listing: Listing = serde_json::from_slice(&text)
            .map_err(|source| FileError::Parse { path: shown.clone(), source })?;
        for pod in &mut listing.pods {
            if pod.workload.is_empty() {
                pod.workload = workload(&pod.name, &BTreeMap::new());
            }
        }
        listing.source = format!("file:{shown}");
        listing.up = true;
        Ok(listing)
    }
}

/// A listing with its lookups built.
#[derive(Debug, Default)]
pub struct Table {
    listing: Listing,
    by_address: HashMap<IpAddr, Owner, foldhash::fast::RandomState>,
    by_interface: HashMap<Arc<str>, Owner, foldhash::fast::RandomState>,
}

impl Table {
    /// Builds the lookups. The node's addresses belong to the node, whatever pod lists them
    /// (hostNetwork pods do); among pods that list the same address, the first in the
    /// listing holds it (the runtime's source puts ready and newer sandboxes first).
    pub fn new(listing: Listing) -> Table {
        let mut by_address = HashMap::default();
        let node = Owner { namespace: "".into(), workload: NODE_WORKLOAD.into(), pod: "".into() };
        for a in &listing.node_addresses {
            by_address.insert(*a, node.clone());
        }
        let mut by_interface = HashMap::default();
        for p in &listing.pods {
            let owner = Owner {
                namespace: p.namespace.as_str().into(),
                workload: p.workload.as_str().into(),
                pod: p.name.as_str().into(),
            };
            for a in &p.addresses {
                by_address.entry(*a).or_insert_with(|| owner.clone());
            }
            if let Some(i) = &p.interface {
                by_interface.entry(Arc::from(i.as_str())).or_insert(owner);
            }
        }
        Table { listing, by_address, by_interface }
    }

    pub fn listing(&self) -> &Listing {
        &self.listing
    }

    /// The owner of an address, if a pod of this node or the node holds it.
    pub fn address(&self, a: &IpAddr) -> Option<&Owner> {
        self.by_address.get(a)
    }

    /// The pod behind a host-side interface.
    pub fn interface(&self, name: &str) -> Option<&Owner> {
        self.by_interface.get(name)
    }
}

/// The table in force, swapped whole by its source and read without a lock.
#[derive(Debug)]
pub struct Attribution {
    table: ArcSwap<Table>,
}

impl Attribution {
    pub fn new(table: Table) -> Attribution {
        Attribution { table: ArcSwap::from_pointee(table) }
    }

    /// The table in force; one load per batch of updates.
    pub fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Puts a new table in force; updates made from now on use it.
    pub fn publish(&self, table: Table) {
        self.table.store(Arc::new(table));
    }

    /// Marks the source down or up, keeping the table: the pods of a runtime that restarts
    /// keep running and keep their addresses.
    pub fn set_up(&self, up: bool) {
        let current = self.table.load();
        if current.listing.up != up {
            let mut listing = current.listing.clone();
            listing.up = up;
            self.publish(Table::new(listing));
        }
    }
}

/// The workload a pod belongs to, from its name and the labels the kubelet copies from the pod:
/// 1. `batch.kubernetes.io/job-name` or `job-name` → that Job;
/// 2. `pod-template-hash` H with a name `X-H-…` → the Deployment X (its ReplicaSet is `X-H`);
/// 3. `statefulset.kubernetes.io/pod-name` with a name `X-N`, N digits → the StatefulSet X;
/// 4. `controller-revision-hash` and `pod-template-generation` with a name `X-…` → the
///    DaemonSet X;
/// 5. otherwise the pod's own name.
pub fn workload(name: &str, labels: &BTreeMap<String, String>) -> String {
    let label = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some(job) = label("batch.kubernetes.io/job-name").or_else(|| label("job-name")) {
        return job.to_owned();
    }
    if let Some(hash) = label("pod-template-hash")
        && let Some(at) = name.rfind(&format!("-{hash}-"))
        && at > 0
    {
        return name[..at].to_owned();
    }
    if label("statefulset.kubernetes.io/pod-name").is_some()
        && let Some((base, ordinal)) = name.rsplit_once('-')
        && !base.is_empty()
        && !ordinal.is_empty()
        && ordinal.bytes().all(|b| b.is_ascii_digit())
    {
        return base.to_owned();
    }
    if label("controller-revision-hash").is_some()
        && label("pod-template-generation").is_some()
        && let Some((base, _)) = name.rsplit_once('-')
        && !base.is_empty()
    {
        return base.to_owned();
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn workloads_follow_the_controllers_naming() {
        let deploy = labels(&[("app", "web"), ("pod-template-hash", "7d9f8b6c4")]);
        assert_eq!(workload("web-front-7d9f8b6c4-x2x9z", &deploy), "web-front");
        // A hash that is not in the name: the pod is not named by its ReplicaSet.
        assert_eq!(workload("odd-name", &deploy), "odd-name");
        let sts = labels(&[
            ("statefulset.kubernetes.io/pod-name", "db-12"),
            ("controller-revision-hash", "db-5c8"),
        ]);
        assert_eq!(workload("db-12", &sts), "db");
        let ds = labels(&[("controller-revision-hash", "6b9"), ("pod-template-generation", "1")]);
        assert_eq!(workload("node-agent-k8x2p", &ds), "node-agent");
        let job = labels(&[("batch.kubernetes.io/job-name", "backup-28391"), ("job-name", "x")]);
        assert_eq!(workload("backup-28391-abcde", &job), "backup-28391");
        assert_eq!(workload("migrate-q7", &labels(&[("job-name", "migrate")])), "migrate");
        assert_eq!(workload("debug", &labels(&[("run", "debug")])), "debug");
    }

    #[test]
    fn node_addresses_win_and_the_first_pod_holds_a_shared_address() {
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let n: IpAddr = "192.0.2.1".parse().unwrap();
        let pod = |name: &str, addrs: Vec<IpAddr>| Pod {
            namespace: "shop".into(),
            name: name.into(),
            uid: String::new(),
            workload: name.into(),
            addresses: addrs,
            interface: Some(format!("veth-{name}")),
        };
        let listing = Listing {
            source: "file:x".into(),
            up: true,
            node_addresses: vec![n],
            pods: vec![pod("new", vec![a]), pod("old", vec![a]), pod("host", vec![n])],
        };
        let t = Table::new(listing);
        assert_eq!(&*t.address(&a).unwrap().pod, "new");
        assert_eq!(&*t.address(&n).unwrap().workload, NODE_WORKLOAD);
        assert_eq!(&*t.interface("veth-old").unwrap().pod, "old");
        assert!(t.address(&"10.0.0.6".parse().unwrap()).is_none());
    }

    #[test]
    fn a_pods_file_is_the_json_of_get_pods() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        let json = r#"{"pods":[{"namespace":"a","name":"web-5f-abcde","addresses":["10.1.0.2"]}]}"#;
        std::fs::write(&path, json).unwrap();
        let l = Listing::from_file(&path).unwrap();
        assert_eq!(l.pods[0].workload, "web-5f-abcde");
        assert!(l.up && l.source.starts_with("file:"));
        std::fs::write(&path, "{\"pods\": 3}").unwrap();
        let e = Listing::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("pods.json") && e.contains("not the JSON of GET /pods"), "{e}");
    }
}
