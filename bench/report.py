#!/usr/bin/env python3
"""Turn a bench/peers run directory into tables, a chart and the docs section.

Usage: bench/report.py RUN_DIR [--docs docs/benchmarks.md] [--svg docs/img/peers.svg]

RUN_DIR is what bench/peers writes (under $PEERBENCH_WORK/nuncio-runs/): meta.tsv, one
directory per peers.sh scenario (results.tsv = peers.sh's per-run table, cputime.txt =
bench/cputime-wrap's user/kernel ticks of each nuncio process, failed.tsv = proxies that
made peers.sh stop) and memory.json (bench/idle_memory.py). Without --docs it only prints
the markdown; with --docs it replaces the section between <!-- peers:begin --> and
<!-- peers:end --> in that file (appending it at the end the first time) and leaves the
rest of the file as it is. --svg writes a grouped bar chart of the median CPU µs per
request of each proxy in each scenario. Python 3 standard library only.

Definitions (all medians over the runs of one peers.sh invocation):
  CPU µs/req   peers.sh's proc_us/req: utime+stime of the proxy's processes during the
               measurement / requests served
  × nginx      median CPU µs/req of the proxy / nginx's, same invocation
  user µs/req  nuncio only: its CPU µs/req × utime/(utime+stime) over the process's life
"""

import argparse
import json
import os
import re
import statistics
import sys
from xml.sax.saxutils import escape

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
SCENARIOS = [("h1-small", "HTTP/1.1 /small (64 B)"), ("h1-large", "HTTP/1.1 /large (16 KiB)"),
             ("h2c-small", "h2c /small (64 B)")]
SWEEP = [64, 512, 4096]
PEER_ORDER = ["nginx", "haproxy", "pingora", "caddy", "nuncio"]
COLORS = {"nginx": "#4e79a7", "haproxy": "#59a14f", "pingora": "#edc948", "caddy": "#b07aa1",
          "nuncio": "#e15759"}
NUNCIO_USER_COLOR = "#9c2f36"
FLAT_TOLERANCE = 0.10  # "flat from 64 to 4,096": within 10 % of the 64-connection figure


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2, suffix=""):
    """Format a number with thousands separators; None is "n/a" (without the suffix)."""
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}{suffix}"
    return f"{v:,.{digits}f}{suffix}"


def read_tsv_meta(path):
    meta = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("\t")
                meta[k] = v
    return meta


class Scenario:
    """One peers.sh invocation: per-peer run lists, failures, nuncio's user share."""

    def __init__(self, path):
        self.path = path
        self.present = os.path.isdir(path)
        self.rows = {}       # peer -> list of dicts (one per run, in run order)
        self.failed = {}     # peer -> reason ('*' = the whole scenario)
        self.busy = []
        self.cmd = ""
        self.rundir = ""
        self.user_share = []  # nuncio: utime/(utime+stime), one per run
        if not self.present:
            return
        res = os.path.join(path, "results.tsv")
        if os.path.exists(res):
            with open(res) as f:
                header = f.readline().rstrip("\n").split("\t")
                for line in f:
                    cells = line.rstrip("\n").split("\t")
                    if len(cells) != len(header):
                        continue
                    row = dict(zip(header, cells))
                    self.rows.setdefault(row["peer"], []).append(row)
        p = os.path.join(path, "failed.tsv")
        if os.path.exists(p):
            with open(p) as f:
                for line in f:
                    peer, _, why = line.rstrip("\n").partition("\t")
                    if peer:
                        self.failed[peer] = why
        for name in ("busy.txt", "cmd.txt", "rundir"):
            p = os.path.join(path, name)
            if os.path.exists(p):
                with open(p) as f:
                    text = f.read().strip()
                if name == "busy.txt":
                    self.busy = [line for line in text.splitlines() if line]
                elif name == "cmd.txt":
                    self.cmd = text
                else:
                    self.rundir = text
        # nginx logs when it runs out of worker_connections (peers.sh gives it 8192, shared by
        # client and upstream connections): it then closes idle keep-alive connections.
        self.nginx_short = False
        if self.rundir:
            try:
                with open(os.path.join(self.rundir, "nginx", "error.log"), errors="replace") as f:
                    self.nginx_short = "worker_connections are not enough" in f.read()
            except OSError:
                pass
        p = os.path.join(path, "cputime.txt")
        if os.path.exists(p):
            seen = set()
            with open(p) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) != 3 or parts[0] in seen:  # a second TERM repeats a pid
                        continue
                    seen.add(parts[0])
                    u, s = int(parts[1]), int(parts[2])
                    self.user_share.append(u / (u + s) if u + s else None)

    def series(self, peer, col):
        return [num(r.get(col)) for r in self.rows.get(peer, [])]

    def med(self, peer, col):
        return median(self.series(peer, col))

    def user_us(self):
        """nuncio's user-space µs/req per run, and the median."""
        totals = self.series("nuncio", "proc_us/req")
        per_run = [t * u if t is not None and u is not None else None
                   for t, u in zip(totals, self.user_share)]
        return per_run, median(per_run)

    def ratio(self, peer, base="nginx", col="proc_us/req"):
        a, b = self.med(peer, col), self.med(base, col)
        return a / b if a is not None and b else None

    def errors(self, peer):
        return sum(int(v) for v in self.series(peer, "errors") if v is not None)

    def peers(self):
        names = set(self.rows) | {p for p in self.failed if p != "*"}
        return sorted(names, key=lambda p: (PEER_ORDER.index(p) if p in PEER_ORDER else 99, p))


