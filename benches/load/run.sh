#!/usr/bin/env bash
# Meridian beside nginx and HAProxy as HTTP/1.1 reverse proxies, on loopback, in one run.
#
#   benches/load/run.sh            # full run: 3 interleaved rounds, ~5 minutes of load
#   benches/load/run.sh --quick    # smoke check: 1 round, 3 s per measurement
#   benches/load/run.sh --help     # every option
#
# What it does, in order:
#   1. installs what is missing from Debian's packages (nginx-light or nginx, haproxy, wrk,
#      python3; linux-perf with --perf) and a fixed-rate load generator: oha (`cargo install oha
#      --locked`, preferred: it corrects for coordinated omission) or else Debian's hey;
#   2. builds `meridian` in release;
#   3. starts, on 127.0.0.1 with ports picked free at run time and everything in a temp dir:
#      an origin (nginx, 1 worker, 4 ports, a fixed 22-byte body), nginx and HAProxy as reverse
#      proxies (1 worker or thread, upstream keep-alive, no access log), and Meridian (1 worker,
#      a 50-route table where the benchmarked route sits in the middle, a 90/10 weighted split
#      over two subsets of two endpoints each, peak-EWMA balancing, metrics, a JSON access log
#      written to a file);
#   4. per round, per target (order rotated every round): `wrk -t2 -c64` at saturation, then a
#      fixed rate of 5k and 10k requests/s; for each it records requests/s, p50/p99, CPU
#      microseconds per request of the proxy and of the origin (user+sys from /proc/PID/stat),
#      the load generator's CPU, and how many cores other processes on the machine used;
#   5. prints the medians and Meridian's ratio to each peer, and writes the raw rows and a
#      summary to benches/results/ (gitignored).
# Every server is stopped by its own PID on exit; every load is bounded by its duration.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

ROUNDS=3
DURATION=10
FIXED_DURATION=10
RATES="5000 10000"
CONNS=64
THREADS=2
WARMUP=3
INSTALL=1
BUILD=1
MERIDIAN_BIN=""
KEEP=0
PERF=0
PERF_SECONDS=8
LATENCY_TOOL=""
ONLY="nginx haproxy meridian"
OUT_DIR="$REPO/benches/results"
HOST="api.bench.local"
PATH_BENCH="/api/v1/bench/items/42"
BODY="meridian bench origin"

usage() {
    cat <<EOF
Usage: benches/load/run.sh [options]

  --quick               1 round, 3 s per measurement (smoke check)
  --rounds N            interleaved rounds (default $ROUNDS)
  --duration S          seconds of each saturation run (default $DURATION)
  --fixed-duration S    seconds of each fixed-rate run (default $FIXED_DURATION)
  --rates "R1 R2"       fixed rates in requests/s (default "$RATES"; "" to skip)
  --only "T1 T2"        targets (default "nginx haproxy meridian"); also Meridian variants
                        for A/B in the same run: meridian-nolog (no access log),
                        meridian-jemalloc, meridian-mimalloc (allocator by LD_PRELOAD,
                        from Debian's libjemalloc2 / libmimalloc2.0); and a bare Pingora
                        proxy with default settings (benches/bare-pingora): pingora, and
                        pingora-nosteal (work_stealing off)
  --latency-tool T      oha or hey (default: oha if found or installable, else hey)
  --meridian PATH       use this meridian binary instead of building one
  --no-build            use the already built target/release/meridian
  --no-install          never install anything; fail if a tool is missing
  --perf [S]            after the rounds, profile each proxy for S s (default $PERF_SECONDS)
                        under wrk with perf, into the results folder
  --out DIR             results folder (default benches/results)
  --keep                keep the temp dir (configs, logs, access log)
  -h, --help            this text
EOF
}

while (($#)); do
    case "$1" in
    --quick) ROUNDS=1 DURATION=3 FIXED_DURATION=3 WARMUP=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --fixed-duration) FIXED_DURATION=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --latency-tool) LATENCY_TOOL=$2; shift ;;
    --meridian) MERIDIAN_BIN=$2; BUILD=0; shift ;;
    --no-build) BUILD=0 ;;
    --no-install) INSTALL=0 ;;
    --perf)
        PERF=1
        if [[ ${2:-} =~ ^[0-9]+$ ]]; then PERF_SECONDS=$2; shift; fi
        ;;
    --out) OUT_DIR=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$ROUNDS" "$DURATION" "$FIXED_DURATION" "$PERF_SECONDS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: not a positive number: $n" >&2; exit 2; }
