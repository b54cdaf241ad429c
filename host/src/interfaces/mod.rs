//! Stage: capture (control): which interfaces are captured.
//!
//! Inputs: the `-i` selection (names and glob patterns, `--exclude` patterns, or `any`) and the
//! kernel's link table, followed through rtnetlink: a dump at start and on a timer, and link
//! events in between.
//! Outputs: the interface table ([`Links`]: names by index, O(1), updated on rename and pruned
//! on delete) that capture threads label packets from; a capture thread attached to each
//! matching link that is up, detached when it goes down or away and attached again when it
//! comes back ([`Supervisor`]); `wasmtap_host_interface_up{device}`; and the interfaces
//! `/readyz` waits for.
//!
//! Each interface is captured once, however many patterns match it. `any` is one capture of
//! every interface, labelled per packet; other selections next to it add nothing.
//!
//! This module keeps the table and the selection; `attach` runs the captures.

mod attach;

pub use attach::{Options, Supervisor};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::sys::AsyncSocket;

/// How often the whole link table is listed again, in case a burst of events overran the
/// netlink socket (the kernel then drops events silently for a multicast listener).
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Receive buffer of the event socket: room for the events of thousands of links created at
/// once (one event is under 2 KiB).
const EVENT_BUFFER_BYTES: usize = 4 << 20;

/// One network interface as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: Arc<str>,
    /// Administratively up (IFF_UP).
    pub up: bool,
}

/// The kernel's interfaces by index. Capture threads read it only when [`Links::generation`]
/// has moved, so a packet costs one atomic load here.
#[derive(Debug, Default)]
pub struct Links {
    table: RwLock<HashMap<u32, Link>>,
    generation: AtomicU64,
}

impl Links {
    /// Changes whenever a link is added, renamed, changed or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn name(&self, ifindex: u32) -> Option<Arc<str>> {
        let t = self.table.read().unwrap_or_else(PoisonError::into_inner);
        t.get(&ifindex).map(|l| l.name.clone())
    }

    /// Every link, sorted by index.
    pub fn snapshot(&self) -> Vec<(u32, Link)> {
        let t = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = t.iter().map(|(i, l)| (*i, l.clone())).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        all
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<u32, Link>) -> bool) -> bool {
        let changed = f(&mut self.table.write().unwrap_or_else(PoisonError::into_inner));
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// Adds or updates one link; true if anything changed.
    pub fn set(&self, ifindex: u32, link: Link) -> bool {
        self.update(|t| t.insert(ifindex, link.clone()).as_ref() != Some(&link))
    }

    /// Removes one link; true if it was there.
    pub fn remove(&self, ifindex: u32) -> bool {
        self.update(|t| t.remove(&ifindex).is_some())
    }

    /// Replaces the whole table (a fresh dump); true if anything changed.
    pub fn replace(&self, all: HashMap<u32, Link>) -> bool {
        self.update(|t| {
            let changed = *t != all;
            *t = all;
            changed
        })
    }
}

/// What `-i` and `--exclude` select.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `-i any`: one capture of every interface.
    pub any: bool,
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
    /// `-i` values without glob characters: `/readyz` waits for these.
    explicit: Vec<String>,
}

/// Whether an `-i` value is a pattern rather than a name.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Selection {
    /// `include` and `exclude` must be valid glob patterns (checked in `config`).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, glob::PatternError> {
        let compile = |v: &[String]| -> Result<Vec<glob::Pattern>, glob::PatternError> {
            v.iter().map(|p| glob::Pattern::new(p)).collect()
        };
        let any = include.iter().any(|i| i == "any");
        let mut explicit: Vec<String> =
            include.iter().filter(|i| !is_pattern(i) && *i != "any").cloned().collect();
        explicit.sort();
        explicit.dedup();
        Ok(Self { any, include: compile(include)?, exclude: compile(exclude)?, explicit })
    }

    /// Whether `name` is selected (not the `any` case: see [`Selection::allows`]).
    pub fn matches(&self, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(name)) && self.allows(name)
    }

    /// Whether `--exclude` lets `name` through.
    pub fn allows(&self, name: &str) -> bool {
        !self.exclude.iter().any(|p| p.matches(name))
    }

    /// `-i` and `--exclude` as given, e.g. `interface ["veth*"] exclude ["lxc_health"]`.
    pub fn describe(&self) -> String {
        fn list(v: &[glob::Pattern]) -> Vec<&str> {
            v.iter().map(glob::Pattern::as_str).collect()
        }
        format!("interface {:?} exclude {:?}", list(&self.include), list(&self.exclude))
    }

    fn is_explicit(&self, name: &str) -> bool {
        self.explicit.iter().any(|e| e == name)
    }
}

