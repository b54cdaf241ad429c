#!/usr/bin/env python3
"""Test traffic for wasmtap's network-namespace tests (stdlib only).

Run with `ip netns exec`, a server in one namespace and a client in the other:

    traffic.py serve  --addr 10.77.5.2 --addr fd77:5::2 --port 5001 [--lifetime 120]
    traffic.py client --addr 10.77.5.2 --port 5001 [--bulk-bytes 2000000]

The server listens on PORT (bulk sink) and PORT+1 (abort: closes with unread data) on every
--addr, then prints "READY" on stdout. Nothing listens on PORT+2, so connecting there is
refused with a RST. The client runs, against one address:

  bulk     upload BULK bytes, read back an 8-byte byte count, download BULK/2 bytes; FINs;
  refused  connect to PORT+2 -> the server's kernel answers the SYN with RST;
  abort    send data to PORT+1; the server closes without reading -> its kernel sends RST;
  linger0  connect to PORT, send a little, close with SO_LINGER {1, 0} -> client sends RST.

The client prints one JSON line summarising what happened, and exits non-zero if a scenario
did not behave as expected. Every socket operation has a timeout and both sides have an
overall alarm, so nothing here can hang a test.
"""

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time

IO_TIMEOUT = 10.0
CHUNK = 64 * 1024


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
    listeners = []
    for addr in args.addr:
        for port, handler in ((args.port, handle_bulk), (args.port + 1, handle_abort)):
            fam = family_of(addr)
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            s.listen(64)
            listeners.append(s)
            threading.Thread(target=accept_loop, args=(s, handler), daemon=True).start()
    print("READY", flush=True)
    # Lives until killed, stdin closes, or the lifetime ends.
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        time.sleep(0.2)
    return 0


# ---------------------------------------------------------------- client


def connect_with_retry(addr, port, deadline):
    """Connects, retrying while the server is not listening yet (bounded by deadline)."""
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


def scenario_bulk(addr, port, bulk):
    s = connect_with_retry(addr, port, time.monotonic() + 10)
    with s:
        s.sendall(struct.pack("!Q", bulk))
        payload = b"\xa5" * CHUNK
        left = bulk
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(payload[:n])
            left -= n
        (echoed,) = struct.unpack("!Q", recv_exact(s, 8))
        if echoed != bulk:
            raise RuntimeError(f"server counted {echoed} bytes, sent {bulk}")
        down = 0
        while True:
            chunk = s.recv(CHUNK)
            if not chunk:
                break
            down += len(chunk)
        if down != bulk // 2:
            raise RuntimeError(f"downloaded {down} bytes, expected {bulk // 2}")
        s.shutdown(socket.SHUT_WR)
    return {"uploaded": bulk, "downloaded": down}


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
    s = connect_with_retry(addr, port, time.monotonic() + 10)
    with s:
        s.sendall(b"unread data " * 1000)
        try:
            data = s.recv(CHUNK)  # the server's RST ends this with ECONNRESET
            return {"reset_seen": False, "eof": data == b""}
        except ConnectionResetError:
            return {"reset_seen": True}


def scenario_linger0(addr, port):
    s = connect_with_retry(addr, port, time.monotonic() + 10)
    s.sendall(b"\x00\x00\x00")  # fewer than the 8 header bytes the server waits for
    time.sleep(0.05)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # SO_LINGER {on, 0}: the kernel sends RST at once
    return {"closed_with_rst": True}


def client(args):
    result = {"addr": args.addr}
    result["bulk"] = scenario_bulk(args.addr, args.port, args.bulk_bytes)
    result["refused"] = scenario_refused(args.addr, args.port + 2)
    result["abort"] = scenario_abort(args.addr, args.port + 1)
    result["linger0"] = scenario_linger0(args.addr, args.port)
    print(json.dumps(result), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("serve")
    ps.add_argument("--addr", action="append", required=True)
    ps.add_argument("--port", type=int, required=True)
    ps.add_argument("--lifetime", type=float, default=120.0)
    pc = sub.add_parser("client")
    pc.add_argument("--addr", required=True)
    pc.add_argument("--port", type=int, required=True)
    pc.add_argument("--bulk-bytes", type=int, default=2_000_000)
    pc.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()

    # Hard upper bound on the whole process, whatever happens.
    limit = args.lifetime + 5 if args.cmd == "serve" else args.timeout
    signal.signal(signal.SIGALRM, lambda *_: (print("traffic.py: time limit", file=sys.stderr), sys.exit(3)))
    signal.alarm(max(1, int(limit)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    return serve(args) if args.cmd == "serve" else client(args)


if __name__ == "__main__":
    sys.exit(main())
