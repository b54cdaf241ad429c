//! Pod source, the node's side: which host interface leads into a pod's network namespace, and
//! which addresses are the node's own, from rtnetlink.
//!
//! Input: network namespace paths (from the runtime), the kernel's links and addresses.
//! Output: the namespace id this network namespace gives a pod's namespace ([`Netlink::nsid`]),
//! the links whose peer lives in a namespace, by that id ([`Netlink::peers`]), and the
//! node's addresses ([`Netlink::addresses`]).
//!
//! A veth's host end names the namespace of its other end by an id (`IFLA_LINK_NETNSID`); the
//! kernel gives a namespace its id when such a link is made. Comparing ids, not names, maps an
//! interface to its pod whatever the CNI calls it (`veth*`, `cali*`, `lxc*`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};

/// A netlink connection of this network namespace, for the queries of one poll.
pub struct Netlink {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    pub fn open() -> Result<Netlink, String> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
        Ok(Netlink { handle, task: tokio::spawn(conn) })
    }

    /// The id this namespace knows the network namespace at `path` by; `None` if it has none
    /// yet (no link joins the two) or the path cannot be opened.
    pub async fn nsid(&mut self, path: &Path) -> Option<i32> {
        let file = std::fs::File::open(path).ok()?;
        let fd = u32::try_from(file.as_raw_fd()).ok()?;
        let mut message = NsidMessage::default();
        message.attributes.push(NsidAttribute::Fd(fd));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(message));
        request.header = NetlinkHeader::default();
        request.header.flags = NLM_F_REQUEST;
        let mut answers = self.handle.request(request).ok()?;
        let mut id = None;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) = answer.payload {
                id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(i) if *i >= 0 => Some(*i),
                    _ => None,
                });
            }
        }
        drop(file);
        id
    }

    /// The links whose other end is in another namespace: that namespace's id → link names.
    pub async fn peers(&mut self) -> Result<HashMap<i32, Vec<String>>, String> {
        let mut out: HashMap<i32, Vec<String>> = HashMap::new();
        let mut dump = self.handle.link().get().execute();
        while let Some(m) = dump.try_next().await.map_err(|e| format!("listing links: {e}"))? {
            let mut name = None;
            let mut nsid = None;
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::LinkNetNsId(i) if *i >= 0 => nsid = Some(*i),
                    _ => {}
                }
            }
            if let (Some(name), Some(nsid)) = (name, nsid) {
                out.entry(nsid).or_default().push(name);
            }
        }
        for names in out.values_mut() {
            names.sort();
        }
        Ok(out)
    }

    /// The addresses of this network namespace: the node's own.
    pub async fn addresses(&mut self) -> Result<Vec<IpAddr>, String> {
        let mut out = Vec::new();
        let mut dump = self.handle.address().get().execute();
        while let Some(m) = dump.try_next().await.map_err(|e| format!("listing addresses: {e}"))? {
            let found = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(a) => Some(*a),
                _ => None,
            });
            let found = found.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(a) => Some(*a),
                    _ => None,
                })
            });
            out.extend(found);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
