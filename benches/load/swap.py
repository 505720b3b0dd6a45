#!/usr/bin/env python3
"""Table swaps under load (run.sh --swap): big tables, the swapper, and the analysis.

  gen BASE OUTDIR       from the bench table BASE (the 50 routes and their subsets), writes
                        OUTDIR/body-K.yaml for K < --versions: BASE without its `version:` line
                        plus --endpoints extra endpoints in subsets of --per-subset (bulk000@v1,
                        ...), on 127.0.0.x:port addresses no route sends traffic to. The versions
                        differ: each rotates every subset's endpoint list by a different amount
                        and replaces 1 % of its addresses, so a swap to the next one changes the
                        order of every list and the membership of some. Prints a JSON line.
  swap BODY... TABLE    replaces TABLE (atomically: a temp file in the same folder, then a rename,
                        as `mv` does) every --every seconds, from --anchor + --first until
                        --anchor + --until (wall clock, epoch seconds), with `version: V` (V from
                        --start-version, +1 each time) and the bodies in turn, starting with the
                        first. Logs "epoch_seconds version body" per replacement to --log.
  analyze OHA_JSON      p50/p99/p99.9/max, requests and errors from oha's JSON; with --db (oha's
                        --db-url file), --anchor (wall-clock launch time of oha) and --swaps (the
                        swapper's log) and --gateway-log (its "routing table applied" lines), how
                        long each replacement took to be applied, and the latency of the requests
                        scheduled while the gateway built the new table ("build": from the write
                        to the applied line), in the --window seconds after it was applied
                        ("swap"), and at other times ("quiet"). Prints one JSON object.

Standard library only. Every step is bounded: `swap` stops at --until, the others read files.
"""

import argparse
import json
import os
import re
import sqlite3
import statistics
import sys
import time
from datetime import datetime


