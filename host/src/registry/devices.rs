//! Registry stage, devices: the interface and capture-file names behind device indices.
//!
//! Input: names, interned when a source opens or a capture thread first sees an interface.
//! Output: a `u16` per name, which records and `device` labels carry, and the names back at
//! render time.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Interface and capture-file names behind `Label::Device` indices.
#[derive(Debug, Default)]
pub struct Devices {
    names: RwLock<DeviceNames>,
}

#[derive(Debug, Default)]
struct DeviceNames {
    by_index: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, u16>,
}

/// The last device index: once every index is taken, further names share it.
const LAST_DEVICE: u16 = u16::MAX;

impl Devices {
    /// The index of `name`, adding it if new. Called when a source opens or a capture thread
    /// first sees an interface, not per packet.
    pub fn intern(&self, name: &str) -> u16 {
        if let Some(i) = self.names.read().by_name.get(name) {
            return *i;
        }
        let mut names = self.names.write();
        if let Some(i) = names.by_name.get(name) {
            return *i;
        }
        let Ok(i) = u16::try_from(names.by_index.len()) else {
            return LAST_DEVICE;
        };
        let name: Arc<str> = Arc::from(name);
        names.by_index.push(name.clone());
        names.by_name.insert(name, i);
        i
    }

    /// Every name, by index: one lock for a whole render.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.names.read().by_index.clone()
    }

    /// Calls `f` with the name behind an index (under the read lock, without a copy); `None`
    /// for an unknown index.
    pub fn with_name<T>(&self, index: u16, f: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        self.names.read().by_index.get(usize::from(index)).and_then(|n| f(n))
    }

    /// The name behind an index, or the number itself for an unknown index.
    pub fn name(&self, index: u16) -> String {
        let names = self.names.read();
        names.by_index.get(usize::from(index)).map_or_else(|| index.to_string(), |n| n.to_string())
    }
}
