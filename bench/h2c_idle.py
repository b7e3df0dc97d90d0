#!/usr/bin/env python3
"""Memory per idle HTTP/2 (h2c) client connection of nuncio.

It starts an origin nginx (127.0.0.1:18181, `return 200`) and nuncio in front of it
(--upstream, one worker, 127.0.0.1:18191), opens 50 h2c connections that each make one
request and close (warm-up), reads nuncio's VmRSS at rest, then opens N connections that
each send the preface, SETTINGS (and its acknowledgement) and one GET, read the whole
response and stay open and idle. After 1.5 s it reads VmRSS again and prints

    KiB per idle connection = (RSS with N idle connections - RSS at rest) / N

as bench/idle_memory.py does for HTTP/1.1 keep-alive connections. The client is this
script (raw frames over sockets), so nothing but nuncio's side is measured.

Usage: bench/h2c_idle.py --bin PATH [--conns N]   (default 2,000; needs nginx; the
process needs N+100 open files)
"""

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ORIGIN, PROXY = 18181, 18191


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


# :method GET, :scheme http, :path / (static indexes 2, 6, 4), :authority "a" (literal, name index 1).
HELLO = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + frame(4, 0, 0)
    + frame(4, 1, 0)
    + frame(1, 0x5, 1, bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"a")
)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect_and_get():
    """One connection whose GET on stream 1 was answered in full."""
    conn = socket.create_connection(("127.0.0.1", PROXY), timeout=5)
    conn.sendall(HELLO)
    buf = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("nuncio closed the connection")
        buf += chunk
        at = 0
        while len(buf) - at >= 9:
            length = int.from_bytes(buf[at : at + 3], "big")
            kind, flags = buf[at + 3], buf[at + 4]
            stream = int.from_bytes(buf[at + 5 : at + 9], "big") & 0x7FFFFFFF
            if len(buf) - at < 9 + length:
                break
            if stream == 1 and kind in (0, 1) and flags & 0x1:
                return conn
            at += 9 + length
    raise RuntimeError("no complete response in 5 s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--conns", type=int, default=2000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="h2c-idle-")
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; server {{ listen 127.0.0.1:{ORIGIN}; location / {{ return 200 'hello'; }} }} }}\n"
        )
    origin = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"])
    proxy = subprocess.Popen(
        [args.bin, "--upstream", f"http://127.0.0.1:{ORIGIN}", "--listen", f"127.0.0.1:{PROXY}",
         "--admin", "127.0.0.1:0", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", PROXY), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("nuncio did not listen in 10 s")
                time.sleep(0.1)
        for conn in [connect_and_get() for _ in range(50)]:
            conn.close()
        time.sleep(0.5)
        rest = rss_kib(proxy.pid)
        held = [connect_and_get() for _ in range(args.conns)]
        time.sleep(1.5)
        loaded = rss_kib(proxy.pid)
        print(f"{args.bin}: RSS at rest {rest} KiB, with {len(held)} idle h2c connections {loaded} KiB: "
              f"{(loaded - rest) / len(held):.1f} KiB per connection")
        for conn in held:
            conn.close()
    finally:
        for process in (proxy, origin):
            process.send_signal(signal.SIGTERM)
        for process in (proxy, origin):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
