#!/usr/bin/env python3
"""bench/soak.py - the parts of bench/soak that are easier in Python than in bash.

  soak.py sample  --pid PID --admin ADDR --duration S --out CSV    one row a second
  soak.py reload  --admin ADDR --duration S --good A.yaml B.yaml --bad BAD.yaml --out LOG
  soak.py abort   --addr ADDR --duration S --out JSON               clients that leave mid-response
  soak.py hostile --addr ADDR --duration S --out JSON               a trickle of hostile inputs
  soak.py report  --run DIR                                         summary.md and soak.png

Standard library only, except `report`, which plots with matplotlib
(`pip install matplotlib`). Every loop stops at its deadline; every socket
has a timeout; every address is the one given (127.0.0.1 in bench/soak).
"""

import argparse
import csv
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

# ----------------------------------------------------------------- admin --


def admin_get(admin, path, timeout=5.0):
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


STAT_LINE = re.compile(r"^(\w+)(\{[^}]*\})?: (\S+)$")
PROM_BUCKET = re.compile(r'^nuncio_downstream_rq_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$')


def stats(admin):
    """`/stats` as {name{labels}: float} for the stats the sampler reads."""
    text = admin_get(admin, "/stats?filter=" + urllib.request.quote(
        "nuncio_downstream_(cx_active|cx_total|rq_total|rq_class_total)|nuncio_config_reload"))
    out = {}
    for line in text.splitlines():
        m = STAT_LINE.match(line.strip())
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def duration_buckets(admin):
    """Cumulative counts of nuncio_downstream_rq_duration_seconds by upper bound (seconds)."""
    buckets = {}
    for line in admin_get(admin, "/stats/prometheus").splitlines():
        m = PROM_BUCKET.match(line.strip())
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(2))
    return buckets


