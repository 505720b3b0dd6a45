#!/usr/bin/env python3
"""Summarises one load run of benches/load/run.sh.

Reads the raw CSV (one row per measurement) and the run's metadata JSON, prints Markdown tables
with the median of the rounds for each target and Meridian's ratio to each peer, and writes the
summary next to the raw files as JSON and Markdown. Tables, for the parts that ran:
- plain HTTP/1.1: saturation, fixed rates, CPU per request, peak RSS;
- HTTPS (--tls): keep-alive saturation, and new connections per second with full and with
  resumed TLS 1.3 handshakes, with the proxy's CPU per request or per connection;
- idle connections (--idle, from the .idle.csv beside the raw CSV): KiB of RSS per connection;
- table swaps under load (--swap, from the .swap.csv beside the raw CSV): Meridian's latency at a
  fixed rate with a big table in force, (a) unchanged and (b) replaced every few seconds, and the
  ratio (b)/(a).

Usage: summarize.py RAW_CSV META_JSON OUT_PREFIX
"""

import csv
import json
import os
import statistics
import sys

import pooled  # the paired per-round ratios, shared with pooled.py's view over many runs

ORDER = [
    "nginx",
    "haproxy",
    "meridian",
    "meridian-b",
    "meridian-nolog",
    "meridian-jemalloc",
    "meridian-mimalloc",
    "pingora",
    "pingora-nosteal",
    "pingora-h1",
]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def times(v):
    return fmt(v, 2) + "×"


TLS_KINDS = ("tls-keepalive", "tls-full", "tls-resumed")


def tls_summary(rows, targets):
    """Medians per target and kind of the HTTPS rounds."""
    out = {}
    for t in targets:
        per = {}
        for kind in TLS_KINDS:
            rs = [r for r in rows if r["target"] == t and r["kind"] == kind]
            if not rs:
                continue
            reqs = sum(int(r["requests"] or 0) for r in rs)
            full = [num(r.get("tls_full")) for r in rs]
            resumed = [num(r.get("tls_resumed")) for r in rs]
            seen = None
            if all(v is not None for v in full + resumed) and sum(full) + sum(resumed) > 0:
                seen = sum(resumed) / (sum(full) + sum(resumed))
            per[kind] = {
                "rps": median(num(r["rps"]) for r in rs),
                "rps_rounds": [num(r["rps"]) for r in rs],
                "p50_ms": median(num(r["p50_ms"]) for r in rs),
                "p99_ms": median(num(r["p99_ms"]) for r in rs),
                "cpu_us_per_req": median(num(r["proxy_cpu_us_per_req"]) for r in rs),
                "loadgen_cpu_s": median(num(r["loadgen_cpu_s"]) for r in rs),
                "errors": sum(int(r["errors"] or 0) for r in rs),
                # TCP connections accepted per request: 1.0 when every request had its own.
                "new_conns_per_req": (
                    sum(int(num(r.get("new_conns")) or 0) for r in rs) / reqs if reqs else None
                ),
                "resumed_share": seen,
            }
        if per:
            out[t] = per
    return out


