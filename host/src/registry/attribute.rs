//! Registry stage, attribution: which columns pod attribution adds to a family, and the owners
//! of an update's addresses and device.
//!
//! Input: a family's declared label names; an update's label values and the pod table in
//! force ([`Table`]).
//! Output: the owner columns a family gains ([`Column`]) and an update's owners
//! ([`Owners`]), borrowed from the table, never copied.

use std::sync::Arc;

use super::{Devices, Label};
use crate::pods::{Owner, Table};

/// The labels that name the pods at both ends of a per-pair family, added after its declared
/// labels when attribution is on.
pub const PAIR_LABELS: [&str; 6] =
    ["src_namespace", "src_workload", "src_pod", "dst_namespace", "dst_workload", "dst_pod"];
/// The labels that name the pod behind a per-device family's interface.
pub const DEVICE_LABELS: [&str; 3] = ["namespace", "workload", "pod"];
/// The declared labels that make a family per-pair or per-device.
const SRC_IP: &str = "src_ip";
const DST_IP: &str = "dst_ip";
const DEVICE: &str = "device";

/// Positions, among a family's declared labels, of those whose owners attribution adds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attributed {
    pair: Option<(usize, usize)>,
    device: Option<usize>,
}

/// A device index and its owner: the last device looked up in a call, as a call's updates
/// mostly share one.
pub(super) type DeviceMemo<'a> = Option<(u16, &'a Arc<Owner>)>;

/// The owners of one update, in column order (source, destination, device): at most three.
pub(super) struct Owners<'a> {
    pub(super) list: [&'a Arc<Owner>; 3],
    pub(super) len: usize,
}

impl<'a> Owners<'a> {
    pub(super) fn as_slice(&self) -> &[&'a Arc<Owner>] {
        &self.list[..self.len]
    }
}

impl Attributed {
    /// What attribution adds to a family with these declared labels: nothing when a label it
    /// would add is declared already.
    pub(super) fn of(declared: &[String]) -> Option<Attributed> {
        let at = |name: &str| declared.iter().position(|l| l == name);
        let taken = |names: &[&str]| names.iter().any(|n| at(n).is_some());
        let pair = at(SRC_IP).zip(at(DST_IP)).filter(|_| !taken(&PAIR_LABELS));
        let device = at(DEVICE).filter(|_| !taken(&DEVICE_LABELS));
        (pair.is_some() || device.is_some()).then_some(Attributed { pair, device })
    }

    /// The columns it adds after the declared labels: one owner per end, then the device's.
    pub(super) fn columns(&self) -> impl Iterator<Item = Column> {
        let [s, d] = [0, 3].map(|i| [PAIR_LABELS[i], PAIR_LABELS[i + 1], PAIR_LABELS[i + 2]]);
        let pair = self.pair.map(|_| [Column::Owner(s), Column::Owner(d)]);
        let device = self.device.map(|_| Column::Owner(DEVICE_LABELS));
        pair.into_iter().flatten().chain(device)
    }

    /// The owners of an update's declared label values, borrowed from the table: looked up,
    /// never copied, so that an update to a series that exists costs no allocation.
    pub(super) fn owners<'a>(
        &self,
        labels: &[Label],
        table: &'a Table,
        devices: &Devices,
        nobody: &'a Arc<Owner>,
        memo: &mut DeviceMemo<'a>,
    ) -> Owners<'a> {
        let address = |l: Option<&Label>| -> &'a Arc<Owner> {
            let found = match l {
                Some(Label::Ipv4(a)) => table.address(&std::net::Ipv4Addr::from(*a).into()),
                Some(Label::Ipv6(a)) => table.address(&std::net::Ipv6Addr::from(*a).into()),
                Some(Label::Text(t)) => t.parse().ok().and_then(|a| table.address(&a)),
                _ => None,
            };
            found.unwrap_or(nobody)
        };
        let mut out = Owners { list: [nobody; 3], len: 0 };
        if let Some((src, dst)) = self.pair {
            out.list[0] = address(labels.get(src));
            out.list[1] = address(labels.get(dst));
            out.len = 2;
        }
        if let Some(device) = self.device {
            let found = match labels.get(device) {
                Some(Label::Device(i)) => match *memo {
                    Some((at, o)) if at == *i => o,
                    _ => {
                        let o = devices.with_name(*i, |n| table.interface(n)).unwrap_or(nobody);
                        *memo = Some((*i, o));
                        o
                    }
                },
                Some(Label::Text(n)) => table.interface(n).unwrap_or(nobody),
                _ => nobody,
            };
            out.list[out.len] = found;
            out.len += 1;
        }
        out
    }
}

/// One value of an update as the registry keeps it: a declared label, or an owner that
/// attribution added, exposed as three labels.
#[derive(Debug, Clone)]
pub(super) enum Column {
    Declared(String),
    Owner([&'static str; 3]),
}
