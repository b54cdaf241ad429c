//! Batcher tests: sharding, flushing by size and age, and the full-queue policies.

use super::*;
use crate::decode::PacketMeta;

fn meta(flow_id: u64, ts_ns: u64) -> PacketMeta {
    PacketMeta { flow_id, ts_ns, ..PacketMeta::default() }
}

/// The tally as a sorted list of (device, queued, dropped).
fn tally(b: &mut Batcher) -> Vec<(u16, u64, u64)> {
    let mut t = Vec::new();
    b.take_tally(|d, q, x| t.push((d, q, x)));
    t.sort_unstable();
    t
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn shards_by_flow_and_flushes_full_batches() {
    let (tx0, rx0) = crossbeam_channel::unbounded();
    let (tx1, rx1) = crossbeam_channel::unbounded();
    let mut b = Batcher::new(vec![tx0, tx1], 3, DEFAULT_MAX_AGE, FullQueue::Wait);
    for i in 0..7 {
        b.push(&meta(4, 10 + i)); // flow 4 → worker 0
    }
    b.push(&meta(5, 1)); // flow 5 → worker 1
    let full: Vec<Batch> = rx0.try_iter().collect();
    assert_eq!(full.iter().map(Batch::len).collect::<Vec<_>>(), vec![3, 3]);
    assert!(rx1.try_iter().next().is_none());
    let first = &full[0];
    assert_eq!(first.max_ts(), 12);
    assert_eq!(first.bytes().len(), record::HEADER_LEN + 3 * record::BASE_STRIDE);
    assert_eq!(u32_at(first.bytes(), 4), 3, "count in header");
    drop(b); // flushes the rest
    assert_eq!(rx0.try_iter().map(|b| b.len()).collect::<Vec<_>>(), vec![1]);
    assert_eq!(rx1.try_iter().map(|b| b.len()).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn flushes_by_age_of_the_oldest_packet() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = Batcher::new(vec![tx], 1024, Duration::from_millis(50), FullQueue::Drop);
    b.push(&meta(1, 1_000_000_000));
    b.flush_due(1_000_000_000 + 49_000_000);
    assert!(rx.try_recv().is_err(), "not due yet");
    b.flush_due(1_000_000_000 + 50_000_000);
    assert_eq!(rx.try_recv().unwrap().len(), 1);
}

#[test]
fn a_full_queue_drops_and_counts_when_live() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut b = Batcher::new(vec![tx], 2, DEFAULT_MAX_AGE, FullQueue::Drop);
    for i in 0..6 {
        b.push(&meta(1, i));
    }
    assert_eq!(tally(&mut b), vec![(0, 2, 4)], "two full batches of two had no room");
    assert_eq!(rx.try_iter().count(), 1);
    assert_eq!(tally(&mut b), vec![], "taking the tally resets it");
}

#[test]
fn tallies_queued_and_dropped_packets_per_device() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut b = Batcher::new(vec![tx], 4, DEFAULT_MAX_AGE, FullQueue::Drop);
    let on = |device: u16, ts: u64| PacketMeta { device, ..meta(1, ts) };
    // First batch (queued): devices 3, 3, 7, 3. Second (dropped, queue full): 7, 7, 9, 9.
    for (i, d) in [3, 3, 7, 3, 7, 7, 9, 9].into_iter().enumerate() {
        b.push(&on(d, i as u64));
    }
    assert_eq!(tally(&mut b), vec![(3, 3, 0), (7, 1, 2), (9, 0, 2)]);
    assert_eq!(rx.try_iter().map(|x| x.len()).sum::<usize>(), 4);
}

#[test]
fn buffers_return_to_the_pool() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = Batcher::new(vec![tx], 2, DEFAULT_MAX_AGE, FullQueue::Wait);
    b.push(&meta(1, 1));
    b.push(&meta(1, 2));
    let batch = rx.try_recv().unwrap();
    let ptr = batch.bytes().as_ptr();
    drop(batch);
    b.push(&meta(1, 3));
    b.push(&meta(1, 4));
    b.push(&meta(1, 5));
    b.push(&meta(1, 6));
    let reused = rx.try_iter().any(|x| x.bytes().as_ptr() == ptr);
    assert!(reused, "a returned buffer is used again");
}

/// A batch keeps the base stride until a tunnelled packet comes, then holds every record with
/// the extension; the next batch starts at the base stride again.
#[test]
fn a_tunnelled_packet_widens_its_batch() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = Batcher::new(vec![tx], 3, DEFAULT_MAX_AGE, FullQueue::Wait);
    let plain = |ts| PacketMeta { device: 7, ..meta(1, ts) };
    let outer = (crate::decode::IpFamily::V4, [0; 16], [0; 16]);
    let kind = crate::decode::TunnelKind::Vxlan;
    let tunnelled =
        PacketMeta { tunnel: crate::decode::Tunnel::opened(kind, Some(42), 1, outer), ..plain(3) };
    for m in [plain(1), plain(2), tunnelled, plain(4)] {
        b.push(&m);
    }
    b.flush();
    let batches: Vec<Batch> = rx.try_iter().collect();
    let (wide, base) = (batches[0].bytes(), batches[1].bytes());
    assert_eq!(u16::from_le_bytes([wide[2], wide[3]]), 136);
    assert_eq!(wide.len(), record::HEADER_LEN + 3 * record::EXTENDED_STRIDE);
    assert_eq!(u16::from_le_bytes([base[2], base[3]]), 96);
    assert_eq!(base.len(), record::HEADER_LEN + record::BASE_STRIDE);
    for k in 0..3 {
        let r = &wide[record::HEADER_LEN + k * 136..][..136];
        assert_eq!(u64::from_le_bytes(r[..8].try_into().unwrap()), k as u64 + 1, "time of {k}");
        let kind = r[wasmtap_record::tunnel_offset::TUNNEL_KIND];
        assert_eq!(kind, if k == 2 { wasmtap_record::tunnel_kind::VXLAN } else { 0 }, "{k}");
    }
    assert_eq!(tally(&mut b), vec![(7, 4, 0)], "the tally reads devices at either stride");
}