def tls_tables(tls, meta):
    targets = list(tls)
    lines = [
        "HTTPS (TLS 1.3, HTTP/1.1, one "
        + {"ec256": "ECDSA P-256", "rsa2048": "RSA 2048"}.get(meta.get("tls", {}).get("key"), "?")
        + " certificate): keep-alive requests, and new connections with one request each",
        "",
    ]
    head = [
        "target",
        "keep-alive req/s",
        "p50 / p99 (ms)",
        "CPU µs/req",
        "full handshakes/s",
        "p50 / p99 (ms)",
        "CPU µs per full handshake+req",
        "resumed handshakes/s",
        "CPU µs per resumed handshake+req",
        "conns/req (full / resumed)",
        "resumed share (full / resumed run)",
        "errors",
    ]
    body = []
    for t in targets:
        k, f, r = (tls[t].get(x, {}) for x in TLS_KINDS)
        shares = " / ".join(
            "n/a" if d.get("resumed_share") is None else f"{100 * d['resumed_share']:.0f}%"
            for d in (f, r)
        )
        conns = " / ".join(fmt(d.get("new_conns_per_req"), 2) for d in (f, r))
        body.append([
            t,
            fmt(k.get("rps"), 0),
            f"{fmt(k.get('p50_ms'), 2)} / {fmt(k.get('p99_ms'), 2)}",
            fmt(k.get("cpu_us_per_req")),
            fmt(f.get("rps"), 0),
            f"{fmt(f.get('p50_ms'), 2)} / {fmt(f.get('p99_ms'), 2)}",
            fmt(f.get("cpu_us_per_req")),
            fmt(r.get("rps"), 0),
            fmt(r.get("cpu_us_per_req")),
            conns,
            shares,
            str(sum(d.get("errors", 0) for d in (k, f, r))),
        ])
    lines += table(head, body)
    ratios = {}
    ours = [t for t in targets if t.startswith("meridian")]
    peers = [t for t in targets if t in ("nginx", "haproxy")]
    for mine in ours:
        for peer in peers:
            m, p = tls[mine], tls[peer]

            def rr(kind, key):
                return ratio(m.get(kind, {}).get(key), p.get(kind, {}).get(key))

            ratios[f"{mine} / {peer}"] = {
                "keepalive_rps": rr("tls-keepalive", "rps"),
                "keepalive_cpu_us_per_req": rr("tls-keepalive", "cpu_us_per_req"),
                "full_rps": rr("tls-full", "rps"),
                "full_cpu_us_per_conn": rr("tls-full", "cpu_us_per_req"),
                "resumed_rps": rr("tls-resumed", "rps"),
                "resumed_cpu_us_per_conn": rr("tls-resumed", "cpu_us_per_req"),
            }
    if ratios:
        lines.append("")
        head = [
            "ratio",
            "keep-alive req/s (higher is better)",
            "keep-alive CPU/req (lower is better)",
            "full handshakes/s",
            "CPU/full handshake",
            "resumed handshakes/s",
            "CPU/resumed handshake",
        ]
        lines += table(head, [
            [name] + [times(r[k]) for k in (
                "keepalive_rps", "keepalive_cpu_us_per_req", "full_rps", "full_cpu_us_per_conn",
                "resumed_rps", "resumed_cpu_us_per_conn")]
            for name, r in ratios.items()
        ])
    neg = meta.get("tls", {}).get("negotiated", {})
    if neg:
        lines.append("")
        lines.append("Negotiated with an OpenSSL client (as wrk): " + "; ".join(
            f"{t}: {v}" for t, v in neg.items()) + ".")
    return lines, ratios


def idle_tables(path, targets):
    with open(path, newline="") as f:
        rows = {r["target"]: r for r in csv.DictReader(f)}
    summary = {}
    for t in targets:
        r = rows.get(t)
        if r is None:
            continue
        summary[t] = {
            "conns": int(num(r["conns"]) or 0),
            "opened": int(num(r["opened"]) or 0),
            "open_at_measure": int(num(r["open_at_measure"]) or 0),
            "closed_by_proxy": int(num(r["closed_by_proxy"]) or 0),
            "unexpected_data": int(num(r["unexpected_data"]) or 0),
            "reused_ok": None if num(r["reused_ok"]) is None else int(num(r["reused_ok"])),
            "rss_before_mib": None if num(r["rss_before_kib"]) is None else num(r["rss_before_kib"]) / 1024,
            "rss_held_mib": None if num(r["rss_held_kib"]) is None else num(r["rss_held_kib"]) / 1024,
            "rss_after_close_mib": (
                None if num(r["rss_after_close_kib"]) is None else num(r["rss_after_close_kib"]) / 1024
            ),
            "kib_per_conn": num(r["kib_per_conn"]),
            "open_s": num(r["open_s"]),
            "open_errors": r.get("open_errors", ""),
            "reuse_errors": r.get("reuse_errors", ""),
        }
    n = max((s["conns"] for s in summary.values()), default=0)
    hold = {num(r["hold_s"]) for r in rows.values()}
    lines = [
        f"Idle keep-alive connections: {n:,} per target, one request each, held "
        f"{fmt(min(hold) if hold else None, 0)} s; RSS of the proxy's processes",
        "",
    ]
    head = ["target", "open at measurement", "RSS before (MiB)", "RSS held (MiB)", "KiB per connection",
            "RSS after close (MiB)", "reused OK", "opening (s)"]
    body = []
    for t, s in summary.items():
        open_cell = f"{s['open_at_measure']:,} / {s['conns']:,}"
        if s["closed_by_proxy"] or s["unexpected_data"]:
            open_cell += f" ({s['closed_by_proxy']} closed by the proxy, {s['unexpected_data']} with data)"
        if s["open_errors"]:
            open_cell += f" (open errors: {s['open_errors']})"
        body.append([
            t,
            open_cell,
            fmt(s["rss_before_mib"]),
            fmt(s["rss_held_mib"]),
            fmt(s["kib_per_conn"], 2),
            fmt(s["rss_after_close_mib"]),
            "n/a" if s["reused_ok"] is None else f"{s['reused_ok']:,}",
            fmt(s["open_s"], 1),
        ])
    lines += table(head, body)
    ratios = {}
    for mine in [t for t in summary if t.startswith(("meridian", "pingora"))]:
        for peer in [t for t in summary if t in ("nginx", "haproxy")]:
            ratios[f"{mine} / {peer}"] = {
                "kib_per_conn": ratio(summary[mine]["kib_per_conn"], summary[peer]["kib_per_conn"])
            }
    if ratios:
        lines.append("")
        lines += table(["ratio", "KiB per idle connection (lower is better)"],
                       [[name, times(r["kib_per_conn"])] for name, r in ratios.items()])
    return lines, summary, ratios