def quantile(prev, cur, q):
    """The q-quantile (seconds) of what was added between two cumulative
    histograms, interpolated within its bucket; None when nothing was."""
    bounds = sorted(cur)
    deltas = [cur[b] - prev.get(b, 0.0) for b in bounds]
    total = deltas[-1] if deltas else 0.0
    if total <= 0:
        return None
    want = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, deltas):
        if count >= want:
            if bound == float("inf"):
                return lower
            inside = count - below
            frac = (want - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * frac
        lower, below = bound, count
    return bounds[-2] if len(bounds) > 1 else None


def proc_sample(pid):
    """(RSS KiB, utime+stime seconds, open fds) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, cpu, fds
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def cmd_sample(a):
    classes = ["1xx", "2xx", "3xx", "4xx", "5xx"]
    cols = ["t", "rss_kib", "cpu_pct", "fds", "cx_active", "rq_per_s"] + [f"c{c}" for c in classes] + [
        "p50_ms", "p99_ms", "reloads", "reloads_failed", "alive"]
    start = time.monotonic()
    deadline = start + a.duration
    prev_stats, prev_buckets, prev_cpu, prev_t = {}, {}, None, None
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        tick = 0
        while time.monotonic() < deadline:
            tick += 1
            # Sleep to the next whole second since the start, so rows stay 1 s apart.
            time.sleep(max(0.0, start + tick - time.monotonic()))
            now = time.monotonic()
            proc = proc_sample(a.pid)
            if proc is None:
                w.writerow([round(now - start, 1)] + [""] * (len(cols) - 2) + [0])
                f.flush()
                print("soak.py sample: nuncio is gone", file=sys.stderr)
                return 1
            rss, cpu, fds = proc
            try:
                s, b = stats(a.admin), duration_buckets(a.admin)
            except (OSError, urllib.error.URLError) as e:
                print(f"soak.py sample: admin: {e}", file=sys.stderr)
                s, b = prev_stats, prev_buckets
            dt = now - prev_t if prev_t else 1.0
            cpu_pct = 100.0 * (cpu - prev_cpu) / dt if prev_cpu is not None else ""
            d = lambda k: s.get(k, 0.0) - prev_stats.get(k, 0.0) if prev_stats else ""  # noqa: E731
            p50 = quantile(prev_buckets, b, 0.50) if prev_buckets else None
            p99 = quantile(prev_buckets, b, 0.99) if prev_buckets else None
            row = [round(now - start, 1), rss, cpu_pct if cpu_pct == "" else round(cpu_pct, 1), fds,
                   int(s.get("nuncio_downstream_cx_active", 0)),
                   d("nuncio_downstream_rq_total")]
            row += [d(f'nuncio_downstream_rq_class_total{{class="{c}"}}') for c in classes]
            row += ["" if p50 is None else round(p50 * 1000, 3), "" if p99 is None else round(p99 * 1000, 3),
                    int(s.get("nuncio_config_reload_total", 0)), int(s.get("nuncio_config_reload_failed_total", 0)), 1]
            w.writerow(row)
            f.flush()
            prev_stats, prev_buckets, prev_cpu, prev_t = s, b, cpu, now
    return 0


# ---------------------------------------------------------------- reload --


def cmd_reload(a):
    """One `POST /config` a second: the two good configs in turn, the bad one every tenth time."""
    bodies = [open(p, "rb").read() for p in a.good]
    bad = open(a.bad, "rb").read()
    start = time.monotonic()
    n = 0
    with open(a.out, "w") as log:
        while True:
            n += 1
            at = start + n
            if at >= start + a.duration:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            is_bad = n % 10 == 0
            body = bad if is_bad else bodies[n % len(bodies)]
            req = urllib.request.Request(f"http://{a.admin}/config", data=body, method="POST")
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, text = r.status, r.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as e:
                status, text = e.code, e.read().decode("utf-8", "replace")
            except OSError as e:
                status, text = 0, str(e)
            ms = (time.monotonic() - t0) * 1000
            want = 400 if is_bad else 200
            log.write(json.dumps({"t": round(t0 - start, 2), "n": n, "bad": is_bad, "status": status,
                                  "expected": status == want, "ms": round(ms, 1),
                                  "answer": text.strip().splitlines()[0][:200] if text.strip() else ""}) + "\n")
            log.flush()
    return 0


# ----------------------------------------------------------------- HTTP/2 --

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """HPACK literal without indexing, indexed name (RFC 7541 §6.2.2); short values only."""
    v = value.encode()
    return bytes([index]) + bytes([len(v)]) + v


def h2_get(path, authority="soak"):
    # :method GET (2), :scheme http (6) from the static table; :path (4) and :authority (1) literal.
    return bytes([0x82, 0x86]) + literal(4, path) + literal(1, authority)


def read_frames(sock, until, stop=lambda f: False):
    """Frames until `stop` says so, the peer closes, or `until` (monotonic) passes."""
    buf, frames = b"", []
    while time.monotonic() < until:
        try:
            sock.settimeout(max(0.01, until - time.monotonic()))
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return frames, True
        if not chunk:
            return frames, True
        buf += chunk
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + length])
            buf = buf[9 + length:]
            frames.append(f)
            if stop(f):
                return frames, False
    return frames, False


def h2_connect(addr, timeout=5.0):
    s = socket.create_connection(addr, timeout=timeout)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24)))
    return s


# ----------------------------------------------------------------- abort --


def rst_close(s):
    """Close with a RST instead of a FIN, as a crashed or impatient client does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def status_of(data):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def abort_h1(addr, counts, rng):
    path = rng.choice(["/stream", "/stream", "/large"])
    s = socket.create_connection(addr, timeout=5)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
        # Less than the whole answer (1 MiB, 16 KiB), so it leaves mid-response.
        want = rng.randint(1, 200_000 if path == "/stream" else 16_000)
        got, data = 0, b""
        deadline = time.monotonic() + 5
        while got < want and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            if not data:
                data = chunk
            got += len(chunk)
        st = status_of(data)
        key = f"h1 {st // 100}xx" if st else "h1 no answer"
        counts[key] = counts.get(key, 0) + 1
    finally:
        if rng.random() < 0.5:
            rst_close(s)
        else:
            s.close()


def abort_h2(addr, counts, rng):
    s = h2_connect(addr)
    try:
        streams = [1, 3, 5][: rng.randint(1, 3)]
        for sid in streams:
            s.sendall(frame(HEADERS, END_HEADERS | END_STREAM, sid, h2_get(rng.choice(["/stream", "/large", "/h2/large"]))))
        seen = [0]

        def some_data(f):
            if f[0] == DATA:
                seen[0] += len(f[3])
            return seen[0] > rng.randint(1, 100_000)

        frames, closed = read_frames(s, time.monotonic() + 3, some_data)
        heads = sum(1 for f in frames if f[0] == HEADERS)
        for sid in streams:
            s.sendall(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))  # CANCEL
        counts["h2 streams"] = counts.get("h2 streams", 0) + len(streams)
        counts["h2 heads"] = counts.get("h2 heads", 0) + heads
        if any(f[0] == GOAWAY for f in frames) or closed:
            counts["h2 goaway/closed"] = counts.get("h2 goaway/closed", 0) + 1
    finally:
        rst_close(s) if rng.random() < 0.5 else s.close()


