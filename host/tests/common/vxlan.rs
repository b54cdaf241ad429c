//! The kernel's own VXLAN between two test namespaces ([`VxlanPair`]): a veth pair is the
//! underlay, and a `vxlan` device in each namespace carries the overlay over it, as flannel
//! or Cilium do between two nodes. The traffic helpers of [`super::traffic`] take the pair's
//! [`NetnsPair`], whose addresses are the VXLAN devices', so their TCP crosses the tunnel.
//!
//! Nothing but the test's frames crosses either link: IPv6 is off except on the VXLAN
//! devices, which have no link-local address (so no neighbour discovery, router solicitations
//! or DAD), every neighbour is permanent (no ARP, no neighbour solicitations), and
//! [`VxlanPair::new`] returns only once the links have been silent for a while (the MLD
//! reports for the devices' solicited-node groups, sent when their addresses are added, are
//! over). Dropping it deletes both namespaces with the devices in them.

use std::thread;
use std::time::{Duration, Instant};

use super::process::{next_seq, require_tools, run_ok, run_with_timeout};
use super::topology::{NetnsPair, ip, link_stat, netns_exec, offloads_off, quiet_pair};

/// The VXLAN device's name, in both namespaces.
pub const VXLAN_DEVICE: &str = "vx0";
/// The underlay veths: the first in namespace `a`, the second in `b`.
pub const UNDERLAY: [&str; 2] = ["ul0", "ul1"];
/// The VXLAN network identifier; any value, as long as both ends agree.
const VNI: &str = "42";
/// How long the links must carry nothing before the pair counts as quiet: longer than the
/// MLD's unsolicited report interval (1 s), so its repeated report is over too.
const QUIET_FOR: Duration = Duration::from_secs(3);
/// Bound on waiting for that quiet.
const QUIET_TIMEOUT: Duration = Duration::from_secs(30);

/// Two quiet namespaces joined by the underlay veth pair [`UNDERLAY`] (10.79.n.1/24 in `a`,
/// 10.79.n.2/24 in `b`), with a [`VXLAN_DEVICE`] in each on UDP `port` over it, addressed
/// 172.31.n.1/24 and fd00:n::1/64 in `a`, 172.31.n.2/24 and fd00:n::2/64 in `b`. Offloads
/// (TSO, GSO, GRO) are off on all four devices, so captures hold real segments.
pub struct VxlanPair {
    /// The namespaces; `veth_a` and `veth_b` are the underlay veths, and `v4_a` .. `v6_b` the
    /// VXLAN devices' addresses.
    pub pair: NetnsPair,
    /// The VXLAN UDP port.
    pub port: u16,
    /// The underlay addresses in `a` and `b`.
    pub underlay_a: String,
    pub underlay_b: String,
}

impl VxlanPair {
    pub fn new(port: u16) -> VxlanPair {
        require_tools(&["ip", "ethtool", "sysctl", "python3"]);
        let mut pair = quiet_pair("vxlan", Some((UNDERLAY[0], UNDERLAY[1])));
        // Distinct subnets per run make captures from different runs easy to tell apart.
        let n = (std::process::id().wrapping_mul(7).wrapping_add(next_seq()) % 200) + 20;
        pair.v4_a = format!("172.31.{n}.1");
        pair.v4_b = format!("172.31.{n}.2");
        pair.v6_a = format!("fd00:{n}::1");
        pair.v6_b = format!("fd00:{n}::2");
        let topo = VxlanPair {
            pair,
            port,
            underlay_a: format!("10.79.{n}.1"),
            underlay_b: format!("10.79.{n}.2"),
        };
        let p = &topo.pair;
        let ends = [
            (&p.a, UNDERLAY[0], &topo.underlay_a, &topo.underlay_b, &p.v4_a, &p.v6_a),
            (&p.b, UNDERLAY[1], &topo.underlay_b, &topo.underlay_a, &p.v4_b, &p.v6_b),
        ];
        for (ns, under, local, remote, v4, v6) in ends {
            ip(&["-n", ns, "addr", "add", &format!("{local}/24"), "dev", under]);
            offloads_off(ns, under);
            let port = port.to_string();
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                VXLAN_DEVICE,
                "type",
                "vxlan",
                "id",
                VNI,
                "dstport",
                &port,
                "local",
                local,
                "remote",
                remote,
                "dev",
                under,
            ]);
            // IPv6 on the VXLAN device only, without a link-local address (mode 1: none),
            // set before IPv6 is switched on so that none is ever made.
            let conf = format!("net.ipv6.conf.{VXLAN_DEVICE}");
            run_ok(
                netns_exec(ns, "sysctl").args([
                    "-qw",
                    &format!("{conf}.addr_gen_mode=1"),
                    &format!("{conf}.disable_ipv6=0"),
                ]),
                Duration::from_secs(10),
            );
            offloads_off(ns, VXLAN_DEVICE);
            ip(&["-n", ns, "link", "set", VXLAN_DEVICE, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", VXLAN_DEVICE]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", VXLAN_DEVICE, "nodad"]);
        }
        // Permanent neighbours: each end knows the other's MAC on both links.
        let mac = |ns: &str, dev: &str| {
            let path = format!("/sys/class/net/{dev}/address");
            run_ok(netns_exec(ns, "cat").arg(&path), Duration::from_secs(10)).trim().to_string()
        };
        let neighbours = [
            (&p.a, UNDERLAY[0], &topo.underlay_b, mac(&p.b, UNDERLAY[1])),
            (&p.b, UNDERLAY[1], &topo.underlay_a, mac(&p.a, UNDERLAY[0])),
            (&p.a, VXLAN_DEVICE, &p.v4_b, mac(&p.b, VXLAN_DEVICE)),
            (&p.a, VXLAN_DEVICE, &p.v6_b, mac(&p.b, VXLAN_DEVICE)),
            (&p.b, VXLAN_DEVICE, &p.v4_a, mac(&p.a, VXLAN_DEVICE)),
            (&p.b, VXLAN_DEVICE, &p.v6_a, mac(&p.a, VXLAN_DEVICE)),
        ];
        for (ns, dev, addr, mac) in neighbours {
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        // Through the tunnel, both families: a connection to a closed port of b is refused.
        for addr in [&p.v4_b, &p.v6_b] {
            let probe = format!(
                "import socket\ntry:\n socket.create_connection(('{addr}', 9), timeout=5)\n\
                 except ConnectionRefusedError:\n print('refused')"
            );
            let r = run_with_timeout(
                p.exec(&p.a, "python3").args(["-c", &probe]),
                Duration::from_secs(10),
            );
            assert!(
                r.stdout_text().contains("refused"),
                "namespace a cannot reach {addr} through VXLAN port {port}: {}",
                r.describe()
            );
        }
        topo.wait_quiet();
        topo
    }

    /// Waits until namespace `a`'s two links have carried nothing for [`QUIET_FOR`].
    fn wait_quiet(&self) {
        let a = &self.pair.a;
        let count = || -> u64 {
            [UNDERLAY[0], VXLAN_DEVICE]
                .iter()
                .map(|dev| link_stat(a, dev, "rx_packets") + link_stat(a, dev, "tx_packets"))
                .sum()
        };
        let deadline = Instant::now() + QUIET_TIMEOUT;
        let (mut last, mut since) = (count(), Instant::now());
        while since.elapsed() < QUIET_FOR {
            assert!(
                Instant::now() < deadline,
                "the VXLAN pair's links still carry packets after {QUIET_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(200));
            let now = count();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }
}