def swap_tables(path, targets, meta):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    sw = meta.get("swap", {})
    keys = ["p50_ms", "p99_ms", "p999_ms", "max_ms", "proxy_cpu_us_per_req", "proxy_cpu_s", "rps",
            "apply_ms_median", "apply_ms_max", "build_p99_ms", "build_max_ms", "swap_max_ms_median",
            "quiet_p99_ms", "quiet_max_ms", "quarter_max_ms_median", "second_max_ms_median", "rss_kib",
            "other_cores", "table_threads_user_s", "table_threads_sys_s", "proxy_sys_s",
            "serving_threads_run_s", "serving_threads_runqueue_s"]
    summary = {}
    for t in targets:
        per = {}
        for phase in ("steady", "churn"):
            rs = [r for r in rows if r["target"] == t and r["phase"] == phase]
            if not rs:
                continue
            d = {k: median(num(r.get(k)) for r in rs) for k in keys}
            d.update({
                "rounds": len(rs),
                "requests": sum(int(num(r["requests"]) or 0) for r in rs),
                "errors": sum(int(num(r["errors"]) or 0) for r in rs),
                "swaps_written": sum(int(num(r["swaps_written"]) or 0) for r in rs),
                "swaps_applied": sum(int(num(r["swaps_applied"]) or 0) for r in rs),
                "rejections": sum(int(num(r["rejections"]) or 0) for r in rs),
                "table_version": max(int(num(r["table_version"]) or 0) for r in rs),
                "inflight_series": max(int(num(r["inflight_series"]) or 0) for r in rs),
            })
            per[phase] = d
        if per:
            a, b = per.get("steady", {}), per.get("churn", {})
            per["ratio"] = {k: ratio(b.get(k), a.get(k)) for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms",
                                                                   "proxy_cpu_us_per_req")}
            summary[t] = per
    lines = [
        f"Table swaps under load: {fmt(num(sw.get('rate')), 0)} req/s by oha (latency-corrected), "
        f"{sw.get('connections', '?')} connections, {sw.get('duration_s', '?')} s per run; a table of "
        f"{num(sw.get('endpoints')) or 0:,.0f} extra endpoints in force, (a) unchanged, (b) replaced "
        f"every {sw.get('every_s', '?')} s (file polled every {sw.get('poll_ms', '?')} ms)",
        "",
    ]
    head = ["target", "run", "p50 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)", "swaps applied / written",
            "rejections", "requests", "errors", "CPU µs/req"]
    body = []
    for t, per in summary.items():
        for phase, label in (("steady", "(a) no change"), ("churn", "(b) swaps")):
            d = per.get(phase)
            if not d:
                continue
            body.append([
                t, label, fmt(d["p50_ms"], 2), fmt(d["p99_ms"], 2), fmt(d["p999_ms"], 2), fmt(d["max_ms"], 2),
                f"{d['swaps_applied']} / {d['swaps_written']}", str(d["rejections"]), f"{d['requests']:,}",
                str(d["errors"]), fmt(d["proxy_cpu_us_per_req"]),
            ])
        r = per["ratio"]
        body.append([t, "(b) / (a)", times(r["p50_ms"]), times(r["p99_ms"]), times(r["p999_ms"]),
                     times(r["max_ms"]), "", "", "", "", times(r["proxy_cpu_us_per_req"])])
    lines += table(head, body)
    notes = []
    for t, per in summary.items():
        a, b = per.get("steady", {}), per.get("churn")
        if not b:
            continue
        # The gateway's CPU for one swap: (b)'s CPU beyond (a)'s per-request cost, per swap.
        per_swap = None
        if b["swaps_applied"] and a.get("proxy_cpu_us_per_req") is not None and b["proxy_cpu_us_per_req"] is not None:
            per_swap = (b["proxy_cpu_us_per_req"] - a["proxy_cpu_us_per_req"]) * b["requests"] / b["swaps_applied"] / 1000
        def threads(d):
            u, k = d.get("table_threads_user_s"), d.get("table_threads_sys_s")
            return None if u is None or k is None else u + k
        tb, ta = threads(b), threads(a)
        per_swap_threads = None
        if tb is not None and b["swaps_applied"]:
            per_swap_threads = (tb - (ta or 0)) / b["swaps_applied"] * 1000
        notes.append(
            f"{t}: a swap took {fmt(b['apply_ms_median'], 0)} ms from the file's write to \"routing table applied\" "
            f"(median; max {fmt(b['apply_ms_max'], 0)} ms), and cost about {fmt(per_swap, 0)} ms of the gateway's CPU "
            f"({fmt(per_swap_threads, 0)} ms on the table watcher and reaper threads, "
            f"{fmt(b.get('table_threads_sys_s'), 2)} s of their {fmt(tb, 2)} s in the kernel; in (a) these threads, "
            f"polling the unchanged file, used {fmt(ta, 2)} s). Its other threads (the worker) waited "
            f"{fmt(a.get('serving_threads_runqueue_s'), 2)} s / {fmt(b.get('serving_threads_runqueue_s'), 2)} s "
            f"for a CPU during (a) / (b), while other processes used "
            f"{fmt(a.get('other_cores'), 2)} / {fmt(b.get('other_cores'), 2)} cores. "
            f"(b) split by time: while a table was built, p99 {fmt(b['build_p99_ms'], 2)} ms and max "
            f"{fmt(b['build_max_ms'], 2)} ms; the worst request in the 250 ms after each swap, "
            f"{fmt(b['swap_max_ms_median'], 2)} ms (median over swaps; in (a) the worst per 250 ms is "
            f"{fmt(a.get('quarter_max_ms_median'), 2)} ms, median); the other requests, p99 "
            f"{fmt(b['quiet_p99_ms'], 2)} ms and max {fmt(b['quiet_max_ms'], 2)} ms. RSS "
            f"{fmt((a.get('rss_kib') or 0) / 1024, 0)} MiB after (a), {fmt((b['rss_kib'] or 0) / 1024, 0)} MiB after (b); "
            f"{b['inflight_series']:,} per-endpoint gauges in /metrics."
        )
    if notes:
        lines += [""] + notes
    gen = sw.get("gen") or {}
    if gen.get("seconds") is not None:
        lines += ["", f"Tables: {gen.get('versions')} versions of {fmt((gen.get('bytes') or [0])[0] / 1e6, 1)} MB, "
                  f"written in {gen['seconds']} s; `meridian validate` of one: {sw.get('validate_ms')} ms."]
    return lines, summary


