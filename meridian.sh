#!/usr/bin/env bash
# Meridian's entry point.
#   ./meridian.sh demo [--duration SECS] [--rate N]   build (release) and run the demo
#   ./meridian.sh test                                 rustfmt, clippy and every test
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    echo "usage: $0 demo [--duration SECS] [--rate N] | $0 test" >&2
    exit 2
}

# Cargo from rustup may not be on PATH in a non-login shell.
if ! command -v cargo >/dev/null && [ -x "${HOME:-}/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# Native build tools Pingora 0.9 (proxy + rustls) needs: libz-ng-sys builds zlib-ng with cmake
# (Makefile generator), and ring and zstd-sys compile C with cc. pkg-config is not needed.
ensure_build_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v make >/dev/null || missing+=(make)
    if ! command -v cc >/dev/null; then
        missing+=(gcc libc6-dev)
    elif ! echo '#include <stdio.h>' | cc -E - >/dev/null 2>&1; then
        missing+=(libc6-dev)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=()
        if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
            # Without a terminal, sudo must not wait for a password.
            if [ -t 0 ]; then sudo=(sudo); else sudo=(sudo -n); fi
        fi
        if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ ${#sudo[@]} -gt 0 ]; }; then
            echo "meridian.sh: installing ${missing[*]}" >&2
            "${sudo[@]}" apt-get update
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
        else
            echo "meridian.sh: missing build tools; install these packages and retry: ${missing[*]}" >&2
            exit 1
        fi
    fi
    if ! command -v cargo >/dev/null; then
        echo "meridian.sh: cargo not found; install Rust (1.95 or newer) with rustup and retry" >&2
        exit 1
    fi
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    demo)
        ensure_build_tools
        exec cargo run --release -p meridian-gateway --bin meridian -- demo "$@"
        ;;
    test)
        [ $# -eq 0 ] || usage
        ensure_build_tools
        cargo fmt --all -- --check
        cargo clippy --workspace --all-targets -- -D warnings
        cargo test --workspace
        ;;
    *)
        usage
        ;;
esac
