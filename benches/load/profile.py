#!/usr/bin/env python3
"""Summaries for `run.sh --perf`.

  profile.py row NAME REQUESTS RPS STAT_CSV MALLOC_REQUESTS MALLOC_CSV
      One Markdown table row: per-request syscalls, context switches and malloc calls, from
      `perf stat -x,` outputs and the request counts wrk reported for the same windows. The
      allocation counts are the uprobe events GROUP:[mi_]malloc, zalloc, free and realloc
      found in MALLOC_CSV (glibc's, or mimalloc's when the binary links it).
  profile.py stacks NAME PERF_SCRIPT
      A Markdown section from `perf script -F comm,tid,ip,sym` of a DWARF call-graph profile:
      CPU share per thread, where the samples land (syscalls, allocator, user code), the top
      self symbols, and, for Meridian, the share of each proxy phase (inclusive).

In a VM without a PMU, perf samples on a timer (cpu-clock), and samples taken while interrupts
were off land on the instruction that turned them back on (finish_task_switch,
_raw_spin_unlock_irqrestore). Those two symbols therefore stand for scheduling and the wake-up
work done with interrupts off, not for themselves.
"""

import collections
import re
import sys


def read_stat(path):
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.strip().split(",")
                if len(parts) < 3:
                    continue
                try:
                    value = float(parts[0])
                except ValueError:
                    continue
                counts[parts[2]] = value
    except OSError:
        pass
    return counts


def per(v, n, digits=2):
    if v is None or not n:
        return "n/a"
    return f"{v / n:.{digits}f}"


def row(name, req, rps, stat_csv, mreq, malloc_csv):
    req = int(float(req or 0))
    mreq = int(float(mreq or 0))
    c = read_stat(stat_csv)

    def total(*names):
        vals = [c.get(f"syscalls:sys_enter_{n}") for n in names]
        vals = [v for v in vals if v is not None]
        return sum(vals) if vals else None

    task_ms = c.get("task-clock")
    cpu = f"{task_ms * 1000 / req:.1f}" if task_ms and req else "n/a"
    m = read_stat(malloc_csv)

    def calls(*kinds):
        # Events are GROUP:KIND: probe_libc:malloc for glibc, probe_mi:mi_malloc and
        # probe_mi:mi_zalloc (both allocate) for a binary with mimalloc linked in.
        vals = [v for k, v in m.items() if k.rsplit(":", 1)[-1].removeprefix("mi_") in kinds]
        return sum(vals) if vals else None

    cells = [
        name,
        f"{float(rps or 0):,.0f}",
        cpu,
        per(total("sendto", "sendmsg", "write", "writev"), req),
        per(total("recvfrom", "recvmsg", "read", "readv"), req),
        per(total("epoll_wait", "epoll_pwait", "epoll_ctl"), req),
        per(total("futex"), req),
        per(c.get("context-switches"), req),
        per(calls("malloc", "zalloc"), mreq, 1),
        per(calls("free"), mreq, 1),
        per(calls("realloc"), mreq, 1),
    ]
    print("| " + " | ".join(cells) + " |")


def parse_script(path):
    samples, stack, comm = [], [], None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if stack:
                    samples.append((comm, stack))
                stack = []
                continue
            if line.startswith("\t") or line.startswith(" "):
                stack.append(re.sub(r"^\s*[0-9a-f]+ ", "", line).strip())
            else:
                comm = line.rsplit(None, 1)[0] if " " in line.strip() else line.strip()
    if stack:
        samples.append((comm, stack))
    return samples


ALLOC = re.compile(
    r"^(__GI___libc_malloc|malloc|_int_malloc|_int_free|cfree|__GI___libc_free|free|realloc|"
    r"_int_realloc|malloc_consolidate|unlink_chunk|__libc_calloc|calloc|tcache_get|tcache_put|"
    r"je_|mi_|_mi_)"
)


def leaf_class(stack):
    joined = stack[:40]
    if any("futex" in x for x in joined):
        return "futex (thread wake-ups and waits)"
    if any(re.search(r"sys_(sendto|sendmsg|write|writev)\b", x) or "tcp_sendmsg" in x for x in joined):
        return "send/write syscalls (includes loopback delivery to the peer)"
    if any(re.search(r"sys_(recvfrom|recvmsg|read|readv)\b", x) or "tcp_recvmsg" in x for x in joined):
        return "recv/read syscalls"
    if any("epoll" in x for x in joined):
        return "epoll"
    if any(x.startswith("entry_SYSCALL") or "do_syscall_64" in x for x in joined):
        return "other syscalls"
    if any(x.startswith(("finish_task_switch", "__schedule", "schedule")) for x in stack[:3]):
        return "scheduling (preempted)"
    if ALLOC.match(stack[0]):
        return "allocator (malloc/free)"
    if re.match(r"__mem(move|cpy|set|cmp)", stack[0]):
        return "memcpy/memset"
    return "user code"


PHASES = [
    ("ProxyHttp>::request_filter", "request_filter (route, split, admission)"),
    ("ProxyHttp>::upstream_peer", "upstream_peer (endpoint pick)"),
    ("ProxyHttp>::upstream_request_filter", "upstream_request_filter (forwarded headers)"),
    ("ProxyHttp>::upstream_response_filter", "upstream_response_filter"),
    ("ProxyHttp>::response_filter", "response_filter"),
    ("ProxyHttp>::logging", "logging (metrics, EWMA, access-log record)"),
    ("meridian_gateway::accesslog::write_loop", "access-log writer thread"),
    ("meridian_gateway::trace", "request id and traceparent"),
    ("meridian_gateway::routing::Router::find", "route match"),
    ("prometheus::", "prometheus"),
    ("serde_json::", "serde_json"),
    ("pingora_timeout::", "pingora_timeout (timers, inclusive of the I/O they wrap)"),
    ("HttpModules::build_ctx", "pingora HTTP modules ctx (per request)"),
    ("compression::", "pingora response compression module (level 0)"),
]


def stacks(name, path):
    samples = parse_script(path)
    n = len(samples)
    print(f"### {name}: CPU profile ({n} samples, cpu-clock at 999 Hz, DWARF call graphs)")
    print()
    if not n:
        print("(no samples)")
        return

    def pct(c):
        return f"{100 * c / n:.1f}%"

    threads = collections.Counter(c for c, _ in samples)
    print("Threads: " + ", ".join(f"{k} {pct(v)}" for k, v in threads.most_common(6)))
    print()
    print("| where the samples land | share |")
    print("|---|---|")
    for k, v in collections.Counter(leaf_class(st) for _, st in samples).most_common():
        print(f"| {k} | {pct(v)} |")
    print()
    if any("meridian_gateway" in x for _, st in samples for x in st):
        print("| Meridian phase (inclusive: the phase and all it calls) | share |")
        print("|---|---|")
        for key, label in PHASES:
            c = sum(1 for _, st in samples if any(key in x for x in st))
            if c:
                print(f"| {label} | {pct(c)} |")
        print()
    print("Top self symbols:")
    print()
    print("| symbol | self |")
    print("|---|---|")
    for k, v in collections.Counter(st[0] for _, st in samples).most_common(15):
        k = k.replace("|", "\\|")
        if len(k) > 110:
            k = k[:107] + "..."
        print(f"| `{k}` | {pct(v)} |")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "row":
        row(*sys.argv[2:8])
    elif len(sys.argv) >= 2 and sys.argv[1] == "stacks":
        stacks(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