def paired_p99(rows, rates, ours, peers):
    """Fixed-rate p99 round by round. Within a round the targets run back to back, so a noisy
    stretch of the machine tends to hit them alike; the median of the per-round ratios, and how
    many rounds each side had the lower p99, are steadier than a ratio of medians."""
    lines, paired = [], {}
    for rate in rates:
        per = {}
        for r in rows:
            if r["kind"] == "fixed" and int(r["rate"]) == rate and num(r["p99_ms"]):
                per.setdefault(r["target"], {})[r["round"]] = num(r["p99_ms"])
        if not per:
            continue
        rounds = sorted({k for v in per.values() for k in v}, key=int)
        lines.append(f"p99 @{rate // 1000}k round by round (ms):")
        lines.append("")
        lines.append("| target | " + " | ".join(f"round {k}" for k in rounds) + " |")
        lines.append("|" + "|".join(["---"] * (len(rounds) + 1)) + "|")
        for t, v in per.items():
            lines.append(f"| {t} | " + " | ".join(fmt(v.get(k), 2) for k in rounds) + " |")
        lines.append("")
        for mine in ours:
            for peer in peers:
                rs = pooled.ratios(rows, mine, peer, "fixed", "p99_ms", str(rate))
                if not rs:
                    continue
                wins = sum(1 for x in rs if x <= 1)
                paired[f"{mine} / {peer} @{rate}"] = {"median_ratio": median(rs), "lower_or_equal": wins, "rounds": len(rs)}
                lines.append(
                    f"- {mine} / {peer}: median of the per-round ratios {fmt(median(rs), 2)}×; "
                    f"{mine}'s p99 was the lower or equal in {wins} of {len(rs)} rounds"
                )
        lines.append("")
    return lines[:-1] if lines else lines, paired


