//! The attempt table: TCP connection attempts waiting for an answer, bounded in size.
//!
//! Input: SYNs (a new attempt, or a retransmission of one) and answers (SYN/ACK or RST from the
//! server), each with its 4-tuple [`Key`] and packet time, and the packet time of ticks.
//! Output: the outcome of every attempt that ends badly, handed to a callback — unanswered
//! (packet time passed its deadline), refused (a RST answered it in time) or evicted (dropped
//! from the full table) — decided in packet time, so that a replay gives the same counts however
//! fast it runs. Attempts answered by a SYN/ACK in time leave quietly.
//!
//! Layout, every part bounded by `max_pending` entries:
//! - a hash map from the 4-tuple to its [`Attempt`];
//! - two indices ordered by deadline (`BTreeMap`s of (deadline, serial) → key): attempts still
//!   waiting, whose deadline is the first SYN plus the timeout, and attempts already counted as
//!   unanswered, kept until the client has stopped retransmitting their SYN (the last SYN plus
//!   the linger time) so that a late retransmission does not count as a new attempt.
//!
//! Expiry pops index entries whose deadline is before the current packet time, so it costs
//! nothing while nothing expires and does not depend on when it is checked: on every SYN or
//! answer, and on every tick.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, Hasher};

use wasmtap_sdk::{Label, Packet};

/// The connection a SYN opens: client and server address and port, as the client sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The client's address bytes as recorded (IPv4 in the first 4 bytes).
    pub client: [u8; 16],
    /// The server's address bytes as recorded.
    pub server: [u8; 16],
    /// The client's port.
    pub client_port: u16,
    /// The server's port.
    pub server_port: u16,
    /// IPv6 rather than IPv4: keeps 1.2.3.4 apart from the IPv6 address 102:304::.
    pub ipv6: bool,
}

impl Key {
    /// The key of a SYN: its sender is the client.
    pub fn of_syn(p: &Packet<'_>) -> Self {
        Self {
            client: *p.src_addr_raw(),
            server: *p.dst_addr_raw(),
            client_port: p.src_port(),
            server_port: p.dst_port(),
            ipv6: p.is_ipv6(),
        }
    }

    /// The key of an answer (SYN/ACK, RST): its sender is the server.
    pub fn of_answer(p: &Packet<'_>) -> Self {
        Self {
            client: *p.dst_addr_raw(),
            server: *p.src_addr_raw(),
            client_port: p.dst_port(),
            server_port: p.src_port(),
            ipv6: p.is_ipv6(),
        }
    }

    /// The server's address as a label value.
    pub fn server_label(&self) -> Label {
        let a = self.server;
        if self.ipv6 {
            Label::from(std::net::IpAddr::from(a))
        } else {
            Label::Ipv4(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
        }
    }
}

/// Where an attempt is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No answer yet, and its deadline has not passed.
    Waiting,
    /// Counted as unanswered; kept while its SYN is still being retransmitted.
    Counted,
}

/// A position in one of the deadline indices: (deadline in ns, serial number). The serial
/// keeps attempts with equal deadlines apart.
type Slot = (u64, u64);

/// One connection attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The client's initial sequence number: its retransmissions carry the same.
    pub isn: u32,
    /// Payload of the SYN (TCP Fast Open): a SYN/ACK may acknowledge it too.
    pub syn_len: u32,
    /// Packet time of the first SYN.
    pub first_ns: u64,
    /// Packet time of the latest SYN (the first, or a retransmission).
    pub last_syn_ns: u64,
    /// Device the first SYN was captured on (the `device` label).
    pub device: u16,
    /// Waiting or counted.
    pub state: State,
    /// Its entry in the index of its state.
    slot: Slot,
}

/// How an attempt ended, when it ended badly (the callback's argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No SYN/ACK and no RST within the timeout of the first SYN (or a new SYN on the same
    /// ports, with another initial sequence number, gave up on it).
    Unanswered,
    /// A RST answered it within the timeout.
    Refused,
    /// Dropped to make room for a new attempt: its outcome is never counted (if it was
    /// waiting), or a later retransmission of its SYN counts as a new attempt (if counted).
    Evicted,
}

/// A SYN as the table needs it.
#[derive(Debug, Clone, Copy)]
pub struct Syn {
    /// Its sequence number (the initial sequence number of the attempt).
    pub isn: u32,
    /// Its payload length.
    pub payload_len: u32,
    /// Its packet time.
    pub time_ns: u64,
    /// Its device.
    pub device: u16,
}

/// The table's limits, from the analyzer's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// An attempt not answered within this long after its first SYN is unanswered.
    pub timeout_ns: u64,
    /// A counted attempt stays this long after its latest SYN.
    pub linger_ns: u64,
    /// Most attempts held at once (at least 1).
    pub max_pending: usize,
}

/// SipHash (std's `DefaultHasher`) keyed by a seed hashed in first. A fixed hash function
/// would let a sender who picks addresses and ports fill one bucket and make every lookup
/// slow; wasm has no randomness to key it with, so the seed comes from packet data (see
/// [`Table::syn`]).
#[derive(Debug, Clone, Copy, Default)]
struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

/// The attempts in flight.
#[derive(Debug)]
pub struct Table {
    settings: Settings,
    attempts: HashMap<Key, Attempt, Seeded>,
    waiting: BTreeMap<Slot, Key>,
    counted: BTreeMap<Slot, Key>,
    serial: u64,
    seeded: bool,
}

