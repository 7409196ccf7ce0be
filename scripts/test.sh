#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# first (Go, Prometheus and Chromium, which the export and endpoint tests
# drive), then the tests with every feature and the core alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real clients the tests drive (a missing one fails its test, never
# skips it): Go for `go tool pprof`, Prometheus for `/metrics`, Chromium for
# the dashboard. Debian/Ubuntu package names.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
need() { # need COMMAND PACKAGE WHY
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "$1 not found: installing $2 (needed by the $3 tests)"
        missing+=("$2")
    fi
}
need go golang-go "pprof export and endpoint"
need prometheus prometheus "Prometheus scrape"
need chromium chromium "dashboard"
if [ "${#missing[@]}" -gt 0 ]; then
    # One update and one install for all of them (one dpkg run). Starting
    # the Debian prometheus service at install is harmless; the tests run
    # their own server on a port of their own.
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
go version
prometheus --version 2>&1 | head -n 1
chromium --version

# Everything, including the exports checked against the real clients.
cargo test --all-features
# Attribution as users' services are built: release, line tables only
# (inlining, unrolling, short frame names).
cargo test --release --test attribution --test self_record
# The core must build and pass its own tests without the export features.
cargo test --no-default-features --lib --tests
# The README's main command: the top site of the diff must be the stack
# through `generate_string`.
out=$(cargo run --release --example global_slice_leak)
top=$(printf '%s\n' "$out" | grep -A1 'live change' | tail -n 1)
echo "global_slice_leak top site: $top"
case "$top" in
    *global_slice_leak::generate_string*) ;;
    *) echo "FAIL: the top site of global_slice_leak is not generate_string" >&2; printf '%s\n' "$out" >&2; exit 1 ;;
esac
# Docs build clean. (The benches are compiled and linted by
# `cargo clippy --all-targets` in CI; building them here would rebuild every
# dependency in the bench profile for nothing but a link check.)
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features
