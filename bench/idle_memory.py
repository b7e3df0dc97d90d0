#!/usr/bin/env python3
"""Idle memory per keep-alive connection, nuncio against nginx.

What it measures: for each proxy and each N (default 1,000 and 8,000) it starts the
proxy fresh in front of an origin nginx, warms it with 200 requests on one connection,
waits, reads the proxy's resident memory at rest, then opens N client connections that
each send ONE request (GET /small, 64 B), read the whole response and then stay open and
idle (keep-alive). After a short settle it reads the RSS again and reports

    per-connection KiB = (RSS with N idle connections - RSS at rest) / N

and, for each two successive counts N1 < N2 of a proxy, the marginal cost

    marginal KiB = ((RSS with N2 - rest) - (RSS with N1 - rest)) / (N2 - N1)

which leaves out what the load itself leaves behind whatever N is (buffers pooled for
the 64 connections that were busy at once, upstream connections, pages the allocator keeps
after the burst): the cost of one more idle connection.

RSS is VmRSS from /proc/PID/status, summed over the proxy's processes (nginx: master +
worker; nuncio: its one process). Memory the kernel holds for the sockets is not in RSS,
and is the same for every proxy. A connection that has served a request is the state that
matters in practice (buffers allocated on first use show up); a connection that only
connected would read lower for a proxy that allocates lazily.

Both proxies are pinned to CPU 0 with one worker, the origin to CPU 1, as in
../shared/bench/peers.sh; nginx gets the same proxy config as peers.sh gives it, with
worker_connections raised for N. Everything listens on 127.0.0.1. Every wait is bounded.

Usage: idle_memory.py --nuncio PATH [--counts 1000,8000] [--proxies nuncio,nginx]
                      [--port-base 18180] [--json OUT]
Prints one line per measurement and, with --json, writes the results for report.py.
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SMALL_BODY = "s" * 63 + "\n"  # 64 bytes, as peers.sh's origin serves it


def log(msg):
    print(f"[idle-memory {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinned(cpu, argv):
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") else []) + argv


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def nginx_temp(d):
    os.makedirs(d, exist_ok=True)
    return "".join(f"  {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def origin_conf(d, port):
    return f"""user root root;
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
{nginx_temp(d + '/tmp')}
  access_log off;
  keepalive_requests 10000000; keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /small {{ default_type text/plain; return 200 "{SMALL_BODY[:-1]}\\n"; }}
    location / {{ return 404; }}
  }}
}}
"""


def nginx_proxy_conf(d, port, origin_port, max_conns):
    # peers.sh's nginx proxy config; worker_connections raised to hold max_conns.
    wc = max_conns + 1024
    return f"""user root root;
