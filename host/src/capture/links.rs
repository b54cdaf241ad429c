//! Stage: capture (the interface table and the selection).
//!
//! Inputs: the kernel's links, as `interfaces` follows them through rtnetlink, and the `-i`
//! and `--exclude` values that `config` checked.
//! Outputs: [`Links`], names by index (O(1), updated on rename and pruned on delete), that
//! capture threads label packets from; and [`Selection`], which interfaces are captured.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

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
        let t = self.table.read();
        t.get(&ifindex).map(|l| l.name.clone())
    }

    /// Every link, sorted by index.
    pub fn snapshot(&self) -> Vec<(u32, Link)> {
        let t = self.table.read();
        let mut all: Vec<_> = t.iter().map(|(i, l)| (*i, l.clone())).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        all
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<u32, Link>) -> bool) -> bool {
        let changed = f(&mut self.table.write());
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

    /// The `-i` values without glob characters, sorted: `/readyz` waits for these.
    pub fn explicit(&self) -> &[String] {
        &self.explicit
    }

    pub fn is_explicit(&self, name: &str) -> bool {
        self.explicit.iter().any(|e| e == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(include: &[&str], exclude: &[&str]) -> Selection {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        Selection::new(&v(include), &v(exclude)).expect("valid patterns")
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