def gen(args):
    t0 = time.monotonic()
    with open(args.base) as f:
        lines = [l for l in f.read().splitlines() if not l.startswith("version:")]
    try:
        at = lines.index("subsets:") + 1
    except ValueError:
        sys.exit("swap.py gen: no top-level 'subsets:' in " + args.base)
    n_sub = (args.endpoints + args.per_subset - 1) // args.per_subset
    if n_sub > 250:
        sys.exit("swap.py gen: at most 250 subsets (one 127.0.0.x address each)")
    os.makedirs(args.outdir, exist_ok=True)
    churn = max(1, args.per_subset // 100)
    sizes = []
    for k in range(args.versions):
        extra = []
        left = args.endpoints
        for i in range(n_sub):
            n = min(args.per_subset, left)
            left -= n
            ip = f"127.0.0.{i + 2}"
            ports = [20000 + j for j in range(n)]
            # 1 % of the addresses are this version's own: a new port in place of an old one.
            lo = (k * churn) % n
            for j in range(lo, min(n, lo + churn)):
                ports[j] = 40000 + k * args.per_subset + j
            shift = (k * 337 + i) % n
            ports = ports[shift:] + ports[:shift]
            extra.append(f"  - name: bulk{i:03d}@v1")
            extra.append("    endpoints:")
            zones = "abc"
            extra += [
                f'      - {{ address: "{ip}:{p}", region: {args.region}, zone: {zones[p % 3]} }}'
                for p in ports
            ]
        text = "\n".join(lines[:at] + extra + lines[at:]) + "\n"
        path = os.path.join(args.outdir, f"body-{k}.yaml")
        with open(path, "w") as f:
            f.write(text)
        sizes.append(len(text))
    print(json.dumps({
        "versions": args.versions,
        "extra_subsets": n_sub,
        "extra_endpoints": args.endpoints,
        "bytes": sizes,
        "seconds": round(time.monotonic() - t0, 2),
    }))


def swap(args):
    bodies = []
    for p in args.bodies:
        with open(p, "rb") as f:
            bodies.append((os.path.basename(p), f.read()))
    folder = os.path.dirname(os.path.abspath(args.table))
    tmp = os.path.join(folder, "." + os.path.basename(args.table) + ".swap-tmp")
    version = args.start_version
    at = args.anchor + args.first
    end = args.anchor + args.until
    i = 0
    with open(args.log, "a") as log:
        while at <= end:
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            name, body = bodies[i % len(bodies)]
            with open(tmp, "wb") as f:
                f.write(b"version: %d\n" % version)
                f.write(body)
            os.replace(tmp, args.table)
            log.write(f"{time.time():.6f} {version} {name}\n")
            log.flush()
            version += 1
            i += 1
            at += args.every


def pct(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def ms(v):
    return None if v is None else round(v * 1000, 3)


def applied_times(path):
    """version -> epoch seconds of the gateway's 'routing table applied' line."""
    out = {}
    stamp = re.compile(r"^(\S+)\s")
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if "routing table applied" not in line:
                    continue
                line = ansi.sub("", line)
                m = stamp.match(line)
                v = re.search(r"version=(\d+)", line)
                if not m or not v:
                    continue
                s = m.group(1).replace("Z", "+00:00")
                # Python before 3.11 takes at most 6 digits of fraction.
                s = re.sub(r"(\.\d{6})\d+", r"\1", s)
                try:
                    out[int(v.group(1))] = datetime.fromisoformat(s).timestamp()
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def analyze(args):
    out = {}
    try:
        with open(args.oha_json) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        print(json.dumps({"error": f"no oha result: {e}"}))
        return
    codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 400)
    # Requests cut off at the deadline are not failures; every other error is (as run.sh).
    errs = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
    lat = d.get("latencyPercentiles", {})
    out.update({
        "requests": sum(codes.values()),
        "rps": round(d["summary"].get("requestsPerSec") or 0, 1),
        "errors": sum(codes.values()) - ok + errs,
        "error_kinds": d.get("errorDistribution", {}),
        "p50_ms": ms(lat.get("p50")),
        "p99_ms": ms(lat.get("p99")),
        "p999_ms": ms(lat.get("p99.9")),
        "max_ms": ms(d["summary"].get("slowest")),
    })
    swaps = []
    if args.swaps and os.path.exists(args.swaps):
        with open(args.swaps) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    swaps.append((float(parts[0]), int(parts[1])))
    out["swaps_written"] = len(swaps)
    applied = applied_times(args.gateway_log) if args.gateway_log else {}
    if swaps and args.gateway_log:
        delays = [applied[v] - t for t, v in swaps if v in applied]
        out["swaps_applied_in_log"] = len(delays)
        out["apply_ms"] = [round(x * 1000, 1) for x in delays]
        out["apply_ms_median"] = round(statistics.median(delays) * 1000, 1) if delays else None
        out["apply_ms_max"] = round(max(delays) * 1000, 1) if delays else None
    if args.db and os.path.exists(args.db) and args.anchor:
        rows = sqlite3.connect(args.db).execute(
            "SELECT COALESCE(start_latency_correction, start), duration FROM oha").fetchall()
        rows.sort()
        out["db_requests"] = len(rows)
        # The worst request per second and per 250 ms of the whole run: what a swap's worst
        # requests compare with.
        for name, width in (("second", 1.0), ("quarter", 0.25)):
            worst = {}
            for s0, v in rows:
                b = int(s0 / width)
                worst[b] = max(worst.get(b, 0), v)
            if worst:
                out[f"{name}_max_ms_median"] = ms(statistics.median(worst.values()))
        if swaps:
            # Per swap, on oha's clock (its start is taken as the launch time, a few ms early):
            # "build" from the write to the gateway's "applied" line (the file is noticed within
            # a poll, read, parsed and built beside the traffic), "swap" the W seconds from that
            # line on (the pointer swap, the old table freed, the new one's first requests), and
            # "quiet" every other request. A swap not found in the log has a "build" of 2 s.
            w = args.window
            spans = []
            for t, v in swaps:
                b0 = t - args.anchor
                a = applied.get(v)
                a0 = (a - args.anchor) if a is not None else b0 + 2.0
                spans.append((b0, a0, a0 + w))
            groups = {"build": [], "swap": [], "quiet": []}
            # None: no request in that span (a table applied after the end of the run).
            swap_max = [None] * len(spans)
            build_max = [None] * len(spans)
            for s0, v in rows:
                g = "quiet"
                for i, (b0, a0, e0) in enumerate(spans):
                    if b0 <= s0 < a0:
                        g = "build"
                        build_max[i] = max(build_max[i] or 0.0, v)
                        break
                    if a0 <= s0 < e0:
                        g = "swap"
                        swap_max[i] = max(swap_max[i] or 0.0, v)
                        break
                groups[g].append(v)
            out["swap_window_s"] = w
            for g, vals in groups.items():
                vals.sort()
                out[f"{g}_requests"] = len(vals)
                out[f"{g}_p99_ms"] = ms(pct(vals, 99))
                out[f"{g}_max_ms"] = ms(vals[-1]) if vals else None
            out["build_max_ms_per_swap"] = [ms(x) for x in build_max]
            out["swap_max_ms"] = [ms(x) for x in swap_max]
            seen = [x for x in swap_max if x is not None]
            out["swap_max_ms_median"] = ms(statistics.median(seen)) if seen else None
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("base")
    g.add_argument("outdir")
    g.add_argument("--versions", type=int, default=3)
    g.add_argument("--endpoints", type=int, default=100_000)
    g.add_argument("--per-subset", type=int, default=1000)
    g.add_argument("--region", default="bench")
    s = sub.add_parser("swap")
    s.add_argument("bodies", nargs="+")
    s.add_argument("table")
    s.add_argument("--start-version", type=int, required=True)
    s.add_argument("--anchor", type=float, required=True)
    s.add_argument("--first", type=float, default=1.0)
    s.add_argument("--every", type=float, default=2.0)
    s.add_argument("--until", type=float, required=True)
    s.add_argument("--log", required=True)
    a = sub.add_parser("analyze")
    a.add_argument("oha_json")
    a.add_argument("--db")
    a.add_argument("--anchor", type=float)
    a.add_argument("--swaps")
    a.add_argument("--gateway-log")
    a.add_argument("--window", type=float, default=0.25)
    args = ap.parse_args()
    {"gen": gen, "swap": swap, "analyze": analyze}[args.cmd](args)


if __name__ == "__main__":
    main()
