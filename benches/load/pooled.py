#!/usr/bin/env python3
"""Meridian against each peer over many runs of run.sh, round by round.

Usage: benches/load/pooled.py [--target meridian] [--min-duration 2] RAW.csv...

Each raw CSV is one run (benches/results/load-*.csv, not the .idle or .swap ones). Within a
round the targets run back to back, so each round gives one paired ratio per measure; this
prints the median and quartiles of those ratios over every round of every run given, and in how
many rounds Meridian was ahead or level. On a shared machine whose run-to-run spread is wider than the
difference being measured, that is steadier than any one run's ratio of medians.
"""

import argparse
import csv
import statistics
import sys


def ratios(rows, target, peer, kind, key, rate="0", min_duration=0.0):
    """One ratio target/peer of `key` per round in which both ran `kind` at `rate`."""
    out = []
    for rnd in sorted({r["round"] for r in rows}, key=int):
        got = {
            r["target"]: r
            for r in rows
            if r["round"] == rnd
            and r["kind"] == kind
            and r["rate"] == rate
            and float(r["duration_s"] or 0) >= min_duration
        }
        if target in got and peer in got:
            a, b = float(got[target][key] or 0), float(got[peer][key] or 0)
            if a > 0 and b > 0:
                out.append(a / b)
    return out


def describe(values, ahead):
    """Median, quartiles, and how many values count as ahead."""
    if not values:
        return "no paired rounds"
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    wins = sum(1 for v in values if ahead(v))
    return (
        f"median {statistics.median(values):.3f}x (quartiles {q[0]:.2f}-{q[2]:.2f}), "
        f"ahead or level in {wins} of {len(values)} rounds"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="meridian")
    ap.add_argument("--min-duration", type=float, default=2.0,
                    help="leave out saturation runs shorter than this (s)")
    ap.add_argument("csv", nargs="+")
    args = ap.parse_args()
    runs = []
    for path in args.csv:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "kind" in rows[0]:
            runs.append(rows)
    if not runs:
        sys.exit("no raw run CSV with rows given")
    peers = ("nginx", "haproxy")
    rates = sorted({int(r["rate"]) for rows in runs for r in rows if r["kind"] == "fixed"})
    empty = len(args.csv) - len(runs)
    print(f"{len(runs)} runs" + (f" ({empty} files without load rows left out)" if empty else ""))
    for peer in peers:
        def pooled(kind, key, rate="0", min_duration=0.0):
            vals = []
            for rows in runs:
                vals += ratios(rows, args.target, peer, kind, key, rate, min_duration)
            return vals

        sat = dict(kind="saturation", min_duration=args.min_duration)
        rps = pooled(key="rps", **sat)
        if not rps:
            continue
        print(f"{args.target} / {peer}:")
        print(f"  req/s at saturation: {describe(rps, lambda v: v >= 1)}")
        cpu = pooled(key="proxy_cpu_us_per_req", **sat)
        print(f"  CPU µs/req at saturation: {describe(cpu, lambda v: v <= 1)}")
        for rate in rates:
            p99 = pooled("fixed", "p99_ms", str(rate))
            print(f"  p99 at {rate} req/s: {describe(p99, lambda v: v <= 1)}")


if __name__ == "__main__":
    main()