done
for r in $RATES; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: not a rate: $r" >&2; exit 2; }
done
for t in $ONLY; do
    [[ $t =~ ^(nginx|haproxy|meridian|meridian-nolog|meridian-jemalloc|meridian-mimalloc|pingora|pingora-nosteal)$ ]] ||
        { echo "run.sh: unknown target $t" >&2; exit 2; }
done

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[1;31m[bench]\033[0m %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Cleanup: every process we start is recorded here and stopped by its PID.
PIDS=()
WORK=""
POLICY_RC=""
cleanup() {
    local rc=$? pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $POLICY_RC ]]; then rm -f "$POLICY_RC"; fi
    if [[ -n ${PROBES_ADDED:-} ]]; then perf probe -q -d 'probe_libc:*' >/dev/null 2>&1 || true; fi
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP)); then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# 1. Tools.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

APT_UPDATED=0
apt_candidate() { # package -> true when Debian's archive has it
    apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'
}
apt_install() {
    ((INSTALL)) || die "missing: $* (and --no-install was given)"
    command -v apt-get >/dev/null || die "missing: $*; install them by hand (no apt-get here)"
    if ((!APT_UPDATED)); then
        log "apt-get update"
        as_root apt-get update -qq >/dev/null ||
            die "apt-get update failed (not root and no sudo?); install by hand: $*"
        APT_UPDATED=1
    fi
    # Debian starts daemons on install (nginx on :80); a policy-rc.d stops that for this install.
    if [[ ! -e /usr/sbin/policy-rc.d && $EUID -eq 0 ]]; then
        POLICY_RC=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
    fi
    log "apt-get install $*"
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    if [[ -n $POLICY_RC ]]; then rm -f "$POLICY_RC"; POLICY_RC=""; fi
    if ((rc)); then log "could not install $* from Debian's packages"; fi
    return "$rc"
}

# The path of a shared library known to the dynamic loader.
shared_lib() { ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF; found = 1; exit } END { exit !found }'; }