def load(run_dir):
    scen = {sid: Scenario(os.path.join(run_dir, sid)) for sid, _ in SCENARIOS}
    sweep = {c: Scenario(os.path.join(run_dir, f"sweep-{c}")) for c in SWEEP}
    mem = None
    p = os.path.join(run_dir, "memory.json")
    if os.path.exists(p):
        with open(p) as f:
            mem = json.load(f)
    return read_tsv_meta(os.path.join(run_dir, "meta.tsv")), scen, sweep, mem


def mem_rows(mem, proxy):
    return [r for r in (mem or {}).get("runs", []) if r.get("proxy") == proxy]


def mem_summary(mem, proxy):
    """(median RSS at rest in MiB, KiB per idle connection at the largest N measured)."""
    ok = [r for r in mem_rows(mem, proxy) if "error" not in r and r.get("opened")]
    if not ok:
        return None, None
    rest = median([r["rest_kib"] / 1024 for r in ok])
    largest = max(ok, key=lambda r: r["n"])
    return rest, largest.get("per_conn_kib")


# ---------------------------------------------------------------- markdown

def cell_status(sc, peer):
    if not sc.present:
        return "not run"
    if peer in sc.failed:
        return "failed"
    if "*" in sc.failed:
        return "failed"
    return "n/a"


