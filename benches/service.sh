#!/usr/bin/env bash
# What leakscope costs a real service: an axum service on tokio's
# multi-threaded runtime (two workers), one binary per global allocator
# (benches/service/: one service source, `svc_*.rs` variants), driven on
# loopback by a closed-loop load generator with a fixed number of keep-alive
# requests (benches/service/svc_load.rs).
#
# Built as users build: release, the README's profile (`debug =
# "line-tables-only"`), no extra flags (this repository's frame-pointer flag
# is switched off here, in a target dir of its own).
#
# Figures, per variant: requests per second and CPU time per request (the
# service's own user+system time over the requests it served), resident size
# after the run (medians of ROUNDS interleaved rounds; "paired" is the median
# of the per-round ratios to the baseline), then instructions per request
# (callgrind, the service alone, counters zeroed after the warm-up; median of
# CG_ROUNDS runs). Baselines: System, or mimalloc alone for the mimalloc rows.
#
#   benches/service.sh                      # everything (about 10 minutes)
#   ROUNDS=3 CALLGRIND=0 benches/service.sh # wall-clock table only
#   WALL=0 benches/service.sh               # callgrind table only
#   VARIANTS="system tracker_default" benches/service.sh
#
# The `*_fp` rows are built with frame pointers (`-C force-frame-pointers=yes`,
# in a target dir of their own): System, and the tracker with
# `Unwinder::FramePointers`, what a service that wants cheaper stack captures
# builds; their baseline is System built the same way.
#
# The `tracker_full*` variants run the growth monitor (10 s interval) and the
# HTTP endpoint; the load generator asks the endpoint for /debug/pprof/heap
# once, halfway through the measured requests, so its cost (the first
# symbolization of the process included) is in the figures. The
# `tracker_full_idle*` rows run the same binary without asking: what the
# monitor and a listening endpoint cost by themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
REQUESTS=${REQUESTS:-40000}
WARMUP=${WARMUP:-2000}
CONNECTIONS=${CONNECTIONS:-4}
CALLGRIND=${CALLGRIND:-1}
CG_REQUESTS=${CG_REQUESTS:-10000}
CG_ROUNDS=${CG_ROUNDS:-3}
WALL=${WALL:-1}
VARIANTS=${VARIANTS:-"system tracker_off tracker_default tracker_full_idle tracker_full tracker_exact mimalloc tracker_default_mimalloc tracker_full_idle_mimalloc tracker_full_mimalloc system_fp tracker_fp"}
# Exact mode runs about 75 times the instructions of System: left out of the
# callgrind rows by default (CG_VARIANTS="... tracker_exact" puts it back).
CG_VARIANTS=${CG_VARIANTS:-$(printf '%s\n' $VARIANTS | grep -vx tracker_exact | tr '\n' ' ')}
PORT=${PORT:-18480}

echo "building (release, the README's profile, no frame-pointer flag)..." >&2
declare -A BIN
builds=()
# A variant's binary: `*_idle*` rows run the binary of the same name without
# asking the endpoint; `*_fp` rows run binaries of the frame-pointer build
# (keys `fp:svc_*`).
bin_of() {
    case $1 in
        load) echo svc_load ;;
        system_fp) echo fp:svc_system ;;
        tracker_fp) echo fp:svc_tracker_fp ;;
        *) echo "svc_${1/_idle/}" ;;
    esac
}
build() { # prefix rustflags target-dir binaries...
    local prefix=$1 flags=$2 dir=$3
    shift 3
    local args=() b
    for b in "$@"; do args+=(--bench "$b"); done
    while IFS= read -r exe; do
        name=$(basename "$exe")
        BIN[$prefix${name%-*}]=$exe
    done < <(RUSTFLAGS="$flags" cargo build --release --features http --target-dir "$dir" \
        "${args[@]}" --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*/svc_[^"]*"' | sed 's/.*"executable":"//; s/"$//')
}
plain=() fp=()
for v in $VARIANTS load; do
    b=$(bin_of "$v")
    case $b in fp:*) fp+=("${b#fp:}") ;; *) plain+=("$b") ;; esac
done
build "" "" target/service "${plain[@]}"
if [ ${#fp[@]} -gt 0 ]; then
    build fp: "-C force-frame-pointers=yes" target/service-fp "${fp[@]}"
fi
for v in $VARIANTS load; do
    [ -n "${BIN[$(bin_of "$v")]:-}" ] || { echo "no binary for $(bin_of "$v")" >&2; exit 1; }
done

tmp=$(mktemp -d)
service_pid=""
cleanup() {
    if [ -n "$service_pid" ]; then kill "$service_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

wait_listening() { # file pid
    for _ in $(seq 600); do
        grep -q '^listening' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "the service exited before listening" >&2; return 1; }
        sleep 0.1
    done
    echo "the service did not start listening within 60 s" >&2
    return 1
}

ask_url() { # variant admin_port
    case $1 in *idle*) echo - ;; *full*) echo "http://127.0.0.1:$2/debug/pprof/heap" ;; *) echo - ;; esac
}

