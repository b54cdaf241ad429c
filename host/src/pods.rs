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

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// The workload of the node's own addresses (hostNetwork pods share them).
pub const NODE_WORKLOAD: &str = "node";

/// Who holds an address or an interface: the values of the namespace, workload and pod
/// labels. One label value of a series key stands for all three, so an update carries one
/// shared pointer per end rather than three strings, and a key hashes a precomputed number.
/// Two owners are equal when their three values are, whichever tables they come from.
#[derive(Debug)]
pub struct Owner {
    fields: [Box<str>; 3],
    hash: u64,
    /// This owner with some fields emptied (a label policy that drops some of the three),
    /// made once per combination; indexed by the bits of the fields kept.
    reduced: [OnceLock<Arc<Owner>>; 8],
}

/// The hash of an owner's values: fixed seeds, so equal owners hash alike in every table.
fn owner_hash(fields: &[&str; 3]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(fields)
}

impl Owner {
    pub fn new(namespace: &str, workload: &str, pod: &str) -> Arc<Owner> {
        let fields = [namespace, workload, pod];
        let hash = owner_hash(&fields);
        Arc::new(Owner { fields: fields.map(Box::from), hash, reduced: Default::default() })
    }

    /// Namespace, workload and pod.
    pub fn fields(&self) -> [&str; 3] {
        [&self.fields[0], &self.fields[1], &self.fields[2]]
    }

    pub fn namespace(&self) -> &str {
        &self.fields[0]
    }

    pub fn workload(&self) -> &str {
        &self.fields[1]
    }

    pub fn pod(&self) -> &str {
        &self.fields[2]
    }

    /// This owner with the fields not in `keep` (namespace, workload, pod) emptied.
    pub fn reduced(self: &Arc<Self>, keep: [bool; 3]) -> &Arc<Owner> {
        if keep == [true; 3] {
            return self;
        }
        let bits = keep.iter().enumerate().fold(0, |b, (i, k)| b | (usize::from(*k) << i));
        self.reduced[bits].get_or_init(|| {
            let [n, w, p] = self.fields();
            let f = |s: &'static str, i: usize| if keep[i] { [n, w, p][i] } else { s };
            Owner::new(f("", 0), f("", 1), f("", 2))
        })
    }
}

impl PartialEq for Owner {
    fn eq(&self, other: &Owner) -> bool {
        std::ptr::eq(self, other) || (self.hash == other.hash && self.fields == other.fields)
    }
}

impl Eq for Owner {}

impl Hash for Owner {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Ord for Owner {
    fn cmp(&self, other: &Owner) -> Ordering {
        self.fields.cmp(&other.fields)
    }
}

impl PartialOrd for Owner {
    fn partial_cmp(&self, other: &Owner) -> Option<Ordering> {
        Some(self.cmp(other))
    }
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    by_address: HashMap<IpAddr, Arc<Owner>, foldhash::fast::RandomState>,
    by_interface: HashMap<Arc<str>, Arc<Owner>, foldhash::fast::RandomState>,
    /// Every pod's owner by (namespace, pod), so that the next table shares them.
    owners: HashMap<(Box<str>, Box<str>), Arc<Owner>>,
}

impl Table {
    /// Builds the lookups. The node's addresses belong to the node, whatever pod lists them
    /// (hostNetwork pods do); among pods that list the same address, the first in the
    /// listing holds it (the runtime's source puts ready and newer sandboxes first).
    pub fn new(listing: Listing) -> Table {
        Table::after(listing, None)
    }

    /// Builds the lookups, sharing the owners of `previous` that are unchanged: series keys
    /// made from either table then compare by pointer.
    pub fn after(listing: Listing, previous: Option<&Table>) -> Table {
        let mut by_address = HashMap::default();
        let node = previous
            .and_then(|t| t.owners.get(&(Box::from(""), Box::from(""))))
            .cloned()
            .unwrap_or_else(|| Owner::new("", NODE_WORKLOAD, ""));
        for a in &listing.node_addresses {
            by_address.insert(*a, node.clone());
        }
        let mut owners = HashMap::new();
        owners.insert((Box::from(""), Box::from("")), node);
        let mut by_interface = HashMap::default();
        for p in &listing.pods {
            let key = (Box::from(p.namespace.as_str()), Box::from(p.name.as_str()));
            let owner = previous
                .and_then(|t| t.owners.get(&key))
                .filter(|o| o.workload() == p.workload)
                .cloned()
                .unwrap_or_else(|| Owner::new(&p.namespace, &p.workload, &p.name));
            for a in &p.addresses {
                by_address.entry(*a).or_insert_with(|| owner.clone());
            }
            if let Some(i) = &p.interface {
                by_interface.entry(Arc::from(i.as_str())).or_insert_with(|| owner.clone());
            }
            owners.entry(key).or_insert(owner);
        }
        Table { listing, by_address, by_interface, owners }
    }

    pub fn listing(&self) -> &Listing {
        &self.listing
    }

    /// The owner of an address, if a pod of this node or the node holds it.
    pub fn address(&self, a: &IpAddr) -> Option<&Arc<Owner>> {
        self.by_address.get(a)
    }

    /// The pod behind a host-side interface.
    pub fn interface(&self, name: &str) -> Option<&Arc<Owner>> {
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

    /// Puts a table of `listing` in force, sharing the unchanged owners of the one it
    /// replaces; updates made from now on use it.
    pub fn publish(&self, listing: Listing) {
        let current = self.table.load();
        if current.listing == listing {
            // A poll that found nothing new: the table in force stays.
            return;
        }
        let table = Table::after(listing, Some(&current));
        self.table.store(Arc::new(table));
    }

    /// Marks the source down or up, keeping the table: the pods of a runtime that restarts
    /// keep running and keep their addresses.
    pub fn set_up(&self, up: bool) {
        let current = self.table.load();
        if current.listing.up != up {
            let mut listing = current.listing.clone();
            listing.up = up;
            self.publish(listing);
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
        assert_eq!(t.address(&a).unwrap().pod(), "new");
        assert_eq!(t.address(&n).unwrap().workload(), NODE_WORKLOAD);
        assert_eq!(t.interface("veth-old").unwrap().pod(), "old");
        assert!(t.address(&"10.0.0.6".parse().unwrap()).is_none());
        // The next table shares the owners that did not change.
        let next = Table::after(t.listing().clone(), Some(&t));
        assert!(Arc::ptr_eq(next.address(&a).unwrap(), t.address(&a).unwrap()));
        let web = Owner::new("shop", "web", "web-1");
        let other = Owner::new("shop", "web", "web-2");
        assert_ne!(web, other);
        let (a, b) = (web.reduced([true, true, false]), other.reduced([true, true, false]));
        assert_eq!(a, b);
        assert_eq!(a.fields(), ["shop", "web", ""]);
        assert!(Arc::ptr_eq(a, web.reduced([true, true, false])));
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
