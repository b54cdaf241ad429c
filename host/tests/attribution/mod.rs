//! Shared by the pod attribution tests (`root_pods`): who each series should name, from the
//! container runtime's answer (PodSandboxStatus: a pod's metadata and address) and the
//! kernel's (a pod's host-side interface), with the names the test chose; the check of every
//! series against that ([`Expected::mismatches`]); the host's `GET /pods`; and what scrapes
//! showed of pods that come and go ([`Sightings`]).
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::cri::{CriNode, Pod, PodSpec};
use crate::common::live::{LiveHost, POLL_INTERVAL};
use crate::common::{Sample, as_count, value_of};

/// The namespace, workload and pod that a series names for one address or interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub workload: String,
    pub pod: String,
}

impl Owner {
    pub fn new(namespace: &str, workload: &str, pod: &str) -> Owner {
        Owner { namespace: namespace.into(), workload: workload.into(), pod: pod.into() }
    }

    /// The owner of the node's own addresses.
    pub fn node() -> Owner {
        Owner::new("", "node", "")
    }

    /// The labels `PREFIXnamespace`, `PREFIXworkload` and `PREFIXpod` of `s`; `None` if one
    /// is missing.
    pub fn of(s: &Sample, prefix: &str) -> Option<Owner> {
        let get = |label: &str| s.labels.get(&format!("{prefix}{label}")).cloned();
        Some(Owner { namespace: get("namespace")?, workload: get("workload")?, pod: get("pod")? })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{:?}/{:?}", self.namespace, self.workload, self.pod)
    }
}

/// Who each address and host-side interface belongs to, from the runtime's and the kernel's
/// answers; any other address or interface belongs to no one (empty labels).
pub struct Expected {
    by_address: BTreeMap<IpAddr, Owner>,
    by_device: BTreeMap<String, Owner>,
    /// Addresses and interfaces of pods made while the host ran. A pod's interface sends a few
    /// frames while it comes up, before the runtime lists the pod, and its first packets can
    /// come before the host's next poll: empty labels are right for those series too.
    late: BTreeSet<String>,
}

impl Expected {
    /// Only the node's address, so far.
    pub fn new(node: &CriNode) -> Expected {
        let node_address: IpAddr = node.node_address().parse().expect("the node's address");
        Expected {
            by_address: [(node_address, Owner::node())].into(),
            by_device: BTreeMap::new(),
            late: BTreeSet::new(),
        }
    }

    /// Adds `pod`, made from `spec` as a pod of `workload`: the runtime's PodSandboxStatus must
    /// name it as the test asked; its address comes from that answer and its host-side
    /// interface from the kernel.
    pub fn add(&mut self, node: &CriNode, spec: &PodSpec, pod: &Pod, workload: &str) -> Owner {
        let status = node.status(&pod.id);
        let meta = status.metadata();
        assert_eq!(
            (meta.namespace.as_str(), meta.name.as_str(), meta.uid.as_str()),
            (spec.namespace.as_str(), spec.name.as_str(), spec.uid.as_str()),
            "PodSandboxStatus of {}",
            pod.name
        );
        assert!(status.ready(), "{} is not ready: {status:?}", pod.name);
        let owner = Owner::new(&meta.namespace, workload, &meta.name);
        let address: IpAddr = status
            .ip()
            .parse()
            .unwrap_or_else(|e| panic!("{}: address {:?}: {e}", pod.name, status.ip()));
        self.by_address.insert(address, owner.clone());
        self.by_device.insert(pod.host_interface(), owner.clone());
        owner
    }

    /// [`Expected::add`] for a pod made while the host runs.
    pub fn add_late(&mut self, node: &CriNode, spec: &PodSpec, pod: &Pod, workload: &str) -> Owner {
        let owner = self.add(node, spec, pod, workload);
        self.late.insert(pod.ip.clone());
        self.late.insert(pod.host_interface());
        owner
    }

    pub fn address(&self, a: &str) -> Owner {
        a.parse::<IpAddr>().ok().and_then(|a| self.by_address.get(&a)).cloned().unwrap_or_default()
    }

    pub fn device(&self, d: &str) -> Owner {
        self.by_device.get(d).cloned().unwrap_or_default()
    }

    /// Every analyzer series whose namespace, workload or pod labels are not what its
    /// addresses and interface call for, one line per series end; empty when all are right.
    pub fn mismatches(&self, samples: &[Sample]) -> Vec<String> {
        let mut out = Vec::new();
        for s in samples.iter().filter(|s| is_analyzer(s)) {
            for (prefix, key, want) in self.ends(s) {
                let got = Owner::of(s, prefix);
                let late_and_empty = self.late.contains(&key) && got == Some(Owner::default());
                if got.as_ref() != Some(&want) && !late_and_empty {
                    let got = got.map_or("missing".into(), |o| o.to_string());
                    out.push(format!(
                        "{}{:?}: {prefix}namespace/workload/pod {got}, expected {want} for {key}",
                        s.name, s.labels
                    ));
                }
            }
        }
        out
    }

