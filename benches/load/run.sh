#!/usr/bin/env bash
# Meridian beside nginx and HAProxy as HTTP/1.1 reverse proxies, on loopback, in one run.
#
#   benches/load/run.sh            # full run: 3 interleaved rounds, ~12 minutes of load
#   benches/load/run.sh --quick    # smoke check: 1 round, 3 s per measurement
#   benches/load/run.sh --tls      # only the HTTPS part (--http, --tls, --idle, --swap combine)
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
#   5. HTTPS (--tls): the same proxies terminating TLS 1.3 with one self-signed certificate made
#      at run time (rustls in Meridian, OpenSSL in nginx and HAProxy), per round: keep-alive
#      saturation, then new connections (`Connection: close`) with full handshakes and with
#      resumed ones (a small LD_PRELOAD shim for wrk, wrk_tls_shim.c, decides and counts which);
#   6. idle connections (--idle): 10,000 keep-alive connections, each served one request, held
#      idle by idle.py; the proxy's RSS before and while they are held gives KiB per connection;
#   7. table swaps under load (--swap, Meridian only): at a fixed rate, p50/p99/p99.9/max with a
#      table of 100,000 extra endpoints in force and unchanged, then while that table file is
#      replaced every 2 s by another version (made once up front by swap.py), the swaps counted
#      from the gateway's /metrics; the small table is put back afterwards;
#   8. prints the medians and Meridian's ratio to each peer, and writes the raw rows and a
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
PARTS=""
TLS_KEY=ec256
IDLE_CONNS=10000
IDLE_PARALLEL=200
IDLE_HOLD=5
SWAP_RATE=5000
SWAP_DURATION=15
SWAP_EVERY=2
SWAP_ENDPOINTS=100000
SWAP_ROUNDS=1
SWAP_POLL_MS=100
OUT_DIR="$REPO/benches/results"
HOST="api.bench.local"
PATH_BENCH="/api/v1/bench/items/42"
BODY="meridian bench origin"

usage() {
    cat <<EOF
Usage: benches/load/run.sh [options]

  --quick               1 round, 3 s per measurement, 2 s idle hold, 5 s swap runs (smoke check)
  --http                plain HTTP/1.1 rounds (saturation and fixed rates)
  --tls                 HTTPS rounds: keep-alive saturation, full and resumed handshakes
  --idle [N]            N idle keep-alive connections (default $IDLE_CONNS): KiB per connection
  --swap                table swaps under load, Meridian targets only: at a fixed rate, latency
                        (a) with a table of --swap-endpoints extra endpoints in force, unchanged,
                        and (b) while that table file is replaced every --swap-every s
                        (--http, --tls, --idle and --swap select parts; default: all four)
  --swap-rate R         requests/s of the swap runs, by oha (default $SWAP_RATE)
  --swap-duration S     seconds of each swap run, (a) and (b) (default $SWAP_DURATION; 5 with --quick)
  --swap-every S        seconds between table replacements in (b) (default $SWAP_EVERY)
  --swap-endpoints N    extra endpoints in the swapped tables, in subsets of 1,000 (default $SWAP_ENDPOINTS)
  --swap-rounds N       (a)+(b) pairs per Meridian target (default $SWAP_ROUNDS)
  --tls-key K           certificate key for --tls: ec256 (ECDSA P-256, default) or rsa2048
  --idle-hold S         seconds the idle connections are held before measuring (default $IDLE_HOLD)
  --idle-parallel N     idle connections opening (and served) at a time (default $IDLE_PARALLEL);
                        what the allocator keeps of that many requests' buffers counts too
  --rounds N            interleaved rounds (default $ROUNDS)
  --duration S          seconds of each saturation and HTTPS run (default $DURATION)
  --fixed-duration S    seconds of each fixed-rate run (default $FIXED_DURATION)
  --rates "R1 R2"       fixed rates in requests/s (default "$RATES"; "" to skip)
  --only "T1 T2"        targets (default "nginx haproxy meridian"); also Meridian variants
                        for A/B in the same run: meridian-nolog (no access log),
                        meridian-jemalloc, meridian-mimalloc (allocator by LD_PRELOAD,
                        from Debian's libjemalloc2 / libmimalloc2.0); and a bare Pingora
                        proxy with default settings (benches/bare-pingora): pingora, and
                        pingora-nosteal (work_stealing off); pingora-h1: Pingora's
                        server and listener with a minimal hand-written HTTP/1.1 proxy loop
                        instead of pingora-proxy (the floor under any proxy loop)
  --latency-tool T      oha or hey (default: oha if found or installable, else hey)
  --meridian PATH       use this meridian binary instead of building one
  --meridian-b PATH     a second meridian binary, run as target meridian-b (A/B of two builds
                        in the same run; add meridian-b to --only)
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
    --quick) ROUNDS=1 DURATION=3 FIXED_DURATION=3 WARMUP=1 IDLE_HOLD=2 SWAP_DURATION=5 ;;
    --http) PARTS+=" http" ;;
    --tls) PARTS+=" tls" ;;
    --idle)
        PARTS+=" idle"
        if [[ ${2:-} =~ ^[0-9]+$ ]]; then IDLE_CONNS=$2; shift; fi
        ;;
    --swap) PARTS+=" swap" ;;
    --swap-rate) SWAP_RATE=$2; shift ;;
    --swap-duration) SWAP_DURATION=$2; shift ;;
    --swap-every) SWAP_EVERY=$2; shift ;;
    --swap-endpoints) SWAP_ENDPOINTS=$2; shift ;;
    --swap-rounds) SWAP_ROUNDS=$2; shift ;;
    --tls-key) TLS_KEY=$2; shift ;;
    --idle-hold) IDLE_HOLD=$2; shift ;;
    --idle-parallel) IDLE_PARALLEL=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --fixed-duration) FIXED_DURATION=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --latency-tool) LATENCY_TOOL=$2; shift ;;
    --meridian) MERIDIAN_BIN=$2; BUILD=0; shift ;;
    --meridian-b) MERIDIAN_B_BIN=$2; shift ;;
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
PARTS=${PARTS:-" http tls idle swap"}
[[ $TLS_KEY =~ ^(ec256|rsa2048)$ ]] || { echo "run.sh: --tls-key is ec256 or rsa2048" >&2; exit 2; }
for n in "$ROUNDS" "$DURATION" "$FIXED_DURATION" "$PERF_SECONDS" "$IDLE_CONNS" "$IDLE_HOLD" "$IDLE_PARALLEL" \
    "$SWAP_RATE" "$SWAP_DURATION" "$SWAP_EVERY" "$SWAP_ENDPOINTS" "$SWAP_ROUNDS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: not a positive number: $n" >&2; exit 2; }
done
for r in $RATES; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: not a rate: $r" >&2; exit 2; }
done
for t in $ONLY; do
    [[ $t =~ ^(nginx|haproxy|meridian|meridian-b|meridian-nolog|meridian-jemalloc|meridian-mimalloc|pingora|pingora-nosteal|pingora-h1)$ ]] ||
        { echo "run.sh: unknown target $t" >&2; exit 2; }