impl Table {
    /// An empty table. Nothing is allocated until the first SYN.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            attempts: HashMap::with_hasher(Seeded::default()),
            waiting: BTreeMap::new(),
            counted: BTreeMap::new(),
            serial: 0,
            seeded: false,
        }
    }

    /// Attempts held (waiting or counted).
    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    /// True if no attempt is held.
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }

    /// The attempt on `key`, if one is held.
    pub fn get(&self, key: &Key) -> Option<&Attempt> {
        self.attempts.get(key)
    }

    fn next_slot(&mut self, deadline: u64) -> Slot {
        self.serial += 1;
        (deadline, self.serial)
    }

    /// Takes the attempt on `key` out of the map and its index.
    fn remove(&mut self, key: &Key) -> Option<Attempt> {
        let a = self.attempts.remove(key)?;
        match a.state {
            State::Waiting => self.waiting.remove(&a.slot),
            State::Counted => self.counted.remove(&a.slot),
        };
        Some(a)
    }

    /// A SYN without ACK at packet time `syn.time_ns`: a new attempt, or a retransmission.
    pub fn syn(&mut self, key: Key, syn: Syn, report: &mut impl FnMut(Outcome, &Key, &Attempt)) {
        self.expire(syn.time_ns, report);
        if !self.seeded {
            // Still empty: nothing to rehash. The capture time in ns of the first SYN is not
            // something a remote sender can predict.
            let seed = syn.time_ns ^ u64::from(syn.isn).rotate_left(32);
            self.attempts = HashMap::with_hasher(Seeded(seed));
            self.seeded = true;
        }
        if let Some(a) = self.attempts.get_mut(&key) {
            if a.isn == syn.isn {
                // A retransmission, or the same SYN captured on another device.
                a.last_syn_ns = a.last_syn_ns.max(syn.time_ns);
                if a.state == State::Counted {
                    let (old, deadline) =
                        (a.slot, a.last_syn_ns.saturating_add(self.settings.linger_ns));
                    self.serial += 1;
                    a.slot = (deadline, self.serial);
                    self.counted.remove(&old);
                    self.counted.insert(a.slot, key);
                }
                return;
            }
            // Another initial sequence number on the same ports: the client gave up on the
            // old attempt and started a new one.
            if let Some(old) = self.remove(&key)
                && old.state == State::Waiting
            {
                report(Outcome::Unanswered, &key, &old);
            }
        }
        if self.attempts.len() >= self.settings.max_pending {
            self.evict_one(report);
        }
        let slot = self.next_slot(syn.time_ns.saturating_add(self.settings.timeout_ns));
        let attempt = Attempt {
            isn: syn.isn,
            syn_len: syn.payload_len,
            first_ns: syn.time_ns,
            last_syn_ns: syn.time_ns,
            device: syn.device,
            state: State::Waiting,
            slot,
        };
        self.attempts.insert(key, attempt);
        self.waiting.insert(slot, key);
    }

    /// Drops one attempt to make room: a counted one if there is any (it is only kept to
    /// recognise retransmissions), else the waiting one with the earliest deadline.
    fn evict_one(&mut self, report: &mut impl FnMut(Outcome, &Key, &Attempt)) {
        let victim = self.counted.pop_first().or_else(|| self.waiting.pop_first());
        if let Some((_, key)) = victim
            && let Some(a) = self.attempts.remove(&key)
        {
            report(Outcome::Evicted, &key, &a);
        }
    }

    /// A SYN/ACK (`refused` false) or a RST (`refused` true), both with the ACK flag and
    /// acknowledgement number `ack`, from the server of `key` at packet time `time_ns`.
    pub fn answer(
        &mut self,
        key: Key,
        ack: u32,
        refused: bool,
        time_ns: u64,
        report: &mut impl FnMut(Outcome, &Key, &Attempt),
    ) {
        self.expire(time_ns, report);
        let Some(a) = self.attempts.get(&key) else { return };
        // It acknowledges the SYN (ISN + 1), plus any SYN payload it accepted: anything else is
        // not an answer to this attempt (a stale segment of an older connection).
        if ack.wrapping_sub(a.isn.wrapping_add(1)) > a.syn_len {
            return;
        }
        if let Some(a) = self.remove(&key)
            && refused
            && a.state == State::Waiting
        {
            report(Outcome::Refused, &key, &a);
        }
    }

    /// Counts the waiting attempts whose deadline is before `now_ns` as unanswered, and drops
    /// the counted ones whose client has stopped retransmitting.
    pub fn expire(&mut self, now_ns: u64, report: &mut impl FnMut(Outcome, &Key, &Attempt)) {
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 >= now_ns {
                break;
            }
            let key = entry.remove();
            let Some(a) = self.attempts.get_mut(&key) else { continue };
            a.state = State::Counted;
            report(Outcome::Unanswered, &key, a);
            let deadline = a.last_syn_ns.saturating_add(self.settings.linger_ns);
            if deadline < now_ns {
                self.attempts.remove(&key);
            } else {
                self.serial += 1;
                a.slot = (deadline, self.serial);
                self.counted.insert(a.slot, key);
            }
        }
        while let Some(entry) = self.counted.first_entry() {
            if entry.key().0 >= now_ns {
                break;
            }
            let key = entry.remove();
            self.attempts.remove(&key);
        }
    }

    /// Forgets every attempt (the end of a capture).
    pub fn clear(&mut self) {
        self.attempts.clear();
        self.waiting.clear();
        self.counted.clear();
    }
}
