#!/usr/bin/env python3
"""Test traffic for wasmtap's network-namespace tests (stdlib only; host/tests/common/traffic.rs
runs it).

Run with `ip netns exec`, a server in one namespace and a client in the other, over a clean
link or one where nftables drops a share of the TCP segments at random:

    traffic.py serve  --addr 10.77.5.2 --addr fd77:5::2 --port 5001 [--lifetime 240]
    traffic.py client --addr 10.77.5.2 --port 5001 [--bulk-bytes 2000000] [--slow-bytes 0]

The server listens on every --addr, then prints "READY" on stdout:

  PORT    bulk: reads an 8-byte length L and L bytes, answers with the byte count (8 bytes),
          sends L/2 bytes back, then waits for the client's FIN;
  PORT+1  slow reader: reads an 8-byte length L and L bytes through a receive buffer of
          SLOW_RCVBUF bytes (set on the listener, so the window scale is chosen for it),
          drained only every SLOW_PAUSE (sometimes SLOW_LONG_PAUSE) seconds, so the sender
          fills the window again and again: zero windows, zero-window probes, window updates;
          answers with the byte count;
  PORT+2  abort: waits for data, then closes without reading it: the kernel sends RST;
  PORT+3  nothing listens: a connection is refused with RST.

The client runs, against one address:

  bulk     upload BULK bytes, check the count, download BULK/2 bytes; FINs;
  slow     send SLOW bytes to the slow reader and check its count (skipped when SLOW is 0);
  refused  connect to PORT+3 -> the server's kernel answers the SYN with RST;
  abort    send data to PORT+2; the server closes without reading -> its kernel sends RST;
  linger0  connect to PORT, send a little, close with SO_LINGER {1, 0} -> client sends RST.

The client prints one JSON line summarising what happened, and exits non-zero if a transfer
went wrong or the refused connection was not refused. Loss can hide a RST from its receiver,
so the abort scenario only reports whether the client saw its reset ("reset_seen"). Every
socket operation has a timeout and both sides have an overall alarm, so nothing here can hang
a test.
"""

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time

IO_TIMEOUT = 20.0
CHUNK = 64 * 1024
# How long a client keeps trying to connect while the server is not listening yet.
CONNECT_RETRY_FOR = 10.0
# The slow reader: an 8 KiB receive buffer (the kernel doubles it), drained (one buffer's worth)
# every SLOW_PAUSE seconds, and every SLOW_LONG_EVERY-th time only after SLOW_LONG_PAUSE. The sender
# fills the buffer within a millisecond, so the window closes (zero window) in every pause, and
# in the long ones the sender's persist timer probes it (zero-window probes, their ACKs).
SLOW_RCVBUF = 8192
SLOW_PAUSE = 0.05
SLOW_LONG_PAUSE = 0.6
SLOW_LONG_EVERY = 8
# How long the abort scenario waits for the server's RST (on a lossy link it may be lost).
ABORT_WAIT = 3.0
# Ports, from the base port.
BULK, SLOW, ABORT, REFUSED = 0, 1, 2, 3


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(CHUNK, n - len(buf)))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------- server


def handle_bulk(conn):
    """Reads an 8-byte length L, then L bytes; answers with the byte count, then sends L/2."""
    with conn:
        conn.settimeout(IO_TIMEOUT)
        try:
            header = conn.recv(8, socket.MSG_WAITALL)
            if len(header) != 8:
                return  # e.g. the linger0 scenario's RST
            (length,) = struct.unpack("!Q", header)
            got = 0
            while got < length:
                chunk = conn.recv(min(CHUNK, length - got))
                if not chunk:
                    break
                got += len(chunk)
            conn.sendall(struct.pack("!Q", got))
            payload = b"\x5a" * CHUNK
            left = length // 2
            while left > 0:
                n = min(left, CHUNK)
                conn.sendall(payload[:n])
                left -= n
            conn.shutdown(socket.SHUT_WR)
            # Wait for the client's FIN so that the close is an orderly one.
            while conn.recv(CHUNK):
                pass
        except OSError:
            pass