ensure_tools() {
    local pkgs=() p c
    PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
    if ! command -v nginx >/dev/null; then
        if apt_candidate nginx-light || ((!APT_UPDATED)); then pkgs+=(nginx-light); else pkgs+=(nginx); fi
    fi
    command -v haproxy >/dev/null || pkgs+=(haproxy)
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v python3 >/dev/null || pkgs+=(python3)
    if ((PERF)) && ! command -v perf >/dev/null; then pkgs+=(linux-perf); fi
    if [[ $ONLY == *meridian-jemalloc* ]] && ! shared_lib libjemalloc.so.2 >/dev/null; then pkgs+=(libjemalloc2); fi
    if [[ $ONLY == *meridian-mimalloc* ]] && ! shared_lib libmimalloc.so.2 >/dev/null; then pkgs+=(libmimalloc2.0); fi
    if ((${#pkgs[@]})); then
        if ! apt_install "${pkgs[@]}"; then
            # One at a time, so that one missing package does not block the others; nginx-light
            # is not in every release, so nginx stands in for it.
            for p in "${pkgs[@]}"; do apt_install "$p" || true; done
            if ! command -v nginx >/dev/null; then apt_install nginx || true; fi
        fi
    fi
    for c in nginx haproxy wrk python3; do
        command -v "$c" >/dev/null ||
            die "$c is missing and could not be installed; install it by hand (Debian: apt-get install ${c/nginx/nginx-light})"
    done

    [[ -z $RATES ]] && { LATENCY_TOOL=none; return; }
    if [[ -z $LATENCY_TOOL ]]; then
        if command -v oha >/dev/null; then
            LATENCY_TOOL=oha
        elif command -v hey >/dev/null; then
            LATENCY_TOOL=hey
        elif ((INSTALL)) && command -v cargo >/dev/null; then
            log "installing oha with cargo (a few minutes, once; --latency-tool hey avoids it)"
            if cargo install oha --locked >"${TMPDIR:-/tmp}/meridian-bench-oha-install.log" 2>&1; then
                LATENCY_TOOL=oha
            else
                log "cargo install oha failed (see ${TMPDIR:-/tmp}/meridian-bench-oha-install.log); trying hey"
                LATENCY_TOOL=hey
            fi
        else
            LATENCY_TOOL=hey
        fi
    fi
    if [[ $LATENCY_TOOL == hey ]] && ! command -v hey >/dev/null; then
        if ((INSTALL)) && { ((APT_UPDATED)) || as_root apt-get update -qq >/dev/null; } && apt_candidate hey; then
            APT_UPDATED=1
            apt_install hey || true
        fi
    fi
    if [[ $LATENCY_TOOL == oha ]] && ! command -v oha >/dev/null; then
        die "oha not found; run 'cargo install oha --locked' or use --latency-tool hey"
    fi
    command -v "$LATENCY_TOOL" >/dev/null ||
        die "no fixed-rate load generator: install oha (cargo install oha --locked) or hey (apt-get install hey), or pass --rates ''"
}

ensure_tools
if ((PERF)) && ! perf stat -e task-clock true >/dev/null 2>&1; then
    log "perf cannot count here (perf_event_paranoid or a container); skipping --perf"
    PERF=0
fi

# ---------------------------------------------------------------------------------------------
# 2. Meridian.
if [[ -z $MERIDIAN_BIN ]]; then
    MERIDIAN_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/meridian"
    if ((BUILD)); then
        log "cargo build --release -p meridian-gateway --bin meridian"
        (cd "$REPO" && cargo build --release -q -p meridian-gateway --bin meridian) ||
            die "the release build failed; fix it or pass --meridian PATH"
    fi
fi
[[ -x $MERIDIAN_BIN ]] || die "no meridian binary at $MERIDIAN_BIN"
PINGORA_BIN="${CARGO_TARGET_DIR:-$REPO/target}/bare-pingora/release/bare-pingora"
if [[ $ONLY == *pingora* ]]; then
    if ((BUILD)) || [[ ! -x $PINGORA_BIN ]]; then
        log "cargo build --release benches/bare-pingora"
        cargo build --release -q --locked --manifest-path "$REPO/benches/bare-pingora/Cargo.toml" \
            --target-dir "${CARGO_TARGET_DIR:-$REPO/target}/bare-pingora" || die "the bare-pingora build failed"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 3. Servers.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-bench.XXXXXX")
chmod 755 "$WORK" # nginx workers drop to an unprivileged user when started as root
TICK=$(getconf CLK_TCK)

# N free loopback ports: bound together, then released, so they are distinct.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# One HTTP/1.1 exchange on loopback, Connection: close; prints the raw response.
http_get() { # port path
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$3" >&3
        cat <&3' _ "$1" "$2" "$HOST" 2>/dev/null || true
}

# Waits until `port` proxies a 200 with the origin's body; `pid` must stay alive meanwhile.
wait_ready() { # name pid port path
    local name=$1 pid=$2 port=$3 path=$4 i resp
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $WORK/$name/*.log"
        resp=$(http_get "$port" "$path")
        if [[ $resp == "HTTP/1."?" 200"* && $resp == *"$BODY"* ]]; then return 0; fi
        sleep 0.1
    done
    die "$name did not answer 200 on 127.0.0.1:$port$path; last answer: ${resp:-none}"
}

# A process and its children (nginx: master and worker).
tree_pids() { # pid
    local pid=$1 p ppid rest
    echo "$pid"
    for p in /proc/[0-9]*; do
        [[ -r $p/stat ]] || continue
        rest=$(<"$p/stat") 2>/dev/null || continue
        rest=${rest##*) }
        read -r _ ppid _ <<<"$rest"
        if [[ $ppid == "$pid" ]]; then echo "${p#/proc/}"; fi
    done
}

# utime+stime of processes, in clock ticks (all threads).
cpu_ticks() { # pid...
    local sum=0 pid line
    local -a f
    for pid in "$@"; do
        line=$(<"/proc/$pid/stat") 2>/dev/null || continue
        line=${line##*) }
        read -r -a f <<<"$line"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

# Peak resident set (VmHWM) of processes, in KiB, summed.
peak_rss_kib() { # pid...
    local sum=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# user+nice+system ticks of the whole machine.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }

# CPU seconds of this shell's waited-for children (the load generators run in the foreground).
# `times` must run in this shell, not in a $(...) subshell, which has no children of its own.
children_times() { times >"$WORK/times.$1"; }
children_cpu_s() {
    awk 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
        printf "%.3f\n", t
    }' "$WORK/times.$1"
}

declare -A PORT TPIDS ADMIN
read -r O1 O2 O3 O4 NGINX_PORT HAPROXY_PORT <<<"$(free_ports 6)"

nginx_temp_paths() { # dir
    local m
    for m in client_body proxy fastcgi uwsgi scgi; do
        if [[ $m == client_body || $m == proxy ]] || nginx -V 2>&1 | grep -q -- "--http-$m-temp-path"; then
            echo "    ${m}_temp_path $1/tmp/$m;"
        fi
    done
}

start_origin() {
    local d="$WORK/origin"
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# The origin: a fixed small body, as fast as nginx can answer it, so it is not the bottleneck.
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$d")
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$O1;
        listen 127.0.0.1:$O2;
        listen 127.0.0.1:$O3;
        listen 127.0.0.1:$O4;
        default_type text/plain;
        location / { return 200 "$BODY\n"; }
    }
}
EOF
    nginx -p "$d" -c "$d/nginx.conf" -t -q 2>"$d/check.log" || die "origin config: $(cat "$d/check.log")"
    nginx -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    wait_ready origin "$ORIGIN_PID" "$O1" /
}

start_nginx() {
    local d="$WORK/nginx"
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$d")
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    upstream origin {
        server 127.0.0.1:$O1;
        server 127.0.0.1:$O2;
        server 127.0.0.1:$O3;
        server 127.0.0.1:$O4;
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
    nginx -p "$d" -c "$d/nginx.conf" -t -q 2>"$d/check.log" || die "nginx config: $(cat "$d/check.log")"
    nginx -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_ready nginx "$NGINX_PID" "$NGINX_PORT" "$PATH_BENCH"
}

start_haproxy() {
    local d="$WORK/haproxy"
    mkdir -p "$d"
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin
backend origin
    balance roundrobin
    option forwardfor
    server o1 127.0.0.1:$O1
    server o2 127.0.0.1:$O2
    server o3 127.0.0.1:$O3
    server o4 127.0.0.1:$O4
EOF
    haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 || die "haproxy config: $(cat "$d/check.log")"
    haproxy -db -f "$d/haproxy.cfg" >"$d/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=("$HAPROXY_PID")
    wait_ready haproxy "$HAPROXY_PID" "$HAPROXY_PORT" "$PATH_BENCH"
}

# 50 routes of the shapes a real table has (exact and wildcard hosts; exact, prefix and regex
# paths; method and header conditions). The benchmarked route, `bench`, is number 26: on its host
# the longer prefixes and the exact paths are tried before it.
meridian_table() {
    local i
    echo "version: 1"
    echo "regions: [{name: bench}]"
    echo "routes:"
    for ((i = 0; i < 50; i++)); do
        if ((i == 25)); then
            cat <<EOF
  - name: bench
    match: { hosts: ["$HOST"], path: { prefix: "/api/v1/bench/" }, methods: [GET, HEAD] }
    split: [{ subset: bench@stable, weight: 90 }, { subset: bench@canary, weight: 10 }]
    pin: { header: x-canary, values: { always: bench@canary, never: bench@stable } }
EOF
            continue
        fi
        echo "  - name: r$i"
        case $((i % 5)) in
        0) echo "    match: { hosts: [\"svc$i.bench.local\"], path: { prefix: \"/\" } }" ;;
        1) echo "    match: { hosts: [\"$HOST\"], path: { prefix: \"/api/v1/bench/other$i/\" } }" ;;
        2) echo "    match: { hosts: [\"$HOST\"], path: { exact: \"/api/v1/health$i\" } }" ;;
        3) echo "    match: { hosts: [\"*.svc$i.bench.local\"], path: { prefix: \"/v$i\" } }" ;;
        4) echo "    match: { hosts: [\"$HOST\"], path: { regex: \"^/api/v2/r$i/[0-9]+\$\" }, headers: [{ name: x-tenant, exact: \"t$i\" }] }" ;;
        esac
        echo "    split: [{ subset: other@v1, weight: 1 }]"
    done
    cat <<EOF
subsets:
  - name: bench@stable
    endpoints:
      - { address: "127.0.0.1:$O1", region: bench, zone: a }
      - { address: "127.0.0.1:$O2", region: bench, zone: b }
  - name: bench@canary
    endpoints:
      - { address: "127.0.0.1:$O3", region: bench, zone: a }
      - { address: "127.0.0.1:$O4", region: bench, zone: b }
  - name: other@v1
    endpoints:
      - { address: "127.0.0.1:$O1", region: bench }
EOF
}

# Meridian, or a variant of it (see --only): its own temp dir, ports and process.
start_meridian_variant() { # name
    local name=$1 d="$WORK/$1" i pid port admin preload="" access_log="access_log: { path: access.log }"
    case $name in
    meridian-nolog) access_log="" ;;
    meridian-jemalloc) preload=$(shared_lib libjemalloc.so.2) || die "libjemalloc.so.2 not found" ;;
    meridian-mimalloc) preload=$(shared_lib libmimalloc.so.2) || die "libmimalloc.so.2 not found" ;;
    esac
    mkdir -p "$d"
    meridian_table >"$d/table.yaml"
    cat >"$d/gateway.yaml" <<EOF
region: bench
listeners:
  - address: "127.0.0.1:0"
admin: "127.0.0.1:0"
table: { file: table.yaml }
workers: 1
upstream_keepalive_pool: 128
$access_log
EOF
    "$MERIDIAN_BIN" validate "$d" >"$d/validate.log" 2>&1 || die "$name config: $(cat "$d/validate.log")"
    env ${preload:+LD_PRELOAD="$preload"} RUST_LOG="${RUST_LOG:-info}" \
        "$MERIDIAN_BIN" gateway --config "$d/gateway.yaml" --ports-file "$d/ports.json" >"$d/meridian.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        [[ -s $d/ports.json ]] && break
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $d/meridian.log"
        sleep 0.1
    done
    [[ -s $d/ports.json ]] || die "$name wrote no ports file; see $d/meridian.log"
    read -r port admin <<<"$(python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))
print(b["listeners"][0].rsplit(":", 1)[1], b["admin"].rsplit(":", 1)[1])' "$d/ports.json")"
    wait_ready "$name" "$pid" "$port" "$PATH_BENCH"
    PORT[$name]=$port
    ADMIN[$name]=$admin
    TPIDS[$name]=$pid
}

# A bare Pingora proxy (benches/bare-pingora): the reference for what Pingora itself costs.
start_pingora_variant() { # name
    local name=$1 d="$WORK/$1" pid port steal=1
    [[ $name == pingora-nosteal ]] && steal=0
    mkdir -p "$d"
    port=$(free_ports 1)
    env BARE_WORK_STEALING="$steal" RUST_LOG="${RUST_LOG:-info}" "$PINGORA_BIN" "127.0.0.1:$port" \
        "127.0.0.1:$O1" "127.0.0.1:$O2" "127.0.0.1:$O3" "127.0.0.1:$O4" >"$d/pingora.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$name" "$pid" "$port" "$PATH_BENCH"
    PORT[$name]=$port
    TPIDS[$name]=$pid
}

log "temp dir $WORK; origin on 127.0.0.1:$O1,$O2,$O3,$O4"
start_origin
ORIGIN_PIDS=$(tree_pids "$ORIGIN_PID")
for t in $ONLY; do
    case $t in
    nginx) start_nginx; PORT[nginx]=$NGINX_PORT TPIDS[nginx]=$(tree_pids "$NGINX_PID") ;;
    haproxy) start_haproxy; PORT[haproxy]=$HAPROXY_PORT TPIDS[haproxy]=$HAPROXY_PID ;;
    meridian*) start_meridian_variant "$t" ;;
    pingora*) start_pingora_variant "$t" ;;
    esac
done
for t in $ONLY; do log "$t on 127.0.0.1:${PORT[$t]} (pids $(echo "${TPIDS[$t]}" | xargs))"; done

# ---------------------------------------------------------------------------------------------
# 4. Measurements.
STAMP=$(date +%Y%m%dT%H%M%S)
mkdir -p "$OUT_DIR"
RAW="$OUT_DIR/load-$STAMP.csv"
META="$OUT_DIR/load-$STAMP.meta.json"
echo "round,target,kind,rate,duration_s,requests,rps,errors,p50_ms,p99_ms,proxy_cpu_s,proxy_cpu_us_per_req,origin_cpu_us_per_req,loadgen_cpu_s,other_cores,loadavg1" >"$RAW"

# Parses wrk --latency output: requests rps errors p50_ms p99_ms.
parse_wrk() {
    awk '
    function ms(v) {
        if (v ~ /us$/) { sub("us", "", v); return v / 1000 }
        if (v ~ /ms$/) { sub("ms", "", v); return v + 0 }
        if (v ~ /s$/)  { sub("s", "", v);  return v * 1000 }
        return v
    }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { for (i = 3; i <= NF; i++) { v = $i; gsub(",", "", v); if (v ~ /^[0-9]+$/) err += v } }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%d %.1f %d %.3f %.3f\n", req, rps, err, p50, p99 }' "$1"
}

# Parses oha's JSON or hey's text: requests rps errors p50_ms p99_ms.
parse_fixed() {
    python3 - "$LATENCY_TOOL" "$1" <<'EOF'
import json, re, sys
tool, path = sys.argv[1:3]
text = open(path).read()
if tool == "oha":
    d = json.loads(text)
    codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 400)
    bad = sum(codes.values()) - ok
    # Requests cut off at the deadline are not failures; every other error is.
    errs = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
    lat = d["latencyPercentiles"]
    print(sum(codes.values()), round(d["summary"]["requestsPerSec"], 1), bad + errs,
          round((lat["p50"] or 0) * 1000, 3), round((lat["p99"] or 0) * 1000, 3))
else:
    def pct(p):
        m = re.search(r"^\s*%d%%+ in ([0-9.]+) secs" % p, text, re.M)
        return float(m.group(1)) * 1000 if m else 0.0
    rps = float(re.search(r"Requests/sec:\s*([0-9.]+)", text).group(1))
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
    errs = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]\s+Get", text, re.M))
    ok = sum(v for k, v in codes.items() if 200 <= k < 400)
    print(sum(codes.values()), rps, sum(codes.values()) - ok + errs, round(pct(50), 3), round(pct(99), 3))
EOF
}

# One measurement: load against one target while counting its CPU and the machine's.
measure() { # round target kind rate
    local round=$1 t=$2 kind=$3 rate=$4 url out secs
    local p0 p1 o0 o1 m0 m1 c0 c1 w0 w1 load
    url="http://127.0.0.1:${PORT[$t]}$PATH_BENCH"
    out="$WORK/out-$round-$t-$kind-$rate.txt"
    # shellcheck disable=SC2086 # pid lists split on purpose
    {
        load=$(cut -d' ' -f1 /proc/loadavg)
        children_times 0
        p0=$(cpu_ticks ${TPIDS[$t]}); o0=$(cpu_ticks $ORIGIN_PIDS); m0=$(machine_ticks)
        w0=$(date +%s%N)
        if [[ $kind == saturation ]]; then
            secs=$DURATION
            wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency -H "Host: $HOST" "$url" >"$out" 2>&1 || true
        else
            secs=$FIXED_DURATION
            case $LATENCY_TOOL in
            oha)
                timeout $((secs + 15)) oha --no-tui --output-format json --latency-correction \
                    -q "$rate" -z "${secs}s" -c "$CONNS" -H "Host: $HOST" "$url" >"$out" 2>"$out.err" || true
                ;;
            hey)
                # hey's -q is per connection.
                timeout $((secs + 15)) hey -z "${secs}s" -c "$CONNS" -q $(((rate + CONNS - 1) / CONNS)) \
                    -host "$HOST" "$url" >"$out" 2>&1 || true
                ;;
            esac
        fi
        w1=$(date +%s%N)
        p1=$(cpu_ticks ${TPIDS[$t]}); o1=$(cpu_ticks $ORIGIN_PIDS); m1=$(machine_ticks)
        children_times 1
    }
    c0=$(children_cpu_s 0)
    c1=$(children_cpu_s 1)
    local req rps err p50 p99
    if [[ $kind == saturation ]]; then
        read -r req rps err p50 p99 <<<"$(parse_wrk "$out")"
    else
        read -r req rps err p50 p99 <<<"$(parse_fixed "$out" 2>/dev/null || echo "0 0 0 0 0")"
    fi
    local row
    row=$(awk -v r="$round" -v t="$t" -v k="$kind" -v rate="$rate" -v req="$req" -v rps="$rps" \
        -v err="$err" -v p50="$p50" -v p99="$p99" -v dp=$((p1 - p0)) -v dor=$((o1 - o0)) \
        -v dm=$((m1 - m0)) -v dc0="$c0" -v dc1="$c1" -v wall=$((w1 - w0)) -v tick="$TICK" \
        -v load="$load" 'BEGIN {
            ps = dp / tick; os = dor / tick; ls = dc1 - dc0; ms = dm / tick; wall_s = wall / 1e9
            other = (ms - ps - os - ls) / wall_s; if (other < 0) other = 0
            us = req > 0 ? ps * 1e6 / req : 0; ous = req > 0 ? os * 1e6 / req : 0
            printf "%s,%s,%s,%s,%.2f,%d,%.1f,%d,%.3f,%.3f,%.2f,%.2f,%.2f,%.2f,%.2f,%s\n",
                r, t, k, rate, wall_s, req, rps, err, p50, p99, ps, us, ous, ls, other, load }')
    echo "$row" >>"$RAW"
    IFS=, read -r _ _ _ _ _ _ rps err p50 p99 _ us _ _ other _ <<<"$row"
    if [[ $kind == saturation ]]; then
        log "round $round  $(printf '%-8s' "$t") saturation  $(printf '%8.0f' "$rps") req/s  p50 ${p50} ms  p99 ${p99} ms  ${us} µs/req  errors $err  (others used $other cores)"
    else
        log "round $round  $(printf '%-8s' "$t") @$(printf '%-6s' "$rate")     $(printf '%8.0f' "$rps") req/s  p50 ${p50} ms  p99 ${p99} ms  ${us} µs/req  errors $err  (others used $other cores)"
    fi
    if ((req == 0)); then log "  no requests counted; output: $out"; fi
    sleep 1
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
for t in $ONLY; do
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -H "Host: $HOST" "http://127.0.0.1:${PORT[$t]}$PATH_BENCH" >/dev/null 2>&1 || true
done
read -r -a TARGETS <<<"$ONLY"
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the order every round so that no target always runs first or last.
    order=()
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
        order+=("${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}")
    done
    for t in "${order[@]}"; do
        measure "$round" "$t" saturation 0
        for r in $RATES; do measure "$round" "$t" fixed "$r"; done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Meridian's own view: the split it made and the access log it wrote.
MERIDIAN_NOTE=""
sleep 0.5 # the access-log writer flushes every 200 ms
for t in $ONLY; do
    [[ $t == meridian* ]] || continue
    metrics=$(http_get "${ADMIN[$t]}" /metrics)
    stable=$(awk '/^meridian_requests_total\{/ && /route="bench"/ && /subset="bench@stable"/ { s += $NF } END { print s + 0 }' <<<"$metrics")
    canary=$(awk '/^meridian_requests_total\{/ && /route="bench"/ && /subset="bench@canary"/ { s += $NF } END { print s + 0 }' <<<"$metrics")
    dropped=$(awk '/^meridian_access_log_dropped_total/ { print $NF }' <<<"$metrics")
    lines=0
    if [[ -f $WORK/$t/access.log ]]; then lines=$(wc -l <"$WORK/$t/access.log"); fi
    note="$t: route bench sent ${stable} requests to bench@stable and ${canary} to bench@canary; access log: ${lines} lines, ${dropped:-0} dropped"
    log "$note"
    MERIDIAN_NOTE+="${MERIDIAN_NOTE:+; }$note"
done

# Peak RSS over the whole run.
declare -A RSS
for t in $ONLY; do
    # shellcheck disable=SC2086
    RSS[$t]=$(peak_rss_kib ${TPIDS[$t]})
done
# shellcheck disable=SC2086
RSS[origin]=$(peak_rss_kib $ORIGIN_PIDS)

# ---------------------------------------------------------------------------------------------
# Optional: where the time goes. For each target, under wrk:
#   - syscalls and context switches per request (perf stat on syscall tracepoints);
#   - malloc/free calls per request (a perf uprobe on glibc's malloc; slows the target a lot,
#     so it runs apart, with 8 connections for 2 s; n/a for LD_PRELOADed allocators);
#   - a CPU profile with DWARF call graphs, summarised by profile.py (threads, leaf classes,
#     self symbols, Meridian's proxy phases).
# The uprobes this adds are removed on exit.
PROBES_ADDED=""
remove_probes() {
    if [[ -n $PROBES_ADDED ]]; then perf probe -q -d 'probe_libc:*' >/dev/null 2>&1 || true; fi
}
if ((PERF)); then
    PERF_MD="$OUT_DIR/perf-$STAMP.md"
    EVENTS="task-clock,context-switches"
    for s in sendto sendmsg write writev recvfrom recvmsg read readv epoll_wait epoll_pwait epoll_ctl futex; do
        EVENTS+=",syscalls:sys_enter_$s"
    done
    libc=$(shared_lib libc.so.6 || true)
    if [[ -n $libc ]] && ! perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc'; then
        if perf probe -q -x "$libc" --add malloc >/dev/null 2>&1 &&
            perf probe -q -x "$libc" --add free >/dev/null 2>&1 &&
            perf probe -q -x "$libc" --add realloc >/dev/null 2>&1; then
            PROBES_ADDED=1
        else
            remove_probes
        fi
    fi
    HAVE_PROBES=0
    if perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc'; then HAVE_PROBES=1; fi
    {
        echo "# Where the time goes ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
        echo
        echo "Per request, under \`wrk -t$THREADS -c$CONNS\` (mallocs: -c8, under a uprobe)."
        echo
        echo "| target | req/s (while counting) | CPU µs/req | send+write | recv+read | epoll | futex | context switches | malloc | free | realloc |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
    } >"$PERF_MD"
    for t in $ONLY; do
        url="http://127.0.0.1:${PORT[$t]}$PATH_BENCH"
        pids=$(echo "${TPIDS[$t]}" | paste -sd, -)
        log "perf: counting syscalls of $t for ${PERF_SECONDS}s under wrk"
        perf stat -x, -o "$WORK/stat-$t.csv" -e "$EVENTS" -p "$pids" -- \
            wrk -t"$THREADS" -c"$CONNS" -d"${PERF_SECONDS}s" --latency -H "Host: $HOST" "$url" >"$WORK/stat-$t.wrk" 2>&1 || true
        read -r sreq srps _ <<<"$(parse_wrk "$WORK/stat-$t.wrk")"
        mreq=0
        if ((HAVE_PROBES)); then
            log "perf: counting mallocs of $t (2 s, 8 connections, slowed by the uprobe)"
            perf stat -x, -o "$WORK/malloc-$t.csv" -e 'probe_libc:malloc,probe_libc:free,probe_libc:realloc' -p "$pids" -- \
                wrk -t1 -c8 -d2s -H "Host: $HOST" "$url" >"$WORK/malloc-$t.wrk" 2>&1 || true
            read -r mreq _ <<<"$(parse_wrk "$WORK/malloc-$t.wrk")"
        fi
        log "perf: profiling $t for ${PERF_SECONDS}s under wrk"
        wrk -t"$THREADS" -c"$CONNS" -d"$((PERF_SECONDS + 2))s" -H "Host: $HOST" "$url" >/dev/null 2>&1 &
        wrk_pid=$!
        PIDS+=("$wrk_pid")
        sleep 1
        perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pids" -o "$WORK/perf-$t.data" \
            -- sleep "$PERF_SECONDS" >/dev/null 2>&1 || true
        wait "$wrk_pid" 2>/dev/null || true
        perf script -i "$WORK/perf-$t.data" -F comm,tid,ip,sym 2>/dev/null >"$WORK/perf-$t.script" || true
        python3 "$HERE/profile.py" row "$t" "$sreq" "$srps" "$WORK/stat-$t.csv" "$mreq" "$WORK/malloc-$t.csv" >>"$PERF_MD"
        python3 "$HERE/profile.py" stacks "$t" "$WORK/perf-$t.script" >"$WORK/profile-$t.md"
    done
    for t in $ONLY; do
        { echo; cat "$WORK/profile-$t.md"; } >>"$PERF_MD"
    done
    remove_probes
    PROBES_ADDED=""
    log "perf: $PERF_MD"
fi

# ---------------------------------------------------------------------------------------------
# 5. Summary.
json_str() { local s=$1; s=${s//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
version_of() { "$@" 2>&1 | head -1 | tr -d '\r' || true; }
{
    printf '{\n'
    printf '  "date": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf '  "machine": {\n'
    printf '    "nproc": %s,\n' "$(nproc)"
    printf '    "cpu_model": %s,\n' "$(json_str "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)")"
    printf '    "kernel": %s,\n' "$(json_str "$(uname -r)")"
    printf '    "loadavg_before": %s,\n' "$(json_str "$LOAD_BEFORE")"
    printf '    "loadavg_after": %s\n' "$(json_str "$LOAD_AFTER")"
    printf '  },\n'
    printf '  "versions": {\n'
    printf '    "nginx": %s,\n' "$(json_str "$(version_of nginx -v)")"
    printf '    "haproxy": %s,\n' "$(json_str "$(version_of haproxy -v)")"
    printf '    "wrk": %s,\n' "$(json_str "$(version_of wrk -v)")"
    printf '    "latency_tool": %s,\n' "$(json_str "$( [[ $LATENCY_TOOL == none ]] || version_of "$LATENCY_TOOL" --version)")"
    printf '    "meridian": %s\n' "$(json_str "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)")"
    printf '  },\n'
    printf '  "settings": {\n'
    printf '    "rounds": %s, "duration_s": %s, "fixed_duration_s": %s, "connections": %s, "threads": %s,\n' \
        "$ROUNDS" "$DURATION" "$FIXED_DURATION" "$CONNS" "$THREADS"
    printf '    "rates": [%s], "latency_tool": %s, "targets": [%s]\n' \
        "$(echo "$RATES" | xargs | sed 's/ /, /g')" "$(json_str "$LATENCY_TOOL")" \
        "$(for t in $ONLY; do json_str "$t"; echo; done | paste -sd, -)"
    printf '  },\n'
    printf '  "peak_rss_kib": {'
    first=1
    for k in "${!RSS[@]}"; do
        ((first)) || printf ','
        first=0
        printf ' %s: %s' "$(json_str "$k")" "${RSS[$k]}"
    done
    printf ' },\n'
    printf '  "meridian": %s\n' "$(json_str "$MERIDIAN_NOTE")"
    printf '}\n'
} >"$META"

echo
python3 "$HERE/summarize.py" "$RAW" "$META" "$OUT_DIR/load-$STAMP"
echo
log "raw: $RAW"
log "summary: $OUT_DIR/load-$STAMP.summary.md (and .summary.json)"
