#!/usr/bin/env python3
"""Writes a deterministic synthetic TCP capture for the replay benchmark (stdlib only).

    synth_pcap.py OUT.pcap --packets 1000000 [--seed 7] [--snaplen 128]

Many interleaved flows (about 70% IPv4, 30% IPv6) between addresses in 10.77.0.0/16 and
fd77::/64, each a realistic TCP conversation over Ethernet:

  SYN and SYN/ACK with MSS, SACK-permitted, timestamps and window scale (varied shifts);
  the handshake ACK; a request; a response of 2..60 full-size segments with an ACK for
  every second one; timestamps on every segment; mostly FIN/ACK teardown, some RST aborts,
  some refused connections (SYN answered by RST/ACK); IPv4 with DF set.

Frames are cut to the snaplen (default 128 bytes, as a headers-only capture would be),
with the original length kept in the record header. The same seed gives the same bytes.
"""

import argparse
import random
import struct
import sys

LINKTYPE_ETHERNET = 1
MSS4, MSS6 = 1460, 1440
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def csum16(data):
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


class Endpoint:
    __slots__ = ("mac", "ip", "port", "seq", "ts", "wscale", "mss")


class Flow:
    """One TCP conversation; `packets()` yields (frame_bytes, wire_length) in order."""

    def __init__(self, rng, idx, v6):
        self.rng = rng
        self.v6 = v6
        c, s = Endpoint(), Endpoint()
        c.mac = bytes([0x02, 0x77, 0, 0, (idx >> 8) & 0xFF, idx & 0xFF])
        s.mac = bytes([0x02, 0x77, 1, 0, 0, rng.randrange(1, 16)])
        host = rng.randrange(1, 60000)
        server = rng.randrange(1, 32)
        if v6:
            c.ip = bytes.fromhex("fd770000000000000000000000") + struct.pack("!H", host) + b"\x01"
            s.ip = bytes.fromhex("fd7700000000000000000000000000") + bytes([0x80 + server])
        else:
            c.ip = bytes([10, 77, 1 + (host >> 8) % 200, host & 0xFF])
            s.ip = bytes([10, 77, 250, server])
        c.port = 32768 + (idx * 7919) % 28000
        s.port = rng.choice((80, 443, 5001, 8080, 9725))
        for e in (c, s):
            e.seq = rng.getrandbits(32)
            e.ts = rng.getrandbits(32)
            e.wscale = rng.choice((7, 7, 8, 9, 10))
            e.mss = MSS6 if v6 else MSS4
        self.c, self.s = c, s
        self.ipid = rng.getrandbits(16)

    def segment(self, src, dst, flags, payload_len, syn_opts=False):
        """Builds one Ethernet frame; returns (bytes up to full length, wire length)."""
        if syn_opts:
            # MSS, SACK_PERM, TS, NOP, WS: the Linux SYN layout (20 bytes of options).
            opts = (struct.pack("!BBH", 2, 4, src.mss) + b"\x04\x02"
                    + struct.pack("!BBII", 8, 10, src.ts, dst.ts if flags & ACK else 0)
                    + b"\x01" + struct.pack("!BBB", 3, 3, src.wscale))
        else:
            opts = b"\x01\x01" + struct.pack("!BBII", 8, 10, src.ts, dst.ts)
        thl = 20 + len(opts)
        ack = dst.seq if flags & ACK else 0
        window = 65535 if flags & SYN else max(1, (256 * 1024) >> src.wscale)
        if flags & RST:
            window = 0
        tcp = struct.pack("!HHIIBBHHH", src.port, dst.port, src.seq, ack,
                          (thl // 4) << 4, flags, window, 0, 0) + opts
        payload = b"\x00" * payload_len
        seg_len = thl + payload_len
        if self.v6:
            ip = struct.pack("!IHBB", 6 << 28, seg_len, 6, 64) + src.ip + dst.ip
            ethertype = 0x86DD
        else:
            self.ipid = (self.ipid + 1) & 0xFFFF
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + seg_len, self.ipid, 0x4000, 64, 6, 0,
                              src.ip, dst.ip)
            ip = hdr[:10] + struct.pack("!H", csum16(hdr)) + hdr[12:]
            ethertype = 0x0800
        frame = dst.mac + src.mac + struct.pack("!H", ethertype) + ip + tcp + payload
        src.seq = (src.seq + payload_len + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        src.ts = (src.ts + 1) & 0xFFFFFFFF
        return frame

    def packets(self):
        rng, c, s = self.rng, self.c, self.s
        seg = self.segment
        fate = rng.random()
        yield seg(c, s, SYN, 0, syn_opts=True)
        if fate < 0.03:  # refused
            s.seq = 0
            yield seg(s, c, RST | ACK, 0)
            return
        yield seg(s, c, SYN | ACK, 0, syn_opts=True)
        yield seg(c, s, ACK, 0)
        yield seg(c, s, PSH | ACK, rng.randrange(60, 600))
        n = rng.randrange(2, 61)
        for i in range(n):
            size = s.mss if i < n - 1 else rng.randrange(1, s.mss + 1)
            yield seg(s, c, ACK | (PSH if i == n - 1 else 0), size)
            if i % 2 == 1 or i == n - 1:
                yield seg(c, s, ACK, 0)
        if fate < 0.10:  # aborted
            yield seg(c, s, RST | ACK, 0)
            return
        yield seg(c, s, FIN | ACK, 0)
        yield seg(s, c, FIN | ACK, 0)
        yield seg(c, s, ACK, 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--packets", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--snaplen", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=256, help="flows open at once")
    args = p.parse_args()

    rng = random.Random(args.seed)
    t_us = 1_700_000_000 * 1_000_000
    written = 0
    next_flow = 0
    active = []
    with open(args.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, args.snaplen, LINKTYPE_ETHERNET))
        buf = []
        while written < args.packets:
            while len(active) < args.concurrency:
                active.append(Flow(rng, next_flow, rng.random() < 0.3).packets())
                next_flow += 1
            i = rng.randrange(len(active))
            try:
                frame = next(active[i])
            except StopIteration:
                active[i] = active[-1]
                active.pop()
                continue
            t_us += rng.randrange(1, 12)
            wire = len(frame)
            cap = min(wire, args.snaplen)
            buf.append(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, cap, wire))
            buf.append(frame[:cap])
            written += 1
            if len(buf) >= 8192:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    print(f"wrote {written} packets ({next_flow} flows) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
