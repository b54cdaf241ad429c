//! Stage: capture (control): which interfaces are captured.
//!
//! Inputs: the `-i` selection (names and glob patterns, `--exclude` patterns, or `any`) and the
//! kernel's link table, followed through rtnetlink: a dump at start and on a timer, and link
//! events in between.
//! Outputs: the interface table ([`Links`], kept by the capture stage: names by index) kept
//! up to date; a capture thread attached to each matching link that is up, detached when it
//! goes down or away and attached again when it comes back ([`Supervisor`]);
//! `wasmtap_host_interface_up{device}`; and the interfaces `/readyz` waits for.
//!
//! Each interface is captured once, however many patterns match it. `any` is one capture of
//! every interface, labelled per packet; other selections next to it add nothing.
//!
//! This module follows the kernel's links; `attach` runs the captures.

mod attach;

pub use attach::{Options, Supervisor};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::sys::AsyncSocket;

use crate::capture::links::{Link, Links};

/// How often the whole link table is listed again, in case a burst of events overran the
/// netlink socket (the kernel then drops events silently for a multicast listener).
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Receive buffer of the event socket: room for the events of thousands of links created at
/// once (one event is under 2 KiB).
const EVENT_BUFFER_BYTES: usize = 4 << 20;

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