    /// The series of a late pod's address or interface that name no one (see `late`), a
    /// histogram once (by its `_count`): family, address pair or interface, and value.
    pub fn late_unnamed(&self, samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .filter(|s| is_analyzer(s) && !s.name.ends_with("_bucket") && !s.name.ends_with("_sum"))
            .filter(|s| {
                self.ends(s).into_iter().any(|(prefix, key, _)| {
                    self.late.contains(&key) && Owner::of(s, prefix) == Some(Owner::default())
                })
            })
            .map(|s| {
                let at = |l: &str| s.labels.get(l).map_or("", String::as_str);
                format!(
                    "{}{{{} -> {} on {}}} {}",
                    s.name,
                    at("src_ip"),
                    at("dst_ip"),
                    at("device"),
                    s.value
                )
            })
            .collect()
    }

    /// The ends of a series that attribution names: (label prefix, address or interface, its
    /// owner) for the source and destination of a per-pair series and a per-device series'
    /// interface.
    pub fn ends(&self, s: &Sample) -> Vec<(&'static str, String, Owner)> {
        let mut ends = Vec::new();
        if let (Some(src), Some(dst)) = (s.labels.get("src_ip"), s.labels.get("dst_ip")) {
            ends.push(("src_", src.clone(), self.address(src)));
            ends.push(("dst_", dst.clone(), self.address(dst)));
        }
        if let Some(d) = s.labels.get("device") {
            ends.push(("", d.clone(), self.device(d)));
        }
        ends
    }
}

/// A series of an analyzer's family, not one of the host's own.
pub fn is_analyzer(s: &Sample) -> bool {
    !s.name.starts_with("wasmtap_host_") && !s.name.starts_with("wasmtap_analyzer_")
}

/// Whether `s` is an analyzer's per-pair series that names `pod` at either end.
pub fn pair_names(s: &Sample, pod: &str) -> bool {
    is_analyzer(s)
        && ["src_pod", "dst_pod"].iter().any(|l| s.labels.get(*l).is_some_and(|p| p == pod))
}

/// Whether `s` is an analyzer's series that names `pod`, at an end or as its interface's.
pub fn names(s: &Sample, pod: &str) -> bool {
    pair_names(s, pod) || (is_analyzer(s) && s.labels.get("pod").is_some_and(|p| p == pod))
}

// ------------------------------------------------------------------------------------------
// The host's /pods and self-metrics

/// GET /pods, parsed.
pub fn listing(host: &LiveHost) -> Value {
    let body = host
        .get("/pods")
        .unwrap_or_else(|| panic!("{}: GET /pods failed:\n{}", host.what, host.log_tail()));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/pods is not JSON ({e}): {body}"))
}

/// The entry of `pod` in a `/pods` listing.
pub fn listed<'a>(listing: &'a Value, pod: &Pod) -> Option<&'a Value> {
    listing["pods"]
        .as_array()?
        .iter()
        .find(|p| p["namespace"] == pod.namespace.as_str() && p["name"] == pod.name.as_str())
}

/// Polls /pods (≤ 10 s) until each of `pods` is listed with a host-side interface; how long
/// that took.
pub fn wait_listed(host: &LiveHost, pods: &[&Pod]) -> Duration {
    let start = Instant::now();
    loop {
        let l = listing(host);
        if pods.iter().all(|p| listed(&l, p).is_some_and(|e| e["interface"].is_string())) {
            return start.elapsed();
        }
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: /pods does not list {names:?} with their interfaces within 10 s:\n{l:#}\n{}",
            host.what,
            host.log_tail()
        );
        thread::sleep(POLL_INTERVAL);
    }
}

/// `wasmtap_host_pod_source_up`, `None` when the series is absent.
pub fn source_up(samples: &[Sample]) -> Option<f64> {
    value_of(samples, "wasmtap_host_pod_source_up", &[])
}

/// The value of the label-less series `name` as a whole number, 0 when absent.
pub fn gauge(samples: &[Sample], name: &str) -> u64 {
    as_count(value_of(samples, name, &[]).unwrap_or(0.0), name)
}

// ------------------------------------------------------------------------------------------
// Series that name pods, scrape after scrape

/// A pod as a test made it: who it is, its address and its host-side interface.
#[derive(Debug, Clone)]
pub struct Made {
    pub owner: Owner,
    pub ip: String,
    pub device: String,
}