def handle_slow(conn):
    """Reads an 8-byte length L, then L bytes a little at a time; answers with the count."""
    with conn:
        conn.settimeout(IO_TIMEOUT)
        try:
            (length,) = struct.unpack("!Q", recv_exact(conn, 8))
            got = 0
            rounds = 0
            while got < length:
                rounds += 1
                time.sleep(SLOW_LONG_PAUSE if rounds % SLOW_LONG_EVERY == 0 else SLOW_PAUSE)
                # Drain one buffer's worth at most (the sender refills it as fast as it is
                # read), without waiting for more.
                budget = min(2 * SLOW_RCVBUF, length - got)
                while budget > 0:
                    try:
                        chunk = conn.recv(budget, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    if not chunk:
                        raise ConnectionError(f"slow: peer closed after {got} bytes")
                    got += len(chunk)
                    budget -= len(chunk)
            conn.sendall(struct.pack("!Q", got))
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(CHUNK):
                pass
        except OSError:
            pass


def handle_abort(conn):
    """Waits until the client's data has arrived, then closes without reading it: RST."""
    with conn:
        conn.settimeout(IO_TIMEOUT)
        try:
            conn.recv(1, socket.MSG_PEEK)  # blocks until data is queued; does not consume
            time.sleep(0.05)  # let the rest of the client's burst arrive too
        except OSError:
            pass
    # Closing a socket with unread data makes the kernel send RST instead of FIN.


def accept_loop(listener, handler):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def serve(args):
    for addr in args.addr:
        for offset, handler in ((BULK, handle_bulk), (SLOW, handle_slow), (ABORT, handle_abort)):
            fam = family_of(addr)
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if handler is handle_slow:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            s.bind((addr, args.port + offset))
            s.listen(64)
            threading.Thread(target=accept_loop, args=(s, handler), daemon=True).start()
    print("READY", flush=True)
    # Lives until killed or the lifetime ends.
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        time.sleep(0.2)
    return 0


# ---------------------------------------------------------------- client


def connect(addr, port):
    """Connects, retrying while the server is not listening yet (for CONNECT_RETRY_FOR s); a
    lost SYN or SYN/ACK is retried by the kernel within the timeout."""
    deadline = time.monotonic() + CONNECT_RETRY_FOR
    last = None
    while time.monotonic() < deadline:
        s = socket.socket(family_of(addr), socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        try:
            s.connect((addr, port))
            return s
        except OSError as e:
            last = e
            s.close()
            time.sleep(0.1)
    raise TimeoutError(f"could not connect to [{addr}]:{port}: {last}")


def send_all(s, n):
    payload = b"\xa5" * CHUNK
    left = n
    while left > 0:
        k = min(left, CHUNK)
        s.sendall(payload[:k])
        left -= k


def upload(s, n, scenario):
    """Sends an 8-byte length and that many bytes; checks the count the server answers."""
    s.sendall(struct.pack("!Q", n))
    send_all(s, n)
    (echoed,) = struct.unpack("!Q", recv_exact(s, 8))
    if echoed != n:
        raise RuntimeError(f"{scenario}: server counted {echoed} bytes, sent {n}")


def scenario_bulk(addr, port, bulk):
    with connect(addr, port) as s:
        upload(s, bulk, "bulk")
        down = 0
        while True:
            chunk = s.recv(CHUNK)
            if not chunk:
                break
            down += len(chunk)
        if down != bulk // 2:
            raise RuntimeError(f"bulk: downloaded {down} bytes, expected {bulk // 2}")
        s.shutdown(socket.SHUT_WR)
    return {"uploaded": bulk, "downloaded": down}


def scenario_slow(addr, port, n):
    t = time.monotonic()
    with connect(addr, port) as s:
        upload(s, n, "slow")
        s.shutdown(socket.SHUT_WR)
        while s.recv(CHUNK):
            pass
    return {"sent": n, "seconds": round(time.monotonic() - t, 2)}


def scenario_refused(addr, port):
    s = socket.socket(family_of(addr), socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    with s:
        try:
            s.connect((addr, port))
        except ConnectionRefusedError:
            return {"refused": True}
    raise RuntimeError(f"connection to closed port [{addr}]:{port} was not refused")


def scenario_abort(addr, port):
    with connect(addr, port) as s:
        s.sendall(b"unread data " * 1000)
        s.settimeout(ABORT_WAIT)  # the RST may be lost; then nothing more arrives
        try:
            data = s.recv(CHUNK)  # the server's RST ends this with ECONNRESET
            return {"reset_seen": False, "eof": data == b""}
        except ConnectionResetError:
            return {"reset_seen": True}
        except socket.timeout:
            return {"reset_seen": False, "timeout": True}


def scenario_linger0(addr, port):
    s = connect(addr, port)
    s.sendall(b"\x00\x00\x00")  # fewer than the 8 header bytes the server waits for
    time.sleep(0.05)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # SO_LINGER {on, 0}: the kernel sends RST at once
    return {"closed_with_rst": True}


def client(args):
    result = {"addr": args.addr}
    result["bulk"] = scenario_bulk(args.addr, args.port + BULK, args.bulk_bytes)
    if args.slow_bytes > 0:
        result["slow"] = scenario_slow(args.addr, args.port + SLOW, args.slow_bytes)
    result["refused"] = scenario_refused(args.addr, args.port + REFUSED)
    result["abort"] = scenario_abort(args.addr, args.port + ABORT)
    result["linger0"] = scenario_linger0(args.addr, args.port + BULK)
    print(json.dumps(result), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("serve")
    ps.add_argument("--addr", action="append", required=True)
    ps.add_argument("--port", type=int, required=True)
    ps.add_argument("--lifetime", type=float, default=240.0)
    pc = sub.add_parser("client")
    pc.add_argument("--addr", required=True)
    pc.add_argument("--port", type=int, required=True)
    pc.add_argument("--bulk-bytes", type=int, default=2_000_000)
    pc.add_argument("--slow-bytes", type=int, default=0)
    pc.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()

    # Hard upper bound on the whole process, whatever happens.
    limit = args.lifetime + 5 if args.cmd == "serve" else args.timeout
    signal.signal(signal.SIGALRM,
                  lambda *_: (print("traffic.py: time limit", file=sys.stderr), sys.exit(3)))
    signal.alarm(max(1, int(limit)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    return serve(args) if args.cmd == "serve" else client(args)


if __name__ == "__main__":
    sys.exit(main())