def cmd_abort(a):
    addr = parse_addr(a.addr)
    deadline = time.monotonic() + a.duration
    counts, errors = {}, {}
    lock = threading.Lock()

    def run(kind, seed):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            local = {}
            try:
                (abort_h1 if kind == "h1" else abort_h2)(addr, local, rng)
            except OSError as e:
                local[f"{kind} error {type(e).__name__}"] = 1
            with lock:
                for k, v in local.items():
                    (errors if " error " in k else counts)[k] = (errors if " error " in k else counts).get(k, 0) + v
            time.sleep(rng.uniform(0.05, 0.3))

    threads = [threading.Thread(target=run, args=(k, i)) for i, k in enumerate(["h1", "h1", "h2"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"counts": counts, "errors": errors}, open(a.out, "w"), indent=1)
    return 0


# --------------------------------------------------------------- hostile --

# (name, bytes): each answered 4xx, or 5xx where EXPECTED_5XX says so, or closed.
H1_BAD = [
    ("cl+te", b"POST / HTTP/1.1\r\nHost: soak\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
    ("te gzip", b"POST / HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("two cl", b"POST / HTTP/1.1\r\nHost: soak\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"),
    ("bad chunk", b"POST / HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("bare lf chunk", b"POST / HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: soak\r\nX-A: 1\r\n  folded\r\n\r\n"),
    ("space colon", b"GET / HTTP/1.1\r\nHost : soak\r\n\r\n"),
    ("no host", b"GET / HTTP/1.1\r\n\r\n"),
    ("http/2.0 line", b"GET / HTTP/2.0\r\nHost: soak\r\n\r\n"),
    ("tls hello", bytes.fromhex("160301020001000200030300") + os.urandom(32)),
    ("huge head", b"GET / HTTP/1.1\r\nHost: soak\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"),
    ("nul in field", b"GET / HTTP/1.1\r\nHost: soak\r\nX-A: a\x00b\r\n\r\n"),
]
EXPECTED_5XX = {"te gzip": "5xx-501", "http/2.0 line": "5xx-505"}


def one_h1(addr, data, wait=12.0):
    """Sends `data`, returns the status answered or 'closed' / 'no answer'."""
    s = socket.create_connection(addr, timeout=5)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        got = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and b"\r\n" not in got:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            except OSError:
                return "closed"
            if not chunk:
                break
            got += chunk
        st = status_of(got)
        return st if st else ("closed" if not got else "garbage")
    finally:
        s.close()


def slow_head(addr, rng):
    """A head sent a few bytes at a time, never finished: nuncio's request_headers_timeout (10 s) ends it."""
    s = socket.create_connection(addr, timeout=5)
    try:
        s.sendall(b"GET /small HTTP/1.1\r\nHost: soak\r\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % rng.randint(0, 9))
                s.settimeout(1.0)
                chunk = s.recv(4096)
                if not chunk:
                    return "closed"
                return status_of(chunk) or "garbage"
            except socket.timeout:
                continue
            except OSError:
                return "closed"
        return "no answer"
    finally:
        s.close()


def rapid_reset(addr, rng):
    """HTTP/2 rapid reset (CVE-2023-44487): open and cancel many streams at once."""
    s = h2_connect(addr)
    try:
        burst = b""
        for i in range(rng.randint(50, 400)):
            sid = 1 + 2 * i
            burst += frame(HEADERS, END_HEADERS | END_STREAM, sid, h2_get("/small")) + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
        try:
            s.sendall(burst)
        except OSError:
            return "closed"
        frames, closed = read_frames(s, time.monotonic() + 3, lambda f: f[0] == GOAWAY)
        return "goaway" if any(f[0] == GOAWAY for f in frames) else ("closed" if closed else "ok")
    finally:
        s.close()


def h2_bad_frames(addr, rng):
    s = h2_connect(addr)
    try:
        bad = rng.choice([
            frame(DATA, 0, 0, b"x"),                       # DATA on stream 0
            frame(HEADERS, END_HEADERS, 2, h2_get("/")),   # even stream id from a client
            frame(SETTINGS, 0, 0, b"\x00\x04\xff\xff\xff\xff"),  # window size too large
            frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"),     # zero increment
            frame(PING, 0, 0, b"short"),
            b"\x00\x00\x10\x01\x05\x00\x00\x00\x01" + os.urandom(16),  # HEADERS with a random block
        ])
        try:
            s.sendall(bad)
        except OSError:
            return "closed"
        frames, closed = read_frames(s, time.monotonic() + 3, lambda f: f[0] == GOAWAY)
        return "goaway" if any(f[0] == GOAWAY for f in frames) else ("closed" if closed else "no goaway")
    finally:
        s.close()


def allowed(kind, outcome):
    """Whether an outcome is what nuncio should do with that input: a 4xx or a close for bad
    HTTP/1.1 (501 for a transfer coding it does not do, 505 for a version), a GOAWAY or a
    close for bad HTTP/2; a rapid reset may also be served (the streams were cancelled)."""
    if outcome in ("closed", "goaway"):
        return True
    if kind == "h2 rapid reset":
        return outcome == "ok"
    if kind == "h2 bad frame":
        return False
    return outcome.startswith("4xx") or outcome == EXPECTED_5XX.get(kind)


def cmd_hostile(a):
    addr = parse_addr(a.addr)
    deadline = time.monotonic() + a.duration
    results, lock = [], threading.Lock()

    def record(kind, outcome):
        with lock:
            results.append((kind, outcome))

    def slow_loop(seed):
        rng = random.Random(seed)
        while time.monotonic() < deadline - 20:
            try:
                record("slow head", slow_head(addr, rng))
            except OSError as e:
                record("slow head", f"error {type(e).__name__}")

    def trickle():
        rng = random.Random(7)
        while time.monotonic() < deadline:
            pick = rng.random()
            try:
                if pick < 0.6:
                    name, data = rng.choice(H1_BAD)
                    record(name, one_h1(addr, data))
                elif pick < 0.8:
                    record("h2 rapid reset", rapid_reset(addr, rng))
                else:
                    record("h2 bad frame", h2_bad_frames(addr, rng))
            except OSError as e:
                record("trickle", f"error {type(e).__name__}")
            time.sleep(rng.uniform(0.2, 0.6))

    threads = [threading.Thread(target=slow_loop, args=(i,)) for i in range(2)] + [threading.Thread(target=trickle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = {}
    for kind, outcome in results:
        key = outcome if isinstance(outcome, str) else f"{outcome // 100}xx-{outcome}"
        table.setdefault(kind, {}).setdefault(key, 0)
        table[kind][key] += 1
    unexpected = {}
    for kind, outcomes in table.items():
        for key, n in outcomes.items():
            if not allowed(kind, key):
                unexpected.setdefault(kind, {})[key] = n
    # nuncio's own 5xx answers to these (501, 505) are in its 5xx count: bench/soak subtracts them.
    own_5xx = sum(n for outcomes in table.values() for key, n in outcomes.items() if key.startswith("5xx"))
    json.dump({"outcomes": table, "unexpected": unexpected, "total": len(results), "answered_5xx": own_5xx},
              open(a.out, "w"), indent=1)
    return 0


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


# ---------------------------------------------------------------- report --


def cmd_report(a):
    run = a.run
    rows = list(csv.DictReader(open(os.path.join(run, "samples.csv"))))
    num = lambda r, k: float(r[k]) if r.get(k) not in ("", None) else None  # noqa: E731
    t = [float(r["t"]) for r in rows]
    rss = [num(r, "rss_kib") for r in rows]
    p99 = [num(r, "p99_ms") for r in rows]
    p50 = [num(r, "p50_ms") for r in rows]
    rps = [num(r, "rq_per_s") for r in rows]
    cx = [num(r, "cx_active") for r in rows]
    cpu = [num(r, "cpu_pct") for r in rows]

    def window(lo, hi, series):
        return [v for tt, v in zip(t, series) if lo <= tt < hi and v is not None]

    end = t[-1] if t else 0
    # RSS growth from minute 2 to the end: the mean of minute 2 against the mean of the last minute.
    m2 = window(60, 120, rss)
    last = window(end - 60, end + 1, rss)
    growth = (sum(last) / len(last) - sum(m2) / len(m2)) / (sum(m2) / len(m2)) * 100 if m2 and last else None
    c5 = sum(num(r, "c5xx") or 0 for r in rows)
    c4 = sum(num(r, "c4xx") or 0 for r in rows)
    c2 = sum(num(r, "c2xx") or 0 for r in rows)
    alive = rows[-1]["alive"] == "1" if rows else False
    reloads = [json.loads(line) for line in open(os.path.join(run, "reloads.jsonl"))]
    good = [r for r in reloads if not r["bad"]]
    bad = [r for r in reloads if r["bad"]]
    bad_reload = [r for r in reloads if not r["expected"]]
    extras = {}
    for name in ("abort.json", "hostile.json", "load.json"):
        p = os.path.join(run, name)
        if os.path.exists(p):
            extras[name] = json.load(open(p))
    p99s = sorted(v for v in p99 if v is not None)
    steady = window(120, end + 1, p99)

    def pct(vals, q):
        vals = sorted(vals)
        return vals[min(len(vals) - 1, int(q * len(vals)))] if vals else None

    summary = {
        "duration_s": end,
        "alive_at_end": alive,
        "requests_2xx": c2, "requests_4xx": c4, "requests_5xx": c5,
        "rss_mib_minute2": round(sum(m2) / len(m2) / 1024, 1) if m2 else None,
        "rss_mib_last_minute": round(sum(last) / len(last) / 1024, 1) if last else None,
        "rss_mib_max": round(max(v for v in rss if v is not None) / 1024, 1) if any(rss) else None,
        "rss_growth_pct": round(growth, 2) if growth is not None else None,
        "p99_ms_median_of_seconds": pct(steady, 0.5), "p99_ms_worst_second": p99s[-1] if p99s else None,
        "p50_ms_median_of_seconds": pct(window(120, end + 1, p50), 0.5),
        "rq_per_s_median": pct(window(120, end + 1, rps), 0.5),
        "cpu_pct_median": pct(window(120, end + 1, cpu), 0.5),
        "cx_active_max": max((v for v in cx if v is not None), default=None),
        "reloads_good": len(good), "reloads_good_ok": sum(r["expected"] for r in good),
        "reloads_bad": len(bad), "reloads_bad_refused": sum(r["expected"] for r in bad),
        "reloads_unexpected": bad_reload[:5],
        "reload_ms_median": pct([r["ms"] for r in good], 0.5), "reload_ms_max": max((r["ms"] for r in good), default=None),
    }
    summary.update(extras)
    json.dump(summary, open(os.path.join(run, "summary.json"), "w"), indent=1)
    print(json.dumps(summary, indent=1))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak.py report: no matplotlib (pip install matplotlib): no plot", file=sys.stderr)
        return 0
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    tm = [x / 60 for x in t]
    ax1.plot(tm, [v / 1024 if v else None for v in rss], color="tab:blue")
    ax1.set_ylabel("RSS (MiB)")
    ax1.axvspan(1, 2, color="0.9", label="minute 2 (baseline)")
    ax1.legend(loc="lower right")
    ax1.set_xlim(0, max(tm) if tm else 1)
    if growth is not None:
        ax1.set_title(f"nuncio soak: RSS {summary['rss_mib_minute2']} -> {summary['rss_mib_last_minute']} MiB "
                      f"({growth:+.1f} % from minute 2), {len(good)} reloads + {len(bad)} refused, "
                      f"{int(c5)} 5xx", fontsize=10)
    ax1.set_ylim(bottom=0)
    ax2.plot(tm, p99, color="tab:red", label="p99", linewidth=0.8)
    ax2.plot(tm, p50, color="tab:green", label="p50", linewidth=0.8)
    ax2.set_ylabel("latency (ms, per second)")
    ax2.set_yscale("log")
    ax2.legend(loc="upper right")
    ax3.plot(tm, rps, color="tab:gray", label="requests/s", linewidth=0.8)
    ax3.set_ylabel("requests/s")
    ax3b = ax3.twinx()
    ax3b.plot(tm, cx, color="tab:purple", label="open connections", linewidth=0.8)
    ax3b.set_ylabel("open connections")
    ax3.set_xlabel("minutes")
    ax3.legend(loc="lower left")
    ax3b.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(run, "soak.png"), dpi=90)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--admin", required=True)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--out", required=True)
    r = sub.add_parser("reload")
    r.add_argument("--admin", required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--good", nargs="+", required=True)
    r.add_argument("--bad", required=True)
    r.add_argument("--out", required=True)
    for name in ("abort", "hostile"):
        x = sub.add_parser(name)
        x.add_argument("--addr", required=True)
        x.add_argument("--duration", type=float, required=True)
        x.add_argument("--out", required=True)
    rep = sub.add_parser("report")
    rep.add_argument("--run", required=True)
    a = p.parse_args()
    return {"sample": cmd_sample, "reload": cmd_reload, "abort": cmd_abort, "hostile": cmd_hostile,
            "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