/// What scrapes showed of the pods other than some long-lived ones, recorded scrape by scrape
/// ([`Sightings::record`]) while the pods come and go; a test waits on it for a pod to be named
/// ([`Sightings::first_named`]).
pub struct Sightings {
    seen: Mutex<Seen>,
    changed: Condvar,
    /// The long-lived pods, whose series are not recorded.
    stable: BTreeSet<String>,
    /// The per-pair family counted per source pod on one interface ([`Seen::counts`]).
    counted: (&'static str, String),
}

/// What [`Sightings`] recorded.
#[derive(Default)]
pub struct Seen {
    pub scrapes: u64,
    /// A pod → the end of the first scrape that named it in a per-pair series.
    pub first: HashMap<String, Instant>,
    /// (pod, address) of every per-pair end that named a pod.
    pub addresses: BTreeSet<(String, String)>,
    /// (pod, interface) of every per-device series that named one.
    pub devices: BTreeSet<(String, String)>,
    /// Every owner a series named.
    pub owners: BTreeSet<Owner>,
    /// A pod → (scrape start, the counted family from it on the counted interface), for every
    /// scrape that had it.
    pub counts: HashMap<String, Vec<(Instant, u64)>>,
    /// Addresses whose series named two or more pods in one scrape, and those pods.
    pub shared: BTreeMap<String, BTreeSet<String>>,
}

impl Sightings {
    /// Records the pods other than `stable`, counting `family` per source pod on `device`.
    pub fn new(stable: BTreeSet<String>, family: &'static str, device: String) -> Sightings {
        Sightings {
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            stable,
            counted: (family, device),
        }
    }

    /// Records one scrape, taken from `start` to `end`.
    pub fn record(&self, start: Instant, end: Instant, samples: &[Sample]) {
        let recorded = |p: &String| !p.is_empty() && !self.stable.contains(p);
        let (family, device) = (self.counted.0, Some(&self.counted.1));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.scrapes += 1;
        let mut by_address: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut counts: HashMap<String, u64> = HashMap::new();
        for s in samples.iter().filter(|s| is_analyzer(s)) {
            for (prefix, address) in [("src_", "src_ip"), ("dst_", "dst_ip")] {
                let (Some(owner), Some(a)) = (Owner::of(s, prefix), s.labels.get(address)) else {
                    continue;
                };
                if !recorded(&owner.pod) {
                    continue;
                }
                seen.first.entry(owner.pod.clone()).or_insert(end);
                seen.addresses.insert((owner.pod.clone(), a.clone()));
                by_address.entry(a.clone()).or_default().insert(owner.pod.clone());
                if prefix == "src_" && s.name == family && s.labels.get("device") == device {
                    *counts.entry(owner.pod.clone()).or_default() += as_count(s.value, family);
                }
                seen.owners.insert(owner);
            }
            if let (Some(owner), Some(d)) = (Owner::of(s, ""), s.labels.get("device"))
                && recorded(&owner.pod)
            {
                seen.devices.insert((owner.pod.clone(), d.clone()));
                seen.owners.insert(owner);
            }
        }
        for (a, pods) in by_address.into_iter().filter(|(_, p)| p.len() > 1) {
            seen.shared.entry(a).or_default().extend(pods);
        }
        for (pod, n) in counts {
            seen.counts.entry(pod).or_default().push((start, n));
        }
        self.changed.notify_all();
    }

    /// The end of the first scrape that named `pod` in a per-pair series, waiting for it until
    /// `deadline`.
    pub fn first_named(&self, pod: &str, deadline: Instant) -> Option<Instant> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(t) = seen.first.get(pod) {
                return Some(*t);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            seen = self.changed.wait_timeout(seen, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// What was recorded.
    pub fn into_seen(self) -> Seen {
        self.seen.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl Seen {
    /// Every series end that named a pod for an address, interface, namespace or workload not
    /// its own (`made`: the pods by name), one line each; empty when all were right.
    pub fn mismatches(&self, made: &HashMap<&str, &Made>) -> Vec<String> {
        let mut out = Vec::new();
        for (pod, address) in &self.addresses {
            let holder = made.get(pod.as_str()).map(|m| &m.ip);
            if holder != Some(address) {
                out.push(format!("{pod} named for {address} (its address: {holder:?})"));
            }
        }
        for (pod, device) in &self.devices {
            let its = made.get(pod.as_str()).map(|m| &m.device);
            if its != Some(device) {
                out.push(format!("{pod} named for {device} (its interface: {its:?})"));
            }
        }
        for owner in &self.owners {
            if made.get(owner.pod.as_str()).is_none_or(|m| m.owner != *owner) {
                out.push(format!("a series names {owner}"));
            }
        }
        out
    }

    /// The counts of `pod` in the scrapes that began at or after `since`.
    pub fn counts_since(&self, pod: &str, since: Instant) -> Vec<u64> {
        let counts = self.counts.get(pod).into_iter().flatten();
        counts.filter(|(t, _)| *t >= since).map(|(_, n)| *n).collect()
    }
}