done

((SWAP_ENDPOINTS <= 250000)) || { echo "run.sh: --swap-endpoints is at most 250000" >&2; exit 2; }
# Whether a part (http, tls, idle, swap) runs.
part() { [[ " $PARTS " == *" $1 "* ]]; }

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[1;31m[bench]\033[0m %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Cleanup: every process we start is recorded here and stopped by its PID.
PIDS=()
WORK=""
POLICY_RC=""
# SIGTERM to every pid given, then SIGKILL to those still there after 5 s.
stop_pids() { # pid...
    local pid i
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    stop_pids "${PIDS[@]}"
    if [[ -n $POLICY_RC ]]; then rm -f "$POLICY_RC"; fi
    if [[ -n ${PROBES_ADDED:-} ]]; then perf probe -q -d 'probe_libc:*' >/dev/null 2>&1 || true; fi
    if ((PERF)); then perf probe -q -d 'probe_mi:*' >/dev/null 2>&1 || true; fi
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

install_oha() {
    ((INSTALL)) && command -v cargo >/dev/null || return 1
    log "installing oha with cargo (a few minutes, once; --latency-tool hey avoids it for --http)"
    if cargo install oha --locked >"${TMPDIR:-/tmp}/meridian-bench-oha-install.log" 2>&1; then
        return 0
    fi
    log "cargo install oha failed (see ${TMPDIR:-/tmp}/meridian-bench-oha-install.log)"
    return 1
}

ensure_tools() {
    local pkgs=() p c
    PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
    if ! command -v nginx >/dev/null; then
        if apt_candidate nginx-light || ((!APT_UPDATED)); then pkgs+=(nginx-light); else pkgs+=(nginx); fi
    fi
    command -v haproxy >/dev/null || pkgs+=(haproxy)
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v python3 >/dev/null || pkgs+=(python3)
    if part tls; then
        command -v openssl >/dev/null || pkgs+=(openssl)
        # For the wrk shim that tells full from resumed handshakes (wrk_tls_shim.c).
        command -v cc >/dev/null || pkgs+=(gcc libc6-dev)
    fi
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
    if part tls; then
        command -v openssl >/dev/null || die "openssl is missing (needed by --tls); apt-get install openssl"
        nginx -V 2>&1 | grep -q -- --with-http_ssl_module || die "this nginx has no SSL module (needed by --tls)"
    fi

    # --swap needs oha whatever the fixed-rate tool of the HTTP part is: p99.9, and per-request
    # timings (--db-url) to place the slow requests against the swaps.
    if part swap && [[ $ONLY == *meridian* ]]; then
        command -v oha >/dev/null || install_oha || die "--swap needs oha: cargo install oha --locked"
    fi
    if [[ -z $RATES ]] || ! part http; then LATENCY_TOOL=none; return; fi
    if [[ -z $LATENCY_TOOL ]]; then
        if command -v oha >/dev/null; then
            LATENCY_TOOL=oha
        elif command -v hey >/dev/null; then
            LATENCY_TOOL=hey
        elif install_oha; then
            LATENCY_TOOL=oha
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

# Open files: the soft limit is raised to the hard one for everything started from here (the
# proxies and idle.py); --idle needs its connections plus a margin in one process.
NOFILE=$(ulimit -Hn)
if [[ $NOFILE == unlimited ]]; then NOFILE=1048576; fi
ulimit -n "$NOFILE" 2>/dev/null || NOFILE=$(ulimit -n)
if part idle && ((IDLE_CONNS + 512 > NOFILE)); then
    die "--idle $IDLE_CONNS needs $((IDLE_CONNS + 512)) open files per process; the limit is $NOFILE (ulimit -n)"
fi
# nginx's and HAProxy's connection limits: at least the idle connections plus a margin. HAProxy
# wants two descriptors per connection (client and server side) and by default refuses to start
# when it cannot raise its file limit that far; idle clients hold no server connection, so when
# the limit is short `no strict-limits` lets it start with the limit there is (it warns at start).
NGINX_WORKER_CONNS=16384
HAPROXY_MAXCONN=4096
HAPROXY_LIMITS=""
if part idle; then
    if ((IDLE_CONNS + 1024 > NGINX_WORKER_CONNS)); then NGINX_WORKER_CONNS=$((IDLE_CONNS + 1024)); fi
    if ((IDLE_CONNS + 1024 > HAPROXY_MAXCONN)); then HAPROXY_MAXCONN=$((IDLE_CONNS + 1024)); fi
    if ((2 * HAPROXY_MAXCONN + 100 > NOFILE)); then HAPROXY_LIMITS="
    no strict-limits"; fi
fi

# --tls: one self-signed certificate for every proxy, and the wrk shim.
TLS_DIR="$WORK/tls"
WRK_SHIM=""
if part tls; then
    mkdir -p "$TLS_DIR"
    case $TLS_KEY in
    ec256) keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa2048) keyopt=(-newkey rsa:2048) ;;
    esac
    openssl req -x509 "${keyopt[@]}" -nodes -days 2 -subj "/CN=$HOST" \
        -addext "subjectAltName=DNS:$HOST" -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" \
        >"$TLS_DIR/openssl.log" 2>&1 || die "openssl could not make a certificate: $(cat "$TLS_DIR/openssl.log")"
    cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/combined.pem" # HAProxy's crt
    chmod 644 "$TLS_DIR"/*.pem
    if command -v cc >/dev/null &&
        cc -O2 -shared -fPIC -o "$TLS_DIR/wrk_tls_shim.so" "$HERE/wrk_tls_shim.c" -ldl >"$TLS_DIR/cc.log" 2>&1; then
        WRK_SHIM="$TLS_DIR/wrk_tls_shim.so"
    else
        log "could not build the wrk shim (see $TLS_DIR/cc.log): handshakes will be wrk's own mix of full and resumed, not counted"
    fi
fi

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

# The same over TLS (no certificate check), Connection: close; prints the raw response.
https_get() { # port path
    timeout 5 python3 - "$1" "$2" "$HOST" <<'EOF' 2>/dev/null || true
import socket, ssl, sys
port, path, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
data = b""
with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ssl.SSLEOFError, ConnectionResetError):
            pass
sys.stdout.write(data.decode("latin-1"))
EOF
}

# What an OpenSSL client (as wrk) negotiates with `port`: "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519".
tls_info() { # port
    timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername "$HOST" -brief </dev/null 2>&1 |
        awk -F': *' '
            /^Protocol version/ { p = $2 }
            /^Ciphersuite/ { c = $2 }
            /^Server Temp Key/ { split($2, a, ","); g = a[1] }
            /^Negotiated TLS1.3 group/ { g = $2 }
            END { printf "%s %s %s\n", p ? p : "?", c ? c : "?", g ? g : "?" }' || true
}

# Waits until `port` proxies a 200 with the origin's body; `pid` must stay alive meanwhile.
wait_ready() { # name pid port path [http|https]
    local name=$1 pid=$2 port=$3 path=$4 scheme=${5:-http} i resp
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $WORK/$name/*.log"
        if [[ $scheme == https ]]; then resp=$(https_get "$port" "$path"); else resp=$(http_get "$port" "$path"); fi
        if [[ $resp == "HTTP/1."?" 200"* && $resp == *"$BODY"* ]]; then return 0; fi
        sleep 0.1
    done
    die "$name did not answer 200 on $scheme://127.0.0.1:$port$path; last answer: ${resp:-none}"
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
# Steal ticks of the whole machine: time the hypervisor ran something else while this VM's
# vCPUs wanted to run. It is noise that no process here shows.
steal_ticks() { awk '/^cpu / { print $9; exit }' /proc/stat; }

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

declare -A PORT TLS_PORT TPIDS ADMIN
read -r O1 O2 O3 O4 NGINX_PORT HAPROXY_PORT NGINX_TLS_PORT HAPROXY_TLS_PORT <<<"$(free_ports 8)"

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

# The proxying part of nginx's server blocks, the same for HTTP and HTTPS.
nginx_proxy_location() {
    cat <<EOF
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
EOF
}

start_nginx() {
    local d="$WORK/nginx" tls_server=""
    mkdir -p "$d/tmp"
    if part tls; then
        # TLS 1.3 only, HTTP/1.1 (no http2), nginx's defaults otherwise (session tickets on).
        tls_server="
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_protocols TLSv1.3;
$(nginx_proxy_location)
    }"
    fi
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $NGINX_WORKER_CONNS; }
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
$(nginx_proxy_location)
    }$tls_server
}
EOF
    nginx -p "$d" -c "$d/nginx.conf" -t -q 2>"$d/check.log" || die "nginx config: $(cat "$d/check.log")"
    nginx -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_ready nginx "$NGINX_PID" "$NGINX_PORT" "$PATH_BENCH"
    if part tls; then
        wait_ready nginx "$NGINX_PID" "$NGINX_TLS_PORT" "$PATH_BENCH" https
        TLS_PORT[nginx]=$NGINX_TLS_PORT
    fi
}

start_haproxy() {
    local d="$WORK/haproxy" tls_frontend=""
    mkdir -p "$d"
    if part tls; then
        # TLS 1.3 only, HTTP/1.1 by ALPN, HAProxy's defaults otherwise (session cache and tickets).
        tls_frontend="
frontend fe_tls
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $TLS_DIR/combined.pem alpn http/1.1 ssl-min-ver TLSv1.3
    default_backend origin"
    fi
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN$HAPROXY_LIMITS
defaults
    mode http
    maxconn $HAPROXY_MAXCONN
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend origin$tls_frontend
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
    if part tls; then
        wait_ready haproxy "$HAPROXY_PID" "$HAPROXY_TLS_PORT" "$PATH_BENCH" https
        TLS_PORT[haproxy]=$HAPROXY_TLS_PORT
    fi
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
    local name=$1 d="$WORK/$1" i pid port tls_port admin preload="" access_log="access_log: { path: access.log }"
    local tls_listener="" bin=$MERIDIAN_BIN poll=""
    case $name in
    meridian-b) bin=${MERIDIAN_B_BIN:-} && [[ -x $bin ]] || die "meridian-b needs --meridian-b PATH" ;;
    meridian-nolog) access_log="" ;;
    meridian-jemalloc) preload=$(shared_lib libjemalloc.so.2) || die "libjemalloc.so.2 not found" ;;
    meridian-mimalloc) preload=$(shared_lib libmimalloc.so.2) || die "libmimalloc.so.2 not found" ;;
    esac
    mkdir -p "$d"
    rm -f "$d/ports.json" # a restart must wait for the new process's ports
    meridian_table >"$d/table.yaml"
    # --swap: the table file is checked every SWAP_POLL_MS instead of the default 500 ms, so a
    # replacement is picked up soon after it is written.
    if part swap; then poll=", poll_ms: $SWAP_POLL_MS"; fi
    if part tls; then
        # A second listener on the same proxy service (same worker, same table): TLS by rustls,
        # HTTP/1.1 only (no h2 by ALPN).
        tls_listener="
  - address: \"127.0.0.1:0\"
    tls:
      http2: false
      certificates:
        - { hosts: [\"$HOST\"], cert: \"$TLS_DIR/cert.pem\", key: \"$TLS_DIR/key.pem\" }"
    fi
    cat >"$d/gateway.yaml" <<EOF
region: bench
listeners:
  - address: "127.0.0.1:0"$tls_listener
admin: "127.0.0.1:0"
table: { file: table.yaml$poll }
workers: 1
upstream_keepalive_pool: 128
$access_log
EOF
    "$bin" validate "$d" >"$d/validate.log" 2>&1 || die "$name config: $(cat "$d/validate.log")"
    env ${preload:+LD_PRELOAD="$preload"} RUST_LOG="${RUST_LOG:-info}" \
        "$bin" gateway --config "$d/gateway.yaml" --ports-file "$d/ports.json" >"$d/meridian.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        [[ -s $d/ports.json ]] && break
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $d/meridian.log"
        sleep 0.1
    done
    [[ -s $d/ports.json ]] || die "$name wrote no ports file; see $d/meridian.log"
    read -r port admin tls_port <<<"$(python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))
ls = [a.rsplit(":", 1)[1] for a in b["listeners"]]
print(ls[0], b["admin"].rsplit(":", 1)[1], ls[1] if len(ls) > 1 else "")' "$d/ports.json")"
    wait_ready "$name" "$pid" "$port" "$PATH_BENCH"
    if part tls; then
        [[ -n $tls_port ]] || die "$name reported no TLS listener; see $d/ports.json"
        wait_ready "$name" "$pid" "$tls_port" "$PATH_BENCH" https
        TLS_PORT[$name]=$tls_port
    fi
    PORT[$name]=$port
    ADMIN[$name]=$admin
    TPIDS[$name]=$pid
}

# A bare Pingora proxy (benches/bare-pingora): the reference for what Pingora itself costs.
start_pingora_variant() { # name
    local name=$1 d="$WORK/$1" pid port steal=1 mode=proxy
    [[ $name == pingora-nosteal ]] && steal=0
    [[ $name == pingora-h1 ]] && mode=h1
    mkdir -p "$d"
    port=$(free_ports 1)
    env BARE_WORK_STEALING="$steal" BARE_MODE="$mode" RUST_LOG="${RUST_LOG:-info}" "$PINGORA_BIN" "127.0.0.1:$port" \
        "127.0.0.1:$O1" "127.0.0.1:$O2" "127.0.0.1:$O3" "127.0.0.1:$O4" >"$d/pingora.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$name" "$pid" "$port" "$PATH_BENCH"
    PORT[$name]=$port
    TPIDS[$name]=$pid
}

start_target() { # name
    case $1 in
    nginx) start_nginx; PORT[nginx]=$NGINX_PORT TPIDS[nginx]=$(tree_pids "$NGINX_PID") ;;
    haproxy) start_haproxy; PORT[haproxy]=$HAPROXY_PORT TPIDS[haproxy]=$HAPROXY_PID ;;
    meridian*) start_meridian_variant "$1" ;;
    pingora*) start_pingora_variant "$1" ;;
    esac
}

# Stops a target (SIGTERM, then SIGKILL after 5 s) and starts it again with the same settings:
# a fresh process, whose memory holds nothing of the load before.
restart_target() { # name
    # shellcheck disable=SC2086 # a pid list, split on purpose
    stop_pids ${TPIDS[$1]}
    start_target "$1"
}

log "temp dir $WORK; origin on 127.0.0.1:$O1,$O2,$O3,$O4"
start_origin
ORIGIN_PIDS=$(tree_pids "$ORIGIN_PID")
for t in $ONLY; do start_target "$t"; done
for t in $ONLY; do log "$t on 127.0.0.1:${PORT[$t]} (pids $(echo "${TPIDS[$t]}" | xargs))"; done
# The targets that terminate TLS (the bare Pingora proxy has no TLS listener), and what each
# negotiates with an OpenSSL client such as wrk.
TLS_TARGETS=()
declare -A TLS_NEGOTIATED
if part tls; then
    for t in $ONLY; do
        [[ -n ${TLS_PORT[$t]:-} ]] || continue
        TLS_TARGETS+=("$t")
        TLS_NEGOTIATED[$t]=$(tls_info "${TLS_PORT[$t]}")
        log "$t: https on 127.0.0.1:${TLS_PORT[$t]}, negotiates ${TLS_NEGOTIATED[$t]} ($TLS_KEY certificate)"
        [[ ${TLS_NEGOTIATED[$t]} == TLSv1.3* ]] || log "  warning: $t did not negotiate TLS 1.3"
    done
    ((${#TLS_TARGETS[@]})) || log "--tls: none of the targets terminates TLS"
fi

# --swap: the big tables, made once for every Meridian target (their tables are the same): the
# bench table plus SWAP_ENDPOINTS extra endpoints, three versions that differ (swap.py gen), and
# one of them checked by `meridian validate`.
SWAP_TARGETS=()
SWAP_DIR="$WORK/swap"
SWAP_GEN="{}"
SWAP_VALIDATE_MS=""
if part swap; then
    for t in $ONLY; do
        if [[ $t == meridian* ]]; then SWAP_TARGETS+=("$t"); fi
    done
    if ((${#SWAP_TARGETS[@]})); then
        mkdir -p "$SWAP_DIR"
        grep -v '^version:' "$WORK/${SWAP_TARGETS[0]}/table.yaml" >"$SWAP_DIR/base.yaml"
        log "swap: writing 3 versions of the table with $SWAP_ENDPOINTS extra endpoints"
        SWAP_GEN=$(timeout 120 python3 "$HERE/swap.py" gen "$WORK/${SWAP_TARGETS[0]}/table.yaml" "$SWAP_DIR" \
            --versions 3 --endpoints "$SWAP_ENDPOINTS" 2>"$SWAP_DIR/gen.err") ||
            die "swap.py gen failed: $(cat "$SWAP_DIR/gen.err")"
        { echo "version: 2"; cat "$SWAP_DIR/body-0.yaml"; } >"$SWAP_DIR/check.yaml"
        v0=$(date +%s%N)
        timeout 60 "$MERIDIAN_BIN" validate "$SWAP_DIR/check.yaml" >"$SWAP_DIR/validate.log" 2>&1 ||
            die "the generated swap table does not validate: $(head -c 2000 "$SWAP_DIR/validate.log")"
        SWAP_VALIDATE_MS=$((($(date +%s%N) - v0) / 1000000))
        rm -f "$SWAP_DIR/check.yaml"
        log "swap: $SWAP_GEN; \`meridian validate\` of one: $SWAP_VALIDATE_MS ms"
    else
        log "--swap: no Meridian target in --only; skipping it"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 4. Measurements.
STAMP=$(date +%Y%m%dT%H%M%S)
mkdir -p "$OUT_DIR"
RAW="$OUT_DIR/load-$STAMP.csv"
META="$OUT_DIR/load-$STAMP.meta.json"
# kind: saturation, fixed (plain HTTP); tls-keepalive, tls-full, tls-resumed (HTTPS; the last two
# with Connection: close, so one request per connection). new_conns: TCP connections the machine
# accepted meanwhile (PassiveOpens); tls_full, tls_resumed: handshakes as wrk counted them.
echo "round,target,kind,rate,duration_s,requests,rps,errors,p50_ms,p99_ms,proxy_cpu_s,proxy_cpu_us_per_req,origin_cpu_us_per_req,loadgen_cpu_s,other_cores,loadavg1,new_conns,tls_full,tls_resumed,steal_cores" >"$RAW"

# TCP connections accepted by the machine so far (all sockets; the origin's pools are warm).
passive_opens() {
    awk '$1 == "Tcp:" { if (!col) { for (i = 2; i <= NF; i++) if ($i == "PassiveOpens") col = i } else { print $col; exit } }' /proc/net/snmp
}

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
    local p0 p1 o0 o1 m0 m1 c0 c1 w0 w1 n0 n1 load
    local -a hdr=(-H "Host: $HOST") pre=()
    url="http://127.0.0.1:${PORT[$t]}$PATH_BENCH"
    out="$WORK/out-$round-$t-$kind-$rate.txt"
    if [[ $kind == tls-* ]]; then
        url="https://127.0.0.1:${TLS_PORT[$t]}$PATH_BENCH"
        if [[ $kind != tls-keepalive ]]; then hdr+=(-H "Connection: close"); fi
        if [[ -n $WRK_SHIM ]]; then
            pre=(env LD_PRELOAD="$WRK_SHIM" WRK_TLS_SHIM_COUNTS="$out.tls"
                WRK_TLS_SHIM_FULL="$([[ $kind == tls-full ]] && echo 1 || echo 0)")
        fi
    fi
    # shellcheck disable=SC2086 # pid lists split on purpose
    {
        load=$(cut -d' ' -f1 /proc/loadavg)
        children_times 0
        p0=$(cpu_ticks ${TPIDS[$t]}); o0=$(cpu_ticks $ORIGIN_PIDS); m0=$(machine_ticks); s0=$(steal_ticks)
        n0=$(passive_opens)
        w0=$(date +%s%N)
        if [[ $kind != fixed ]]; then
            secs=$DURATION
            timeout $((secs + 15)) "${pre[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency \
                "${hdr[@]}" "$url" >"$out" 2>&1 || true
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
        n1=$(passive_opens)
        p1=$(cpu_ticks ${TPIDS[$t]}); o1=$(cpu_ticks $ORIGIN_PIDS); m1=$(machine_ticks); s1=$(steal_ticks)
        children_times 1
    }
    c0=$(children_cpu_s 0)
    c1=$(children_cpu_s 1)
    local req rps err p50 p99 steal full="" resumed=""
    if [[ $kind != fixed ]]; then
        read -r req rps err p50 p99 <<<"$(parse_wrk "$out")"
    else
        read -r req rps err p50 p99 <<<"$(parse_fixed "$out" 2>/dev/null || echo "0 0 0 0 0")"
    fi
    if [[ -s $out.tls ]]; then read -r full resumed <"$out.tls"; fi
    local row
    row=$(awk -v r="$round" -v t="$t" -v k="$kind" -v rate="$rate" -v req="$req" -v rps="$rps" \
        -v err="$err" -v p50="$p50" -v p99="$p99" -v dp=$((p1 - p0)) -v dor=$((o1 - o0)) \
        -v dm=$((m1 - m0)) -v dc0="$c0" -v dc1="$c1" -v wall=$((w1 - w0)) -v tick="$TICK" \
        -v load="$load" -v nc=$((n1 - n0)) -v full="$full" -v resumed="$resumed" \
        -v dst=$((s1 - s0)) 'BEGIN {
            ps = dp / tick; os = dor / tick; ls = dc1 - dc0; ms = dm / tick; wall_s = wall / 1e9
            other = (ms - ps - os - ls) / wall_s; if (other < 0) other = 0
            steal = dst / tick / wall_s
            us = req > 0 ? ps * 1e6 / req : 0; ous = req > 0 ? os * 1e6 / req : 0
            printf "%s,%s,%s,%s,%.2f,%d,%.1f,%d,%.3f,%.3f,%.2f,%.2f,%.2f,%.2f,%.2f,%s,%d,%s,%s,%.3f\n",
                r, t, k, rate, wall_s, req, rps, err, p50, p99, ps, us, ous, ls, other, load, nc, full, resumed, steal }')
    echo "$row" >>"$RAW"
    IFS=, read -r _ _ _ _ _ _ rps err p50 p99 _ us _ _ other _ _ _ _ steal <<<"$row"
    local what
    case $kind in
    saturation) what="saturation   $(printf '%8.0f' "$rps") req/s " ;;
    fixed) what="@$(printf '%-6s' "$rate")      $(printf '%8.0f' "$rps") req/s " ;;
    tls-keepalive) what="https k-alive $(printf '%8.0f' "$rps") req/s " ;;
    tls-full) what="https full   $(printf '%8.0f' "$rps") conn/s" ;;
    tls-resumed) what="https resumed$(printf '%8.0f' "$rps") conn/s" ;;
    esac
    log "round $round  $(printf '%-8s' "$t") $what  p50 ${p50} ms  p99 ${p99} ms  ${us} µs/req  errors $err  (others used $other cores, steal $steal)"
    if [[ $kind == tls-full || $kind == tls-resumed ]]; then
        log "  $((n1 - n0)) new connections for $req requests; handshakes seen by wrk: ${full:-?} full, ${resumed:-?} resumed"
        if [[ $kind == tls-full && ${resumed:-0} -gt 0 ]]; then log "  warning: resumed handshakes in the full-handshake run"; fi
    fi
    if ((req == 0)); then log "  no requests counted; output: $out"; fi
    sleep 1
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
read -r -a TARGETS <<<"$ONLY"
# The targets in an order that rotates every round, so that none always runs first or last.
rotated() { # round target...
    local round=$1 i
    shift
    for ((i = 0; i < $#; i++)); do
        echo "${@:$(((i + round - 1) % $# + 1)):1}"
    done
}
if part http; then
    for t in $ONLY; do
        timeout $((WARMUP + 15)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -H "Host: $HOST" \
            "http://127.0.0.1:${PORT[$t]}$PATH_BENCH" >/dev/null 2>&1 || true
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for t in $(rotated "$round" "${TARGETS[@]}"); do
            measure "$round" "$t" saturation 0
            for r in $RATES; do measure "$round" "$t" fixed "$r"; done
        done
    done
fi

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

# Peak RSS over the plain HTTP rounds (before the HTTPS and idle-connection parts).
declare -A RSS
for t in $ONLY; do
    # shellcheck disable=SC2086
    RSS[$t]=$(peak_rss_kib ${TPIDS[$t]})
done
# shellcheck disable=SC2086
RSS[origin]=$(peak_rss_kib $ORIGIN_PIDS)

# ---------------------------------------------------------------------------------------------
# HTTPS (--tls): per round, per TLS target (order rotated): keep-alive saturation, then one
# request per connection with full handshakes, then with resumed ones (TLS 1.3 tickets).
if part tls && ((${#TLS_TARGETS[@]})); then
    for t in "${TLS_TARGETS[@]}"; do
        timeout $((WARMUP + 15)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -H "Host: $HOST" \
            "https://127.0.0.1:${TLS_PORT[$t]}$PATH_BENCH" >/dev/null 2>&1 || true
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for t in $(rotated "$round" "${TLS_TARGETS[@]}"); do
            measure "$round" "$t" tls-keepalive 0
            if [[ -n $WRK_SHIM ]]; then measure "$round" "$t" tls-full 0; fi
            measure "$round" "$t" tls-resumed 0
        done
    done
fi

# ---------------------------------------------------------------------------------------------
# Idle connections (--idle): once per target, in a process that has not held that many before
# (an allocator keeps part of what it freed, so a second pass would count only new growth).
# After the load parts each target is restarted first: memory its allocator kept from minutes
# of load would otherwise hold the idle connections without the RSS growing at all.
IDLE_CSV="$OUT_DIR/load-$STAMP.idle.csv"
if part idle; then
    if part http || part tls; then
        for t in $ONLY; do
            restart_target "$t"
            log "idle: $t restarted on 127.0.0.1:${PORT[$t]} (pids $(echo "${TPIDS[$t]}" | xargs))"
        done
    fi
    echo "target,conns,opened,open_at_measure,closed_by_proxy,unexpected_data,reused_ok,rss_before_kib,rss_held_kib,rss_after_close_kib,kib_per_conn,open_s,hold_s,open_errors,reuse_errors" >"$IDLE_CSV"
    for t in $ONLY; do
        sleep 1
        log "idle: $t: $IDLE_CONNS keep-alive connections, one request each, held ${IDLE_HOLD}s"
        out="$WORK/idle-$t.json"
        timeout $((IDLE_HOLD + 300)) python3 "$HERE/idle.py" --port "${PORT[$t]}" --host "$HOST" \
            --path "$PATH_BENCH" --expect "$BODY" --pids "$(echo "${TPIDS[$t]}" | xargs | tr ' ' ,)" \
            --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --parallel "$IDLE_PARALLEL" >"$out" 2>"$out.err" || true
        row=$(python3 - "$t" "$out" <<'EOF'
import json, sys
t, path = sys.argv[1:3]
try:
    d = json.load(open(path))
except (OSError, ValueError):
    d = {}
def fmt(e):
    return " ".join(f"{k}={v}" for k, v in sorted((e or {}).items()))
cols = ["conns", "opened", "open_at_measure", "closed_by_proxy", "unexpected_data", "reused_ok",
        "rss_before_kib", "rss_held_kib", "rss_after_close_kib", "kib_per_conn", "open_s", "hold_s"]
print(",".join([t] + ["" if d.get(c) is None else str(d[c]) for c in cols]
               + [fmt(d.get("open_errors")), fmt(d.get("reuse_errors"))]))
EOF
        )
        echo "$row" >>"$IDLE_CSV"
        IFS=, read -r _ conns opened held closed data reused before after _ kib _ _ oerr rerr <<<"$row"
        if [[ -z $opened ]]; then
            log "  idle.py gave no result; see $out and $out.err"
            continue
        fi
        log "  opened $opened/$conns, open at measurement $held (closed by the proxy $closed, data $data), reused OK $reused;" \
            "RSS $((before / 1024)) -> $((after / 1024)) MiB: ${kib:-n/a} KiB per connection"
        if [[ -n $oerr ]]; then log "  open errors: $oerr"; fi
        if [[ -n $rerr ]]; then log "  reuse errors: $rerr"; fi
    done
fi

# ---------------------------------------------------------------------------------------------
# Table swaps under load (--swap), per Meridian target, per swap round, at SWAP_RATE requests/s
# with oha (--latency-correction, CONNS connections, SWAP_DURATION s each):
#   (a) steady: a big table (body-0, SWAP_ENDPOINTS extra endpoints) in force, the file unchanged;
#   (b) churn: the same while swap.py replaces the table file every SWAP_EVERY s, from 1 s into
#       the run until SWAP_EVERY s before its end, by the other versions in turn (new `version`
#       each time), so the gateway reads, parses, builds and swaps a 100k-endpoint table under load.
# Swaps are counted from /metrics (meridian_table_applies_total, _rejections_total) before and
# after each run; the gateway's log tells when each version was applied. Afterwards the small
# bench table is put back (a higher version), so later parts run as before.
SWAP_CSV="$OUT_DIR/load-$STAMP.swap.csv"
SWAP_VERSION=10
# oha's per-request rows (for the timing of slow requests against the swaps), when it has them.
SWAP_DB=0
if ((${#SWAP_TARGETS[@]})) && oha --help 2>/dev/null | grep -q -- --db-url; then SWAP_DB=1; fi

# The gateway's table counters from /metrics: "applies rejections version inflight_series".
table_counters() { # target
    http_get "${ADMIN[$1]}" /metrics >"$SWAP_DIR/metrics-$1.txt"
    awk '/^meridian_table_applies_total / { a = $NF }
         /^meridian_table_rejections_total / { r = $NF }
         /^meridian_table_version / { v = $NF }
         /^meridian_upstream_inflight\{/ { n++ }
         END { printf "%d %d %d %d\n", a, r, v, n }' "$SWAP_DIR/metrics-$1.txt"
}

# Waits until the gateway logs that it applied `version` (0), or `secs` pass (1).
wait_applied() { # target version secs
    local t=$1 v=$2 i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "${TPIDS[$t]}" 2>/dev/null || die "$t exited; see $WORK/$t/meridian.log"
        if sed 's/\x1b\[[0-9;]*m//g' "$WORK/$t/meridian.log" |
            grep -Eq "routing table applied.* version=$v( |$)"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Puts a table in force: `version` and a body, written to a temp file and renamed over the
# watched file; waits for the gateway to apply it.
install_table() { # target version body
    local t=$1 v=$2 body=$3 tmp="$WORK/$1/.table.yaml.tmp"
    { echo "version: $v"; cat "$body"; } >"$tmp"
    mv -f "$tmp" "$WORK/$t/table.yaml"
    wait_applied "$t" "$v" 60 || die "$t did not apply table version $v within 60 s; see $WORK/$t/meridian.log"
}

# user and system ticks of a process's threads whose name matches a regex: "user sys".
thread_ticks() { # pid regex
    local f line comm u=0 k=0
    local -a a
    for f in /proc/"$1"/task/*/stat; do
        line=$(<"$f") 2>/dev/null || continue
        comm=${line#*(}
        comm=${comm%%)*}
        [[ $comm =~ $2 ]] || continue
        line=${line##*) }
        read -r -a a <<<"$line"
        u=$((u + a[11])) k=$((k + a[12]))
    done
    echo "$u $k"
}

# Nanoseconds on a CPU and waiting for one (run queue) of a process's threads whose name does
# not match a regex (/proc/PID/task/TID/schedstat): "run wait".
thread_sched() { # pid regex
    local d comm run wait r=0 w=0
    for d in /proc/"$1"/task/*; do
        comm=$(<"$d/comm") 2>/dev/null || continue
        [[ $comm =~ $2 ]] && continue
        read -r run wait _ <"$d/schedstat" 2>/dev/null || continue
        r=$((r + run)) w=$((w + wait))
    done
    echo "$r $w"
}

vm_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

measure_swap() { # round target phase(steady|churn)
    local round=$1 t=$2 phase=$3 url out db swaplog anchor oha_pid swap_pid="" until
    local a0 r0 a1 r1 v1 series p0 p1 o0 o1 m0 m1 c0 c1 w0 w1 load last row pid=${TPIDS[$2]}
    local wu0 ws0 wu1 ws1 gs0 gs1 sr0 sw0 sr1 sw1
    local -a dbarg=()
    url="http://127.0.0.1:${PORT[$t]}$PATH_BENCH"
    out="$SWAP_DIR/oha-$round-$t-$phase.json"
    db="$SWAP_DIR/oha-$round-$t-$phase.db"
    swaplog="$SWAP_DIR/swaps-$round-$t-$phase.log"
    rm -f "$db"
    if ((SWAP_DB)); then dbarg=(--db-url "$db"); fi
    : >"$swaplog"
    read -r a0 r0 _ _ <<<"$(table_counters "$t")"
    sleep 0.5
    until=$((SWAP_DURATION - SWAP_EVERY))
    ((until >= 1)) || until=1
    # shellcheck disable=SC2086 # pid lists split on purpose
    {
        load=$(cut -d' ' -f1 /proc/loadavg)
        children_times 0
        p0=$(cpu_ticks ${TPIDS[$t]}); o0=$(cpu_ticks $ORIGIN_PIDS); m0=$(machine_ticks)
        read -r wu0 ws0 <<<"$(thread_ticks "$pid" '^(table-watch|snapshot-reap)')"
        read -r _ gs0 <<<"$(thread_ticks "$pid" .)"
        read -r sr0 sw0 <<<"$(thread_sched "$pid" '^(table-watch|snapshot-reap|access-log)')"
        w0=$(date +%s%N)
        anchor=$(date +%s.%N)
        if [[ $phase == churn ]]; then
            timeout $((SWAP_DURATION + 10)) python3 "$HERE/swap.py" swap \
                "$SWAP_DIR/body-1.yaml" "$SWAP_DIR/body-2.yaml" "$SWAP_DIR/body-0.yaml" "$WORK/$t/table.yaml" \
                --start-version "$SWAP_VERSION" --anchor "$anchor" --first 1 --every "$SWAP_EVERY" \
                --until "$until" --log "$swaplog" 2>"$swaplog.err" &
            swap_pid=$!
            PIDS+=("$swap_pid")
        fi
        # oha writes its per-request rows (--db-url) after the run: the CPU counts stop at the end
        # of the load, not of that write.
        timeout $((SWAP_DURATION + 60)) oha --no-tui --output-format json --latency-correction \
            "${dbarg[@]}" -q "$SWAP_RATE" -z "${SWAP_DURATION}s" -c "$CONNS" \
            -H "Host: $HOST" "$url" >"$out" 2>"$out.err" &
        oha_pid=$!
        PIDS+=("$oha_pid")
        sleep "$SWAP_DURATION.05"
        w1=$(date +%s%N)
        p1=$(cpu_ticks ${TPIDS[$t]}); o1=$(cpu_ticks $ORIGIN_PIDS); m1=$(machine_ticks)
        read -r wu1 ws1 <<<"$(thread_ticks "$pid" '^(table-watch|snapshot-reap)')"
        read -r _ gs1 <<<"$(thread_ticks "$pid" .)"
        read -r sr1 sw1 <<<"$(thread_sched "$pid" '^(table-watch|snapshot-reap|access-log)')"
        wait "$oha_pid" 2>/dev/null || true
        if [[ -n $swap_pid ]]; then wait "$swap_pid" 2>/dev/null || true; fi
        children_times 1
    }
    c0=$(children_cpu_s 0)
    c1=$(children_cpu_s 1)
    if [[ $phase == churn ]]; then
        last=$(awk 'END { print $2 }' "$swaplog")
        if [[ -n $last ]]; then
            wait_applied "$t" "$last" 30 || log "  $t did not apply the last table (version $last) within 30 s"
            SWAP_VERSION=$((last + 1))
        else
            log "  no table was written; see $swaplog.err"
        fi
    fi
    read -r a1 r1 v1 series <<<"$(table_counters "$t")"
    timeout 60 python3 "$HERE/swap.py" analyze "$out" --db "$db" --anchor "$anchor" --swaps "$swaplog" \
        --gateway-log "$WORK/$t/meridian.log" >"$out.analysis" 2>"$out.analysis.err" || echo '{}' >"$out.analysis"
    row=$(python3 - "$out.analysis" <<PY
import json, sys
d = json.load(open(sys.argv[1]))
tick, wall = $TICK, ($w1 - $w0) / 1e9
ps, os_, ms = ($p1 - $p0) / tick, ($o1 - $o0) / tick, ($m1 - $m0) / tick
ls = $c1 - $c0
req = d.get("requests") or 0
other = max(0.0, (ms - ps - os_ - ls) / wall)
def g(k):
    v = d.get(k)
    return "" if v is None else str(v)
print(",".join(str(x) for x in [
    $round, "$t", "$phase", $SWAP_RATE, f"{wall:.2f}", req, g("rps"), d.get("errors", 0),
    g("p50_ms"), g("p99_ms"), g("p999_ms"), g("max_ms"), f"{ps:.2f}",
    f"{ps * 1e6 / req:.2f}" if req else "", f"{os_ * 1e6 / req:.2f}" if req else "",
    f"{ls:.2f}", f"{other:.2f}", "$load", d.get("swaps_written", 0), $a1 - $a0, $r1 - $r0, $v1,
    g("apply_ms_median"), g("apply_ms_max"), g("build_p99_ms"), g("build_max_ms"),
    g("swap_max_ms_median"), g("quiet_p99_ms"), g("quiet_max_ms"), g("quarter_max_ms_median"),
    g("second_max_ms_median"), $(vm_rss_kib "${TPIDS[$t]}"), $series,
    f"{($wu1 - $wu0) / tick:.2f}", f"{($ws1 - $ws0) / tick:.2f}", f"{($gs1 - $gs0) / tick:.2f}",
    f"{($sr1 - $sr0) / 1e9:.2f}", f"{($sw1 - $sw0) / 1e9:.2f}"]))
PY
    )
    echo "$row" >>"$SWAP_CSV"
    local req err p50 p99 p999 max us written applied rej
    IFS=, read -r _ _ _ _ _ req _ err p50 p99 p999 max _ us _ _ _ _ written applied rej _ <<<"$row"
    local tu ts psys srun swait
    IFS=, read -r tu ts psys srun swait <<<"$(cut -d, -f34- <<<"$row")"
    log "swap round $round  $(printf '%-8s' "$t") $(printf '%-6s' "$phase") @$SWAP_RATE  p50 $p50 ms  p99 $p99 ms  p99.9 $p999 ms  max $max ms  ${us} µs/req  requests $req  errors $err"
    log "  CPU of the table watcher and reaper threads: ${tu} s user, ${ts} s system; the gateway's system time: ${psys} s;" \
        "its other threads ran ${srun} s and waited ${swait} s for a CPU"
    if [[ $phase == churn ]]; then
        log "  tables written $written, applied $applied (meridian_table_applies_total), rejected $rej; version now $v1"
        python3 - "$out.analysis" <<'PY' | while IFS= read -r line; do log "$line"; done || true
import json, sys
d = json.load(open(sys.argv[1]))
if "swap_max_ms" in d:
    print(f"  per swap, write to applied (ms): {d.get('apply_ms')}")
    print(f"  while building ({d['build_requests']} requests): p99 {d['build_p99_ms']} ms; worst per swap (ms): {d['build_max_ms_per_swap']}")
    print(f"  the {d['swap_window_s']:g} s after each swap, worst per swap (ms): {d['swap_max_ms']}")
    print(f"  the other requests ({d['quiet_requests']}): p99 {d['quiet_p99_ms']} ms, max {d['quiet_max_ms']} ms")
PY
    elif ((a1 != a0 || r1 != r0)); then
        log "  warning: the table changed during the steady run (applies +$((a1 - a0)), rejections +$((r1 - r0)))"
    fi
    if ((r1 > r0)); then
        log "  table rejections: $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$t/meridian.log" | grep 'routing table rejected' | tail -1)"
    fi
    if ((req == 0)); then log "  no requests counted; output: $out, $out.err"; fi
    ((KEEP)) || rm -f "$db"
    sleep 1
}

if part swap && ((${#SWAP_TARGETS[@]})); then
    echo "round,target,phase,rate,duration_s,requests,rps,errors,p50_ms,p99_ms,p999_ms,max_ms,proxy_cpu_s,proxy_cpu_us_per_req,origin_cpu_us_per_req,loadgen_cpu_s,other_cores,loadavg1,swaps_written,swaps_applied,rejections,table_version,apply_ms_median,apply_ms_max,build_p99_ms,build_max_ms,swap_max_ms_median,quiet_p99_ms,quiet_max_ms,quarter_max_ms_median,second_max_ms_median,rss_kib,inflight_series,table_threads_user_s,table_threads_sys_s,proxy_sys_s,serving_threads_run_s,serving_threads_runqueue_s" >"$SWAP_CSV"
    for t in "${SWAP_TARGETS[@]}"; do
        for ((round = 1; round <= SWAP_ROUNDS; round++)); do
            log "swap: $t: table with $SWAP_ENDPOINTS extra endpoints in force (version $SWAP_VERSION)"
            s0=$(date +%s%N)
            install_table "$t" "$SWAP_VERSION" "$SWAP_DIR/body-0.yaml"
            log "  applied $((($(date +%s%N) - s0) / 1000000)) ms after it was written; RSS $(($(vm_rss_kib "${TPIDS[$t]}") / 1024)) MiB"
            SWAP_VERSION=$((SWAP_VERSION + 1))
            timeout $((WARMUP + 15)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -H "Host: $HOST" \
                "http://127.0.0.1:${PORT[$t]}$PATH_BENCH" >/dev/null 2>&1 || true
            sleep 1
            measure_swap "$round" "$t" steady
            measure_swap "$round" "$t" churn
        done
        # The small bench table again, for the parts that follow.
        install_table "$t" "$SWAP_VERSION" "$SWAP_DIR/base.yaml"
        SWAP_VERSION=$((SWAP_VERSION + 1))
    done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Optional: where the time goes. For each target, under wrk:
#   - syscalls and context switches per request (perf stat on syscall tracepoints);
#   - malloc/free calls per request (perf uprobes on glibc's malloc, free and realloc, or, for
#     a binary that links mimalloc as its global allocator, as meridian does, on its mi_*
#     entry points; they slow the target a lot, so this runs apart, with 8 connections for 2 s;
#     n/a for LD_PRELOADed allocators);
#   - a CPU profile with DWARF call graphs, summarised by profile.py (threads, leaf classes,
#     self symbols, Meridian's proxy phases).
# The uprobes this adds are removed on exit.
PROBES_ADDED=""
remove_probes() {
    if [[ -n $PROBES_ADDED ]]; then perf probe -q -d 'probe_libc:*' >/dev/null 2>&1 || true; fi
}
# Uprobes on the mimalloc entry points that Rust's global allocator calls, in the binary of
# process $1; prints the events to count, or nothing when the binary has no mimalloc. Event
# names are unique across groups, hence mi_malloc beside probe_libc:malloc.
add_mimalloc_probes() { # pid
    local bin
    bin=$(readlink -f "/proc/$1/exe" 2>/dev/null) || return 0
    perf probe -q -d 'probe_mi:*' >/dev/null 2>&1 || true
    if perf probe -q -x "$bin" -a 'probe_mi:mi_malloc=mi_malloc_aligned' >/dev/null 2>"$WORK/probe-mi.err" &&
        perf probe -q -x "$bin" -a 'probe_mi:mi_zalloc=mi_zalloc_aligned' >/dev/null 2>>"$WORK/probe-mi.err" &&
        perf probe -q -x "$bin" -a 'probe_mi:mi_realloc=mi_realloc_aligned' >/dev/null 2>>"$WORK/probe-mi.err" &&
        perf probe -q -x "$bin" -a 'probe_mi:mi_free=mi_free' >/dev/null 2>>"$WORK/probe-mi.err"; then
        echo 'probe_mi:mi_malloc,probe_mi:mi_zalloc,probe_mi:mi_realloc,probe_mi:mi_free'
    else
        log "perf: no uprobes on mimalloc in $bin: $(head -c 300 "$WORK/probe-mi.err" | tr '\n' ' ')"
        perf probe -q -d 'probe_mi:*' >/dev/null 2>&1 || true
    fi
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
        mevents=""
        if [[ $t == meridian* ]]; then mevents=$(add_mimalloc_probes "${pids%%,*}"); fi
        if [[ -z $mevents ]] && ((HAVE_PROBES)); then mevents='probe_libc:malloc,probe_libc:free,probe_libc:realloc'; fi
        if [[ -n $mevents ]]; then
            log "perf: counting allocations of $t (${mevents%%:*}; 2 s, 8 connections, slowed by the uprobes)"
            perf stat -x, -o "$WORK/malloc-$t.csv" -e "$mevents" -p "$pids" -- \
                wrk -t1 -c8 -d2s -H "Host: $HOST" "$url" >"$WORK/malloc-$t.wrk" 2>&1 || true
            read -r mreq _ <<<"$(parse_wrk "$WORK/malloc-$t.wrk")"
        fi
        if [[ $mevents == probe_mi:* ]]; then perf probe -q -d 'probe_mi:*' >/dev/null 2>&1 || true; fi
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
    printf '    "rates": [%s], "latency_tool": %s, "targets": [%s],\n' \
        "$(part http && echo "$RATES" | xargs | sed 's/ /, /g')" "$(json_str "$LATENCY_TOOL")" \
        "$(for t in $ONLY; do json_str "$t"; echo; done | paste -sd, -)"
    printf '    "parts": [%s]\n' "$(for p in $PARTS; do json_str "$p"; echo; done | paste -sd, -)"
    printf '  },\n'
    printf '  "tls": {\n'
    printf '    "key": %s, "wrk_shim": %s, "openssl": %s,\n' "$(json_str "$TLS_KEY")" \
        "$([[ -n $WRK_SHIM ]] && echo true || echo false)" "$(json_str "$(version_of openssl version)")"
    printf '    "targets": [%s],\n' "$(for t in "${TLS_TARGETS[@]}"; do json_str "$t"; echo; done | paste -sd, -)"
    printf '    "negotiated": {%s}\n' \
        "$(for t in "${TLS_TARGETS[@]}"; do printf '%s: %s\n' "$(json_str "$t")" "$(json_str "${TLS_NEGOTIATED[$t]}")"; done | paste -sd, -)"
    printf '  },\n'
    printf '  "idle": { "connections": %s, "hold_s": %s, "nofile": %s, "nginx_worker_connections": %s, "haproxy_maxconn": %s, "csv": %s },\n' \
        "$IDLE_CONNS" "$IDLE_HOLD" "$NOFILE" "$NGINX_WORKER_CONNS" "$HAPROXY_MAXCONN" \
        "$(json_str "$(part idle && basename "$IDLE_CSV")")"
    printf '  "swap": { "rate": %s, "duration_s": %s, "every_s": %s, "endpoints": %s, "per_subset": 1000, "versions": 3,\n' \
        "$SWAP_RATE" "$SWAP_DURATION" "$SWAP_EVERY" "$SWAP_ENDPOINTS"
    printf '    "poll_ms": %s, "rounds": %s, "connections": %s, "targets": [%s], "gen": %s, "validate_ms": %s,\n' \
        "$SWAP_POLL_MS" "$SWAP_ROUNDS" "$CONNS" \
        "$(for t in "${SWAP_TARGETS[@]}"; do json_str "$t"; echo; done | paste -sd, -)" "$SWAP_GEN" "${SWAP_VALIDATE_MS:-null}"
    printf '    "oha": %s, "csv": %s },\n' "$(json_str "$( ((${#SWAP_TARGETS[@]})) && version_of oha --version)")" \
        "$(json_str "$( ((${#SWAP_TARGETS[@]})) && basename "$SWAP_CSV")")"
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
if part idle; then log "idle connections: $IDLE_CSV"; fi
if ((${#SWAP_TARGETS[@]})); then log "table swaps: $SWAP_CSV"; fi
log "summary: $OUT_DIR/load-$STAMP.summary.md (and .summary.json)"