# run VARIANT -> appends "rps cpu_us_per_request rss_kib" to $tmp/VARIANT
run() {
    local v=$1 port=$PORT admin=$((PORT + 1))
    PORT=$((PORT + 2))
    # A fresh file per run: the shell opens it in the background child, after
    # wait_listening may already have looked, so an old one could still say
    # "listening".
    rm -f "$tmp/out"
    "${BIN[$(bin_of "$v")]}" "$port" "$admin" > "$tmp/out" &
    service_pid=$!
    wait_listening "$tmp/out" "$service_pid"
    local load
    load=$(timeout 300 "${BIN[svc_load]}" "$port" "$CONNECTIONS" "$REQUESTS" "$(ask_url "$v" "$admin")" "$WARMUP")
    wait "$service_pid"
    service_pid=""
    local line
    line=$(grep '^served=' "$tmp/out")
    awk -v load="$load" -v line="$line" 'BEGIN {
        split(load, a, /[ =]/); split(line, b, /[ =]/)
        # a: requests N seconds S; b: served N user_us U sys_us S rss_kib R maxrss_kib M
        printf "%.1f %.3f %d\n", a[2] / a[4], (b[4] + b[6]) / b[2], b[8]
    }' >> "$tmp/$v"
}

median() { # column number; reads numbers from stdin
    awk -v c="$1" '{print $c}' | LC_ALL=C sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

baseline_of() {
    case $1 in *mimalloc) echo mimalloc ;; *_fp) echo system_fp ;; *) echo system ;; esac
}

if [ "$WALL" = 1 ]; then
    for r in $(seq "$ROUNDS"); do
        echo "  round $r/$ROUNDS" >&2
        # Every other round in reverse order, so no variant always runs right
        # after the same neighbour.
        order=$VARIANTS
        if [ $((r % 2)) = 0 ]; then order=$(printf '%s\n' $VARIANTS | tac); fi
        for v in $order; do run "$v"; done
    done
    echo
    echo "Service benchmark: $REQUESTS requests ($WARMUP warm-up) on $CONNECTIONS keep-alive"
    echo "connections, medians of $ROUNDS interleaved rounds. Ratios to System (mimalloc rows: to"
    echo "mimalloc alone); \"paired\" is the median of the per-round ratios."
    echo
    echo "| variant | req/s | ratio | paired | CPU/request (us) | ratio | paired | RSS after (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for v in $VARIANTS; do
        b=$(baseline_of "$v")
        rps=$(median 1 < "$tmp/$v"); cpu=$(median 2 < "$tmp/$v"); rss=$(median 3 < "$tmp/$v")
        brps=$(median 1 < "$tmp/$b"); bcpu=$(median 2 < "$tmp/$b")
        prps=$(paste "$tmp/$v" "$tmp/$b" | awk '{ print $1 / $4 }' | median 1)
        pcpu=$(paste "$tmp/$v" "$tmp/$b" | awk '{ print $2 / $5 }' | median 1)
        awk -v v="$v" -v rps="$rps" -v cpu="$cpu" -v rss="$rss" -v brps="$brps" -v bcpu="$bcpu" \
            -v prps="$prps" -v pcpu="$pcpu" 'BEGIN {
            printf "| %s | %.0f | %.3fx | %.3fx | %.2f | %.3fx | %.3fx | %.1f |\n",
                v, rps, rps / brps, prps, cpu, cpu / bcpu, pcpu, rss / 1024 }'
    done
fi

if [ "$CALLGRIND" = 1 ]; then
    command -v valgrind > /dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
    declare -A IR=()
    for r in $(seq "$CG_ROUNDS"); do
        for v in $CG_VARIANTS; do
            echo "  callgrind $v $r/$CG_ROUNDS" >&2
            port=$PORT admin=$((PORT + 1))
            PORT=$((PORT + 2))
            rm -f "$tmp/out"
            valgrind --tool=callgrind --callgrind-out-file=/dev/null "${BIN[$(bin_of "$v")]}" "$port" "$admin" \
                > "$tmp/out" 2> "$tmp/cg" &
            service_pid=$!
            wait_listening "$tmp/out" "$service_pid"
            SVC_CALLGRIND_PID=$service_pid timeout 600 "${BIN[svc_load]}" "$port" "$CONNECTIONS" \
                "$CG_REQUESTS" "$(ask_url "$v" "$admin")" "$WARMUP" > /dev/null
            wait "$service_pid"
            service_pid=""
            sed -n 's/.*Collected : *//p' "$tmp/cg" >> "$tmp/cg.$v"
        done
    done
    echo
    echo "Instructions per request (callgrind, the service process alone, $CG_REQUESTS requests"
    echo "after $WARMUP warm-up, counters zeroed between; median of $CG_ROUNDS runs)."
    echo
    echo "| variant | instructions/request | ratio |"
    echo "|---|---:|---:|"
    for v in $CG_VARIANTS; do
        IR[$v]=$(median 1 < "$tmp/cg.$v")
    done
    for v in $CG_VARIANTS; do
        b=$(baseline_of "$v")
        awk -v v="$v" -v i="${IR[$v]}" -v b="${IR[$b]}" -v n="$CG_REQUESTS" \
            'BEGIN { printf "| %s | %.0f | %.4fx |\n", v, i / n, i / b }'
    done
fi
