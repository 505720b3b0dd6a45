#!/usr/bin/env python3
"""Summarises one load run of benches/load/run.sh.

Reads the raw CSV (one row per measurement) and the run's metadata JSON, prints a Markdown table
with the median of the rounds for each target and Meridian's ratio to each peer, and writes the
summary next to the raw files as JSON and Markdown.

Usage: summarize.py RAW_CSV META_JSON OUT_PREFIX
"""

import csv
import json
import statistics
import sys

ORDER = [
    "nginx",
    "haproxy",
    "meridian",
    "meridian-nolog",
    "meridian-jemalloc",
    "meridian-mimalloc",
    "pingora",
    "pingora-nosteal",
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


def main():
    raw_csv, meta_json, out_prefix = sys.argv[1:4]
    with open(raw_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(meta_json) as f:
        meta = json.load(f)
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
            "errors": sum(int(r["errors"] or 0) for r in rows if r["target"] == t),
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
    table = "\n".join(lines)

    ctx = meta["machine"]
    note = (
        f"{meta['date']} · {ctx['nproc']} CPUs ({ctx['cpu_model']}) · "
        f"load average before/after: {ctx['loadavg_before']} / {ctx['loadavg_after']} · "
        f"other processes used {fmt(median(num(r['other_cores'] ) for r in rows), 2)} cores "
        f"(median over measurements) · rounds: {meta['settings']['rounds']}, "
        f"saturation {meta['settings']['duration_s']} s, fixed rate {meta['settings']['fixed_duration_s']} s "
        f"with {meta['settings']['latency_tool']}"
    )
    print(table)
    print()
    print(note)

    with open(out_prefix + ".summary.json", "w") as f:
        json.dump({"meta": meta, "summary": summary, "ratios": ratios}, f, indent=2)
    with open(out_prefix + ".summary.md", "w") as f:
        f.write(table + "\n\n" + note + "\n")


if __name__ == "__main__":
    main()
