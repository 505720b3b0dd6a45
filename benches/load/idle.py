#!/usr/bin/env python3
"""Idle keep-alive connections: a proxy's memory per connection (run.sh --idle).

From one process, opens N TCP connections to the proxy, sends one complete HTTP/1.1 keep-alive
request on each and reads its whole response (so each is an established HTTP connection that
the proxy has served once and now keeps idle), holds them all idle, and reads the proxy's
resident memory (VmRSS from /proc/PID/status, summed over the given processes):

  1. RSS before: before any connection is opened;
  2. opening: at most --parallel connections in flight at a time, each bounded by --timeout;
  3. hold: --hold seconds of idle, no byte sent or read;
  4. measurement: which connections are still open (a non-blocking MSG_PEEK on each: "would
     block" means open and idle; end of file, a reset or unexpected bytes mean the proxy closed
     it or wrote to it), then the proxy's RSS, then the same check again;
  5. reuse: a second request on every connection still open, each answer read and checked (the
     connections were real, working keep-alive connections);
  6. close all, wait a second, RSS after close.

Memory per connection = (RSS held - RSS before) / connections open at measurement. Kernel
socket buffers are not part of RSS.

Prints one JSON object on stdout. Every phase is bounded in time; the process exits non-zero
only on bad arguments.
"""

import argparse
import asyncio
import errno
import json
import resource
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def alive(pids):
    n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat"):
                n += 1
        except OSError:
            pass
    return n


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_response(loop, sock, expect):
    """Reads one HTTP/1.1 response; returns (status, keep_alive) or raises."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
        if len(buf) > 65536:
            raise ValueError("response headers too large")
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    keep_alive = "close" not in headers.get("connection", "").lower()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not body.endswith(b"0\r\n\r\n"):
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("closed inside a chunked body")
            body += chunk
    else:
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
        if len(body) > length:
            raise ValueError("bytes after the response")
    if expect and expect.encode() not in body:
        raise ValueError("unexpected body")
    return status, keep_alive


def classify(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


async def exchange(loop, sock, request, expect, timeout):
    await asyncio.wait_for(loop.sock_sendall(sock, request), timeout)
    return await asyncio.wait_for(read_response(loop, sock, expect), timeout)


async def open_one(loop, args, request, sem, conns, errors):
    async with sem:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (args.addr, args.port)), args.timeout)
            status, keep_alive = await exchange(loop, sock, request, args.expect, args.timeout)
            if status != 200:
                raise ValueError(f"status {status}")
            if not keep_alive:
                raise ValueError("proxy answered Connection: close")
            conns.append(sock)
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            errors[classify(e)] = errors.get(classify(e), 0) + 1
            sock.close()


def check(conns):
    """Counts connections still open and idle; returns (open, closed_by_peer, unexpected_data)."""
    n_open = closed = data = 0
    for sock in conns:
        try:
            b = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            n_open += 1
            continue
        except OSError:
            closed += 1
            continue
        if b:
            data += 1
        else:
            closed += 1
    return n_open, closed, data


async def reuse(loop, args, request, conns):
    sem = asyncio.Semaphore(args.parallel)
    ok = 0
    errors = {}

    async def one(sock):
        nonlocal ok
        async with sem:
            try:
                status, _ = await exchange(loop, sock, request, args.expect, args.timeout)
                if status != 200:
                    raise ValueError(f"status {status}")
                ok += 1
            except Exception as e:  # noqa: BLE001
                errors[classify(e)] = errors.get(classify(e), 0) + 1

    await asyncio.wait_for(asyncio.gather(*(one(s) for s in conns)), args.phase_timeout)
    return ok, errors


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True, help="Host header")
    ap.add_argument("--path", required=True)
    ap.add_argument("--expect", default="", help="text the response body must contain")
    ap.add_argument("--pids", required=True, help="the proxy's processes, comma-separated")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=5.0, help="seconds idle before measuring")
    ap.add_argument("--parallel", type=int, default=200, help="connections opening at a time")
    ap.add_argument("--timeout", type=float, default=10.0, help="per connect/exchange, s")
    ap.add_argument("--phase-timeout", type=float, default=120.0, help="per phase, s")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.replace(",", " ").split()]
    if not pids or args.conns < 1:
        ap.error("need --pids and --conns >= 1")

    nofile = raise_nofile(args.conns + 64)
    out = {"conns": args.conns, "hold_s": args.hold, "client_nofile": nofile, "pids": pids}
    if nofile < args.conns + 64:
        out["error"] = f"this process may open only {nofile} files; {args.conns + 64} needed"
        print(json.dumps(out))
        return
    loop = asyncio.get_running_loop()
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nUser-Agent: meridian-idle\r\n\r\n"
    ).encode()

    out["rss_before_kib"] = rss_kib(pids)
    conns, errors = [], {}
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    tasks = [open_one(loop, args, request, sem, conns, errors) for _ in range(args.conns)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.phase_timeout)
    except asyncio.TimeoutError:
        errors["phase timeout"] = args.conns - len(conns) - sum(errors.values())
    out["open_s"] = round(time.monotonic() - t0, 2)
    out["opened"] = len(conns)
    out["open_errors"] = errors
    out["rss_opened_kib"] = rss_kib(pids)

    await asyncio.sleep(args.hold)
    open1, _, _ = check(conns)
    out["rss_held_kib"] = rss_kib(pids)
    open2, closed, data = check(conns)
    out["open_at_measure"] = min(open1, open2)
    out["closed_by_proxy"] = closed
    out["unexpected_data"] = data
    out["proxy_processes_alive"] = alive(pids)
    grown = out["rss_held_kib"] - out["rss_before_kib"]
    out["kib_per_conn"] = round(grown / out["open_at_measure"], 3) if out["open_at_measure"] else None

    live = []
    for sock in conns:
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            live.append(sock)
        except OSError:
            pass
    try:
        out["reused_ok"], out["reuse_errors"] = await reuse(loop, args, request, live)
    except asyncio.TimeoutError:
        out["reused_ok"], out["reuse_errors"] = None, {"phase timeout": len(live)}

    for sock in conns:
        sock.close()
    await asyncio.sleep(1.0)
    out["rss_after_close_kib"] = rss_kib(pids)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