def peers_table(scen):
    out = ["| scenario | proxy | CPU µs/req | × nginx | user µs/req | req/s | p99 ms | peak RSS MiB | errors | new upstream conns | CPU µs/req per run |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for sid, title in SCENARIOS:
        sc = scen[sid]
        if not sc.present:
            continue
        for peer in sc.peers():
            if peer not in sc.rows:
                out.append(f"| {title} | {peer} | {cell_status(sc, peer)} | | | | | | | | {short_reason(sc.failed.get(peer, ''))} |")
                continue
            cpu = sc.med(peer, "proc_us/req")
            user = sc.user_us()[1] if peer == "nuncio" else None
            runs = " / ".join(fmt(v) for v in sc.series(peer, "proc_us/req"))
            name = f"**{peer}**" if peer == "nuncio" else peer
            out.append(f"| {title} | {name} | {fmt(cpu)} | {fmt(sc.ratio(peer))} | {fmt(user) if peer == 'nuncio' else ''} "
                       f"| {fmt(sc.med(peer, 'req_s'), 0)} | {fmt(sc.med(peer, 'p99_ms'))} | {fmt(sc.med(peer, 'rss_mib'), 1)} "
                       f"| {sc.errors(peer)} | {fmt(sc.med(peer, 'up_conns'), 0)} | {runs} |")
        if "*" in sc.failed:
            out.append(f"| {title} | (all) | failed | | | | | | | | {short_reason(sc.failed['*'])} |")
    return out


def short_reason(why):
    why = re.sub(r"\s+", " ", why or "").strip()
    return escape(why[:120] + ("…" if len(why) > 120 else "")).replace("|", "\\|")


def sweep_table(sweep):
    out = ["| connections | nginx CPU µs/req | nuncio CPU µs/req | × nginx | nuncio user µs/req | nginx p99 ms | nuncio p99 ms | errors (nginx / nuncio) | new upstream conns (nginx / nuncio) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c in SWEEP:
        sc = sweep[c]
        if not sc.present:
            continue
        nx = sc.med("nginx", "proc_us/req") if "nginx" in sc.rows else None
        nu = sc.med("nuncio", "proc_us/req") if "nuncio" in sc.rows else None
        nu_cell = fmt(nu) if nu is not None else cell_status(sc, "nuncio")
        nx_cell = fmt(nx) if nx is not None else cell_status(sc, "nginx")
        out.append(f"| {c:,} | {nx_cell} | {nu_cell} | {fmt(sc.ratio('nuncio'))} | {fmt(sc.user_us()[1])} "
                   f"| {fmt(sc.med('nginx', 'p99_ms'))} | {fmt(sc.med('nuncio', 'p99_ms'))} "
                   f"| {sc.errors('nginx')} / {sc.errors('nuncio')} "
                   f"| {fmt(sc.med('nginx', 'up_conns'), 0)} / {fmt(sc.med('nuncio', 'up_conns'), 0)} |")
    return out


def memory_table(mem):
    out = ["| proxy | RSS at rest MiB | idle connections | RSS with them MiB | KiB per idle connection | held (ss) / failed |",
           "|---|---|---|---|---|---|"]
    for proxy in ("nuncio", "nginx"):
        for r in mem_rows(mem, proxy):
            if "error" in r:
                out.append(f"| {proxy} | | {r['n']:,} | failed | | {short_reason(r['error'])} |")
                continue
            out.append(f"| {proxy} | {r['rest_kib'] / 1024:.1f} | {r['opened']:,} | {r['loaded_kib'] / 1024:.1f} "
                       f"| {fmt(r['per_conn_kib'], 1)} | {r['held'] if r['held'] is not None else '?'} / {r['failed']} |")
    return out


def verdict(ok):
    return "n/a" if ok is None else ("**yes**" if ok else "no")


def targets_table(scen, sweep, mem):
    out = ["| target | measured | met |", "|---|---|---|"]
    for sid, label in (("h1-small", "HTTP/1.1 64 B"), ("h1-large", "HTTP/1.1 16 KiB")):
        r = scen[sid].ratio("nuncio") if "nuncio" in scen[sid].rows else None
        out.append(f"| {label}: CPU µs/req ≤ 0.9 × nginx | {fmt(r, suffix=' × nginx')} | {verdict(None if r is None else r <= 0.9)} |")
    h2 = scen["h2c-small"]
    r = h2.ratio("nuncio", base="haproxy") if "nuncio" in h2.rows else None
    why = "" if r is not None or not h2.present else (" (nuncio " + cell_status(h2, "nuncio") + ")")
    out.append(f"| h2c: CPU µs/req ≤ haproxy's | {fmt(r, suffix=' × haproxy')}{why} | {verdict(None if r is None else r <= 1.0)} |")
    sc = scen["h1-small"]
    a, b = sc.med("nuncio", "p99_ms"), sc.med("nginx", "p99_ms")
    ok = None if a is None or b is None else a <= b
    out.append(f"| p99 ≤ nginx's at 64 connections (HTTP/1.1 64 B) | {fmt(a, suffix=' ms')} vs {fmt(b, suffix=' ms')} | {verdict(ok)} |")
    rest, per_conn = mem_summary(mem, "nuncio")
    out.append(f"| idle RSS ≤ 16 MiB (nuncio at rest) | {fmt(rest, 1, ' MiB')} | {verdict(None if rest is None else rest <= 16)} |")
    figs = {c: sweep[c].med("nuncio", "proc_us/req") for c in SWEEP if sweep[c].present}
    base = figs.get(64)
    if base and all(figs.get(c) is not None for c in SWEEP):
        worst = max(figs[c] / base for c in SWEEP)
        out.append(f"| µs/req flat from 64 to 4,096 connections (within {FLAT_TOLERANCE:.0%} of 64) "
                   f"| {' → '.join(fmt(figs[c]) for c in SWEEP)} (max {worst:.2f} × the 64 figure) "
                   f"| {verdict(worst <= 1 + FLAT_TOLERANCE)} |")
    else:
        out.append("| µs/req flat from 64 to 4,096 connections | n/a | n/a |")
    _, nginx_per_conn = mem_summary(mem, "nginx")
    ok = None if per_conn is None or nginx_per_conn is None else per_conn <= nginx_per_conn
    out.append(f"| memory per idle keep-alive connection ≤ nginx's | {fmt(per_conn, 1, ' KiB')} vs {fmt(nginx_per_conn, 1, ' KiB')} | {verdict(ok)} |")
    return out


def peer_versions(meta):
    names = [p for p in meta.get("peers", "nginx").split(",") if p]
    known = {"nginx": (meta.get("nginx") or "").removeprefix("nginx/"), "haproxy": meta.get("haproxy"),
             "pingora": "`../shared/bench/pingora-peer` (the `pingora` crate)"}
    return ", ".join(f"{p} {known[p]}" if known.get(p) else p for p in names)


def markdown(meta, scen, sweep, mem, svg_rel):
    quick = meta.get("quick") == "1"
    runs = meta.get("runs", "?")
    dirty = meta.get("dirty", "0") not in ("", "0")
    L = [BEGIN, "", f"## Whole proxy against its peers (performance issue), {meta.get('date', '?')}", "",
         "_Written by `bench/peers` (`bench/report.py`); run it again to refresh this section. "
         "Edits between the `peers` markers are overwritten._", ""]
    if quick:
        L += ["**Quick smoke run (`--quick`): one short run per proxy, to check that the script works. "
              "These figures are not a result; the targets need `bench/peers` (3 runs × 10 s).**", ""]
    named = [(sid, scen[sid]) for sid, _ in SCENARIOS] + [(f"sweep-{c}", sweep[c]) for c in SWEEP]
    busy = [(sid, sc.busy) for sid, sc in named if sc.busy]
    if busy:
        L += ["**Noisy:** the CPUs were already busy when peers.sh started (other work on the machine); "
              "peers.sh's warning, per scenario:", ""]
        for sid, lines in busy:
            loads = "; ".join(m.group(1) for b in lines for m in [re.search(r"\((cpu[^)]*)\)", b)] if m)
            L.append(f"- {sid}: {escape(loads or lines[0])}")
        L.append("")
    L += [f"Command: `{meta.get('argv', 'bench/peers')}` at commit {meta.get('commit', '?')}"
          f"{' plus uncommitted changes' if dirty else ''}, on {meta.get('cpu', '?')}, nproc {meta.get('nproc', '?')}, "
          f"{meta.get('mem', '?')}, {meta.get('kernel', '?')}, {meta.get('rustc', '')}. "
          f"Peers: {peer_versions(meta)}; load: wrk {meta.get('wrk', '?')}, h2load {meta.get('h2load') or '?'}.", "",
          f"Each proxy runs one worker pinned to CPU 0; the origin nginx and the load generator share CPU 1. "
          f"{runs} run(s) of {meta.get('duration', '?')} s after a {meta.get('warmup', '?')} s warm-up, per proxy and "
          f"scenario, 64 connections unless said otherwise. What ran, per scenario:", "", "```sh"]
    L.append(f"CAND='bench/cputime-wrap CPUTIME_FILE {meta.get('candidate', '?')}'")
    for sid, _ in SCENARIOS:
        if scen[sid].cmd:
            L.append(scen[sid].cmd)
    for c in SWEEP:
        if sweep[c].cmd:
            L.append(sweep[c].cmd)
    if mem:
        L.append(f"bench/idle_memory.py --nuncio target/release/nuncio --counts {','.join(str(c) for c in mem.get('counts', []))}")
    L += ["```", ""]
    if svg_rel:
        L += [f"![CPU µs per request, median of each proxy in each scenario]({svg_rel})", ""]
    L += [f"### CPU per request (medians of {runs} run(s))", "",
          "CPU µs/req is the proxy's utime + stime during the measurement divided by the requests served: "
          "lower is better, and it is the figure to compare (with the fastest proxies CPU 1, the load side, "
          "saturates and caps req/s). × nginx divides medians from the same peers.sh invocation. "
          "user µs/req is nuncio's user-space part (its user share of CPU time over its life, from "
          "`/proc/PID/stat`, recorded by `bench/cputime-wrap`); the rest is the kernel (sockets, epoll).", ""]
    L += peers_table(scen) + [""]
    if any(sweep[c].present for c in SWEEP):
        L += ["### Connection sweep (HTTP/1.1 /small)", ""] + sweep_table(sweep) + [""]
        short = [f"{c:,}" for c in SWEEP if sweep[c].nginx_short]
        if short:
            L += [f"At {', '.join(short)} connections nginx logged \"worker_connections are not enough, reusing "
                  "connections\": peers.sh's nginx config has 8192, shared by client and upstream connections, so "
                  "nginx closed idle keep-alive connections, which wrk counts as read errors.", ""]
    if mem:
        L += ["### Idle keep-alive connections", "",
              "Each proxy starts fresh in front of the origin, serves 200 requests on one connection, and its RSS "
              "(VmRSS summed over its processes: nginx master + worker) is read at rest. Then N connections each "
              "make one request, read the response and stay open and idle; after 1 s the RSS is read again: "
              "KiB per connection = (RSS with them − RSS at rest) / N. Kernel socket memory is not in RSS.", ""]
        L += memory_table(mem) + [""]
    L += ["### Targets (performance issue)", ""] + targets_table(scen, sweep, mem) + [""]
    raw = [sc.rundir for sc in list(scen.values()) + list(sweep.values()) if sc.rundir]
    if raw:
        L += [f"peers.sh's per-run tables and logs: `{os.path.dirname(raw[0])}/` "
              f"(machine-local, not kept).", ""]
    L.append(END)
    return "\n".join(L) + "\n"


def write_docs(path, section):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    b, e = text.find(BEGIN), text.find(END)
    if b != -1 and e != -1 and e > b:
        text = text[:b] + section.rstrip("\n") + text[e + len(END):]
        if not text.endswith("\n"):
            text += "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path + ".tmp-peers"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- SVG

def nice_step(top, ticks=5):
    raw = top / ticks
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def svg_chart(meta, scen):
    peers = []
    for sid, _ in SCENARIOS:
        for p in scen[sid].peers():
            if p not in peers:
                peers.append(p)
    peers.sort(key=lambda p: (PEER_ORDER.index(p) if p in PEER_ORDER else 99, p))
    groups = [(sid, title) for sid, title in SCENARIOS if scen[sid].present]
    vals = {}
    for sid, _ in groups:
        for p in peers:
            s = [v for v in scen[sid].series(p, "proc_us/req") if v is not None]
            vals[(sid, p)] = (median(s), min(s) if s else None, max(s) if s else None)
    top = max([v[2] for v in vals.values() if v[2] is not None] + [1.0]) * 1.12
    step = nice_step(top)
    top = step * (int(top / step) + (0 if top % step == 0 else 1))

    W, H = 820, 440
    left, right, ytop, ybot = 64, 20, 58, 370
    plot_w, plot_h = W - left - right, ybot - ytop
    gw = plot_w / max(len(groups), 1)
    bw = min(34.0, (gw - 40) / max(len(peers), 1))
    y = lambda v: ybot - plot_h * v / top  # noqa: E731

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
         f'CPU µs per request (median of {escape(meta.get("runs", "?"))} run(s); lower is better)</text>',
         f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">one worker on one pinned core, 64 connections; '
         f'{escape(meta.get("date", ""))}{" — QUICK SMOKE RUN, not a result" if meta.get("quick") == "1" else ""}</text>']
    t = 0.0
    while t <= top + 1e-9:
        yy = y(t)
        s.append(f'<line x1="{left}" x2="{W - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e3e3"/>')
        s.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#444">{t:g}</text>')
        t += step
    s.append(f'<line x1="{left}" x2="{left}" y1="{ytop}" y2="{ybot}" stroke="#888"/>')
    s.append(f'<line x1="{left}" x2="{W - right}" y1="{ybot}" y2="{ybot}" stroke="#888"/>')
    s.append(f'<text transform="translate(16 {(ytop + ybot) / 2}) rotate(-90)" text-anchor="middle" fill="#444">CPU µs / request</text>')

    for gi, (sid, title) in enumerate(groups):
        gx = left + gi * gw
        x0 = gx + (gw - bw * len(peers)) / 2
        s.append(f'<text x="{gx + gw / 2:.1f}" y="{ybot + 20}" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
        for pi, p in enumerate(peers):
            bx = x0 + pi * bw + 2
            w = bw - 4
            med, lo, hi = vals[(sid, p)]
            if med is None:
                label = cell_status(scen[sid], p) if p in scen[sid].peers() else "not run"
                s.append(f'<text x="{bx + w / 2 + 4:.1f}" y="{ybot - 6}" font-size="12" fill="#b00" '
                         f'transform="rotate(-90 {bx + w / 2 + 4:.1f} {ybot - 6})">{escape(p)}: {escape(label)}</text>')
                continue
            s.append(f'<rect x="{bx:.1f}" y="{y(med):.1f}" width="{w:.1f}" height="{ybot - y(med):.1f}" fill="{COLORS.get(p, "#999")}">'
                     f'<title>{escape(p)}: {med:.2f} µs/req</title></rect>')
            if p == "nuncio":
                user = scen[sid].user_us()[1]
                if user is not None:
                    s.append(f'<rect x="{bx:.1f}" y="{y(user):.1f}" width="{w:.1f}" height="{ybot - y(user):.1f}" '
                             f'fill="{NUNCIO_USER_COLOR}"><title>nuncio user space: {user:.2f} µs/req</title></rect>')
            if lo is not None and hi is not None and hi > lo:
                cx = bx + w / 2
                s.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(hi):.1f}" y2="{y(lo):.1f}" stroke="#333"/>')
                s.append(f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{y(hi):.1f}" y2="{y(hi):.1f}" stroke="#333"/>')
                s.append(f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{y(lo):.1f}" y2="{y(lo):.1f}" stroke="#333"/>')
            s.append(f'<text x="{bx + w / 2:.1f}" y="{y(max(med, hi or med)) - 4:.1f}" text-anchor="middle" font-size="10">{med:.1f}</text>')
        # the target for nuncio in this scenario: a dashed line over the group's bars
        base = "haproxy" if sid == "h2c-small" else "nginx"
        ref = vals.get((sid, base), (None,))[0]
        if ref is not None:
            tv = ref * (1.0 if base == "haproxy" else 0.9)
            s.append(f'<line x1="{x0 - 6:.1f}" x2="{x0 + bw * len(peers) + 6:.1f}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" '
                     f'stroke="#222" stroke-width="1.5" stroke-dasharray="6 3"/>')

    lx, ly = left + 4, H - 26
    items = [(COLORS.get(p, "#999"), p) for p in peers]
    if "nuncio" in peers:
        items.append((NUNCIO_USER_COLOR, "nuncio, user-space part"))
    for color, name in items:
        s.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{color}"/>')
        s.append(f'<text x="{lx + 16}" y="{ly}">{escape(name)}</text>')
        lx += 28 + 7 * len(name)
    s.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{ly - 4}" y2="{ly - 4}" stroke="#222" stroke-width="1.5" stroke-dasharray="6 3"/>')
    s.append(f'<text x="{lx + 26}" y="{ly}">nuncio\'s target</text>')
    s.append(f'<text x="{W - right}" y="{H - 8}" text-anchor="end" font-size="10" fill="#666">'
             f'target: 0.9 × nginx (HTTP/1.1), haproxy (h2c); whiskers: min–max of the runs</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--docs", help="docs/benchmarks.md: replace (or append) the peers section")
    ap.add_argument("--svg", help="write the chart here, e.g. docs/img/peers.svg")
    args = ap.parse_args()
    meta, scen, sweep, mem = load(args.run_dir)
    svg_rel = None
    if args.svg:
        os.makedirs(os.path.dirname(os.path.abspath(args.svg)), exist_ok=True)
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(svg_chart(meta, scen))
        base = os.path.dirname(os.path.abspath(args.docs)) if args.docs else os.getcwd()
        svg_rel = os.path.relpath(os.path.abspath(args.svg), base)
    section = markdown(meta, scen, sweep, mem, svg_rel)
    with open(os.path.join(args.run_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(section)
    if args.docs:
        write_docs(args.docs, section)
    sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