/// Tells the supervisor that the table changed; false once it is gone. A full channel means a
/// reconciliation is already due, which will see this change too.
fn notify(changed: &Sender<()>) -> bool {
    !matches!(changed.try_send(()), Err(TrySendError::Disconnected(())))
}

/// Follows the kernel's links into `links` until `changed` is closed, telling `changed` after
/// every change. Sends one message on `first` after the first full listing, or its error.
pub async fn follow(links: Arc<Links>, changed: Sender<()>, first: Sender<Result<(), String>>) {
    let mut first = Some(first);
    loop {
        let result = follow_once(&links, &changed, &mut first).await;
        if !notify(&changed) {
            return;
        }
        match result {
            Ok(()) => tracing::warn!("link events ended; listing links again in 1 s"),
            Err(e) => {
                tracing::warn!("following links failed ({e}); trying again in 1 s");
                if let Some(first) = first.take() {
                    let _ = first.send(Err(e));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_once(
    links: &Links,
    changed: &Sender<()>,
    first: &mut Option<Sender<Result<(), String>>>,
) -> Result<(), String> {
    // Subscribe before listing, so that no change falls between the two.
    let (mut conn, _, mut events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .map_err(|e| format!("opening a netlink socket: {e}"))?;
    let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(EVENT_BUFFER_BYTES);
    let events_task = AbortOnDrop(tokio::spawn(conn));
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
    let _dump_task = AbortOnDrop(tokio::spawn(conn));
    loop {
        let mut all = HashMap::new();
        let mut dump = handle.link().get().execute();
        while let Some(msg) = dump.try_next().await.map_err(|e| format!("listing links: {e}"))? {
            if let Some((i, l)) = parse(&msg) {
                all.insert(i, l);
            }
        }
        if links.replace(all) && !notify(changed) {
            return Ok(());
        }
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        let resync = tokio::time::sleep(RESYNC_EVERY);
        tokio::pin!(resync);
        loop {
            tokio::select! {
                () = &mut resync => break,
                event = events.next() => {
                    let Some((msg, _)) = event else {
                        drop(events_task);
                        return Ok(());
                    };
                    let change = match msg.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                            parse(&m).is_some_and(|(i, l)| links.set(i, l))
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                            links.remove(m.header.index)
                        }
                        _ => false,
                    };
                    if change && !notify(changed) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn parse(m: &LinkMessage) -> Option<(u32, Link)> {
    let name = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })?;
    let up = m.header.flags.contains(LinkFlags::Up);
    Some((m.header.index, Link { name: Arc::from(name), up }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(include: &[&str], exclude: &[&str]) -> Selection {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        Selection::new(&v(include), &v(exclude)).unwrap()
    }

    #[test]
    fn names_and_patterns_select_each_interface_once() {
        let s = sel(&["eth0", "veth*", "veth1"], &["veth9*"]);
        assert!(s.matches("eth0") && s.matches("veth1") && s.matches("vethabc"));
        assert!(!s.matches("veth99") && !s.matches("lo") && !s.matches("eth1"));
        assert_eq!(s.explicit, vec!["eth0".to_owned(), "veth1".to_owned()]);
        assert!(!s.any);
    }

    #[test]
    fn any_covers_everything_but_the_excluded() {
        let s = sel(&["any", "eth0"], &["lo"]);
        assert!(s.any);
        assert!(s.allows("eth0") && !s.allows("lo"));
    }

    #[test]
    fn the_table_moves_its_generation_only_on_change() {
        let links = Links::default();
        let l = |n: &str| Link { name: Arc::from(n), up: true };
        assert!(links.set(3, l("a")));
        let g = links.generation();
        assert!(!links.set(3, l("a")), "same link again");
        assert_eq!(links.generation(), g);
        assert!(links.set(3, l("b")), "renamed");
        assert_eq!(links.name(3).as_deref(), Some("b"));
        assert!(links.remove(3));
        assert_eq!(links.name(3), None);
        assert!(!links.remove(3));
        assert!(links.generation() > g);
    }
}