def main():
    raw_csv, meta_json, out_prefix = sys.argv[1:4]
    with open(raw_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(meta_json) as f:
        meta = json.load(f)
    parts = meta["settings"].get("parts", ["http"])
    rates = [int(r) for r in meta["settings"]["rates"]]
    targets = [t for t in ORDER if t in meta["settings"]["targets"]]
    # Ratios: Meridian (and its variants, and the bare Pingora reference) to each peer.
    ours = [t for t in targets if t.startswith(("meridian", "pingora"))]
    peers = [t for t in targets if t in ("nginx", "haproxy")]

    summary = {}
    for t in targets:
        sat = [r for r in rows if r["target"] == t and r["kind"] == "saturation"]
        s = {
            "rps": median(num(r["rps"]) for r in sat),
            "rps_rounds": [num(r["rps"]) for r in sat],
            "cpu_us_per_req": median(num(r["proxy_cpu_us_per_req"]) for r in sat),
            "origin_cpu_us_per_req": median(num(r["origin_cpu_us_per_req"]) for r in sat),
            "sat_p50_ms": median(num(r["p50_ms"]) for r in sat),
            "sat_p99_ms": median(num(r["p99_ms"]) for r in sat),
            "errors": sum(
                int(r["errors"] or 0)
                for r in rows
                if r["target"] == t and r["kind"] in ("saturation", "fixed")
            ),
            "peak_rss_mib": num(meta.get("peak_rss_kib", {}).get(t)),
            "fixed": {},
        }
        if s["peak_rss_mib"] is not None:
            s["peak_rss_mib"] /= 1024
        for rate in rates:
            fx = [
                r
                for r in rows
                if r["target"] == t and r["kind"] == "fixed" and int(r["rate"]) == rate
            ]
            s["fixed"][str(rate)] = {
                "p50_ms": median(num(r["p50_ms"]) for r in fx),
                "p99_ms": median(num(r["p99_ms"]) for r in fx),
                "achieved_rps": median(num(r["rps"]) for r in fx),
                "cpu_us_per_req": median(num(r["proxy_cpu_us_per_req"]) for r in fx),
            }
        summary[t] = s

    ratios = {}
    for mine in ours:
        m = summary[mine]
        for peer in peers:
            p = summary[peer]
            r = {
                "rps": ratio(m["rps"], p["rps"]),
                "cpu_us_per_req": ratio(m["cpu_us_per_req"], p["cpu_us_per_req"]),
                "peak_rss": ratio(m["peak_rss_mib"], p["peak_rss_mib"]),
            }
            for rate in rates:
                k = str(rate)
                r[f"p99@{k}"] = ratio(m["fixed"][k]["p99_ms"], p["fixed"][k]["p99_ms"])
                r[f"p50@{k}"] = ratio(m["fixed"][k]["p50_ms"], p["fixed"][k]["p50_ms"])
            ratios[f"{mine} / {peer}"] = r

    lines = []
    head = ["target", "req/s (median)"]
    for rate in rates:
        head.append(f"p50 / p99 @{rate // 1000}k (ms)")
    head += ["CPU µs/req", "origin µs/req", "peak RSS (MiB)", "errors"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for t in targets:
        s = summary[t]
        cells = [t, fmt(s["rps"], 0)]
        for rate in rates:
            f = s["fixed"][str(rate)]
            achieved = f["achieved_rps"]
            short = achieved is not None and achieved < 0.97 * rate
            cell = f"{fmt(f['p50_ms'], 2)} / {fmt(f['p99_ms'], 2)}"
            if short:
                cell += f" (only {fmt(achieved, 0)}/s)"
            cells.append(cell)
        cells += [
            fmt(s["cpu_us_per_req"]),
            fmt(s["origin_cpu_us_per_req"]),
            fmt(s["peak_rss_mib"]),
            str(s["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    head = ["ratio", "req/s (higher is better)"]
    for rate in rates:
        head.append(f"p99 @{rate // 1000}k (lower is better)")
    head += ["CPU/req (lower is better)", "peak RSS"]
    if ratios:
        lines.append("")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for name, r in ratios.items():
        cells = [name, fmt(r["rps"], 2) + "×"]
        for rate in rates:
            cells.append(fmt(r[f"p99@{rate}"], 2) + "×")
        cells += [fmt(r["cpu_us_per_req"], 2) + "×", fmt(r["peak_rss"], 2) + "×"]
        lines.append("| " + " | ".join(cells) + " |")
    paired_lines, paired = paired_p99(rows, rates, ours, peers)
    if paired_lines:
        lines += [""] + paired_lines
    if "http" not in parts:
        lines, summary, ratios, paired = [], {}, {}, {}

    tls, tls_ratios = {}, {}
    if "tls" in parts:
        tls = tls_summary(rows, targets)
        if tls:
            tls_lines, tls_ratios = tls_tables(tls, meta)
            lines += ([""] if lines else []) + tls_lines
    idle, idle_ratios = {}, {}
    idle_csv = meta.get("idle", {}).get("csv")
    if "idle" in parts and idle_csv:
        path = os.path.join(os.path.dirname(os.path.abspath(raw_csv)), idle_csv)
        if os.path.exists(path):
            idle_lines, idle, idle_ratios = idle_tables(path, targets)
            lines += ([""] if lines else []) + idle_lines
    swap = {}
    swap_csv = meta.get("swap", {}).get("csv")
    if "swap" in parts and swap_csv:
        path = os.path.join(os.path.dirname(os.path.abspath(raw_csv)), swap_csv)
        if os.path.exists(path):
            swap_lines, swap = swap_tables(path, targets, meta)
            lines += ([""] if lines else []) + swap_lines
    text = "\n".join(lines)

    ctx = meta["machine"]
    note = (
        f"{meta['date']} · {ctx['nproc']} CPUs ({ctx['cpu_model']}) · "
        f"load average before/after: {ctx['loadavg_before']} / {ctx['loadavg_after']}"
    )
    if rows:
        steal = [num(r.get("steal_cores")) for r in rows if r.get("steal_cores")]
        note += (
            f" · other processes used {fmt(median(num(r['other_cores']) for r in rows), 2)} cores "
            + (f"and the hypervisor stole {fmt(median(steal), 2)} cores (max {fmt(max(steal), 2)}) " if steal else "")
            + f"(median over measurements) · rounds: {meta['settings']['rounds']}, "
            f"saturation {meta['settings']['duration_s']} s"
        )
    if "http" in parts and rates:
        note += (
            f", fixed rate {meta['settings']['fixed_duration_s']} s "
            f"with {meta['settings']['latency_tool']}"
        )
    print(text)
    print()
    print(note)

    with open(out_prefix + ".summary.json", "w") as f:
        json.dump(
            {
                "meta": meta,
                "summary": summary,
                "ratios": ratios,
                "paired_p99": paired,
                "tls": tls,
                "tls_ratios": tls_ratios,
                "idle": idle,
                "idle_ratios": idle_ratios,
                "swap": swap,
            },
            f,
            indent=2,
        )
    with open(out_prefix + ".summary.md", "w") as f:
        f.write(text + "\n\n" + note + "\n")


if __name__ == "__main__":
    main()
