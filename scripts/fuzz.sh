#!/usr/bin/env bash
# Fuzzes the built-in server's parsing of untrusted bytes with cargo-fuzz
# (libFuzzer, under AddressSanitizer): the request head as the event loop
# reads it (fuzz/fuzz_targets/request_head.rs) and the routes' query
# strings and symbol bodies (fuzz/fuzz_targets/query.rs), each for a
# bounded time, starting from the committed corpus (fuzz/corpus/<target>).
#
#   scripts/fuzz.sh                          # both targets, 60 s each
#   FUZZ_SECONDS=600 TARGETS=query scripts/fuzz.sh
#
# Installs cargo-fuzz when it is missing (from crates.io, the version this
# script was written against, with its own lock file). libFuzzer and the
# sanitizer are unstable flags: RUSTC_BOOTSTRAP=1 on the stable toolchain,
# only for these builds (in fuzz/target, apart from the ordinary cache).
# New inputs found go to a scratch directory, so the committed corpus only
# changes by hand (`cargo fuzz cmin` first); a crash is saved under
# fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz not found: installing it"
    cargo install --locked cargo-fuzz --version 0.13.2
fi
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
TARGETS=${TARGETS:-"request_head query"}
export RUSTC_BOOTSTRAP=1

for t in $TARGETS; do
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    start=$SECONDS
    # Heads are at most 16 KiB; -timeout: one input taking a second is a
    # finding too (the server parses on its only event-loop thread).
    cargo fuzz run --fuzz-dir fuzz "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len=20000 -timeout=1 -rss_limit_mb=2048
    echo "== fuzz $t: no crash in $((SECONDS - start)) s"
    rm -rf "$scratch"
done