worker_processes 1;
worker_rlimit_nofile {2 * wc};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {wc}; multi_accept on; }}
http {{
{nginx_temp(d + '/tmp')}
  access_log off;
  keepalive_requests 10000000; keepalive_timeout 300s;
  upstream origin {{
    server 127.0.0.1:{origin_port};
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def tree(pid):
    """pid and all its descendants, from /proc (bounded by the process table)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def established(port):
    """Established TCP connections whose local port is `port` (the proxy's side)."""
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
        return sum(1 for line in out.splitlines() if line.strip())
    except (OSError, subprocess.TimeoutExpired):
        return None


class Proc:
    def __init__(self, name, argv, logpath, port):
        self.name, self.port = name, port
        if port_busy(port):
            raise RuntimeError(f"{name}: port {port} is already in use")
        self.logf = open(logpath, "w")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{name} exited during start-up (see {logpath})")
            try:
                if get_small(port) == 64:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{name} did not serve /small on :{port} within 15 s (see {logpath})")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                for pid in tree(self.p.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.p.wait(timeout=5)
        self.logf.close()


REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(sock_recv):
    """Read one HTTP/1.1 response with a Content-Length body; return the body length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock_recv()
        if not chunk:
            raise OSError("connection closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length is None:
        raise OSError("response without content-length")
    while len(body) < length:
        chunk = sock_recv()
        if not chunk:
            raise OSError("connection closed inside the body")
        body += chunk
    return len(body)


def get_small(port, n=1):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        for _ in range(n):
            s.sendall(REQUEST)
            length = read_response(lambda: s.recv(65536))
        return length


async def open_idle(port, n, concurrency=64, timeout=5.0):
    """Open n connections, one request each, keep them open. Returns (writers, failures)."""
    sem = asyncio.Semaphore(concurrency)
    writers, failures = [], 0

    async def one():
        nonlocal failures
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
                writer.write(REQUEST)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                length = 0
                for line in head.split(b"\r\n"):
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                await asyncio.wait_for(reader.readexactly(length), timeout)
                writers.append(writer)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                failures += 1

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), timeout=120)
    return writers, failures


async def close_all(writers):
    for w in writers:
        w.close()
    await asyncio.sleep(0)


def measure(proxy, argv, port, n, workdir, settle):
    log(f"{proxy}: start, N={n}")
    p = Proc(proxy, argv, os.path.join(workdir, f"{proxy}.{n}.log"), port)
    try:
        get_small(port, 200)  # warm: first-use allocations, upstream pool
        time.sleep(settle)
        rest = rss_kib(p.p.pid)
        loop = asyncio.new_event_loop()
        try:
            t0 = time.monotonic()
            writers, failures = loop.run_until_complete(open_idle(port, n))
            opened = time.monotonic() - t0
            time.sleep(settle)
            held = established(port)
            loaded = rss_kib(p.p.pid)
            loop.run_until_complete(close_all(writers))
        finally:
            loop.close()
        alive = p.p.poll() is None
        ok = len(writers)
        per_conn = (loaded - rest) / ok if ok else None
        log(f"{proxy}: N={n} open={ok} failed={failures} held(ss)={held} rest={rest} KiB "
            f"loaded={loaded} KiB -> {per_conn if per_conn is None else round(per_conn, 2)} KiB/conn "
            f"(opened in {opened:.1f}s){'' if alive else ' PROXY DIED'}")
        return {"proxy": proxy, "n": n, "opened": ok, "failed": failures, "held": held,
                "rest_kib": rest, "loaded_kib": loaded, "per_conn_kib": per_conn, "alive": alive}
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nuncio", required=True, help="path to the release nuncio binary")
    ap.add_argument("--counts", default="1000,8000", help="idle connection counts (each < 10,000)")
    ap.add_argument("--proxies", default="nuncio,nginx")
    ap.add_argument("--port-base", type=int, default=18180)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait before each RSS read")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--workdir", help="configs and logs (default: a temporary directory)")
    args = ap.parse_args()

    counts = [int(c) for c in args.counts.split(",") if c]
    if any(c <= 0 or c >= 10000 for c in counts):
        sys.exit("--counts: each count must be in 1..9999 (nuncio's default max_connections is 10,000)")
    nofile = raise_nofile()
    if nofile < max(counts) + 256:
        sys.exit(f"open-file limit {nofile} is too low for {max(counts)} connections (raise ulimit -n)")
    workdir = args.workdir or tempfile.mkdtemp(prefix="nuncio-idle-")
    os.makedirs(workdir, exist_ok=True)
    origin_port, nginx_port, nuncio_port = args.port_base, args.port_base + 1, args.port_base + 10

    odir = os.path.join(workdir, "origin")
    os.makedirs(odir, exist_ok=True)
    with open(os.path.join(odir, "nginx.conf"), "w") as f:
        f.write(origin_conf(odir, origin_port))
    ndir = os.path.join(workdir, "nginx")
    os.makedirs(ndir, exist_ok=True)
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(nginx_proxy_conf(ndir, nginx_port, origin_port, max(counts)))

    commands = {
        "nuncio": (nuncio_port, pinned(0, [args.nuncio, "--upstream", f"http://127.0.0.1:{origin_port}",
                                           "--listen", f"127.0.0.1:{nuncio_port}", "--admin", "127.0.0.1:0",
                                           "--workers", "1", "--log-level", "warn"])),
        "nginx": (nginx_port, pinned(0, ["nginx", "-e", f"{ndir}/error.log", "-p", ndir, "-c", f"{ndir}/nginx.conf"])),
    }
    results = {"counts": counts, "mode": "one request per connection, then idle", "runs": []}
    origin = Proc("origin", pinned(1, ["nginx", "-e", f"{odir}/error.log", "-p", odir, "-c", f"{odir}/nginx.conf"]),
                  os.path.join(workdir, "origin.log"), origin_port)
    rc = 0
    try:
        for proxy in [p for p in args.proxies.split(",") if p]:
            port, argv = commands[proxy]
            for n in counts:
                try:
                    results["runs"].append(measure(proxy, argv, port, n, workdir, args.settle))
                except (RuntimeError, OSError, asyncio.TimeoutError) as e:
                    log(f"{proxy}: N={n} FAILED: {e}")
                    results["runs"].append({"proxy": proxy, "n": n, "error": str(e)})
                    rc = 1
            runs = sorted((r for r in results["runs"] if r["proxy"] == proxy and r.get("opened")),
                          key=lambda r: r["n"])
            for a, b in zip(runs, runs[1:]):
                if b["opened"] == a["opened"]:
                    continue
                kib = ((b["loaded_kib"] - b["rest_kib"]) - (a["loaded_kib"] - a["rest_kib"])) / (b["opened"] - a["opened"])
                log(f"{proxy}: marginal from {a['opened']} to {b['opened']} idle connections: {kib:.2f} KiB/conn")
                results.setdefault("marginal", []).append(
                    {"proxy": proxy, "from": a["opened"], "to": b["opened"], "kib_per_conn": kib})
    finally:
        origin.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
