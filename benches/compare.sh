#!/usr/bin/env bash
# Whole-program comparison of leakscope against System, dhat-rs and mimalloc.
#
# Builds the `wl_*` bench binaries (benches/workloads/: one workload source,
# one binary per global allocator), runs them interleaved (every variant once
# per round, ROUNDS rounds), and prints Markdown tables: median workload time,
# ratio to System (mimalloc variants: to mimalloc alone), median peak RSS
# (from `/usr/bin/time -v`), then callgrind instruction counts for the
# single-threaded workloads at smaller sizes.
#
#   benches/compare.sh                 # everything (takes a while)
#   ROUNDS=3 WORKLOADS="leak threads" benches/compare.sh
#   CALLGRIND=0 benches/compare.sh     # skip the callgrind table
#   WALL=0 benches/compare.sh          # the callgrind table alone
#   QUICK=1 benches/compare.sh         # tiny sizes, to check the script
#   SIZE=20000000 WORKLOADS=threads VARIANTS="wl_system wl_tracker_default" ROUNDS=15 \
#       CALLGRIND=0 benches/compare.sh # one workload, longer, more rounds
#
# Needs GNU time at /usr/bin/time (Debian/Ubuntu: `apt-get install time`) and,
# for the callgrind table, valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
WORKLOADS=${WORKLOADS:-"leak churn threads json"}
CALLGRIND=${CALLGRIND:-1}
WALL=${WALL:-1}
QUICK=${QUICK:-0}
VARIANTS=${VARIANTS:-"wl_system wl_tracker_default wl_tracker_fastpath wl_tracker_exact_fp wl_tracker_exact_bt wl_dhat wl_dhat_full wl_mimalloc wl_tracker_default_mimalloc wl_tracker_exact_fp_mimalloc"}

# The frame-pointer unwinder needs frame pointers in everything it walks.
# .cargo/config.toml sets them, but a RUSTFLAGS variable would replace it.
if [ -n "${RUSTFLAGS:-}" ]; then
    export RUSTFLAGS="$RUSTFLAGS -C force-frame-pointers=yes"
fi

if [ ! -x /usr/bin/time ]; then
    echo "GNU time is missing: install it (apt-get install time)" >&2
    exit 1
fi

# Workload sizes (argument of the binary) for timing and for callgrind.
size() {
    if [ -n "${SIZE:-}" ]; then
        echo "$SIZE"
    elif [ "$QUICK" = 1 ]; then
        case $1 in leak) echo 20000 ;; churn) echo 20000 ;; threads) echo 20000 ;; json) echo 1 ;; esac
    else
        case $1 in leak) echo 1000000 ;; churn) echo 2000000 ;; threads) echo 12000000 ;; json) echo 8 ;; esac
    fi
}
cg_size() {
    case $1 in leak) echo 100000 ;; churn) echo 200000 ;; threads) echo 200000 ;; json) echo 1 ;; esac
}

echo "building (release, frame pointers)..." >&2
declare -A BIN
while IFS= read -r line; do
    exe=${line#*\"executable\":\"}
    exe=${exe%%\"*}
    name=$(basename "$exe")
    name=${name%-*}
    BIN[$name]=$exe
done < <(cargo bench --no-run --message-format=json 2>/dev/null | grep -o '"executable":"[^"]*/wl_[^"]*"')
for v in $VARIANTS; do
    [ -n "${BIN[$v]:-}" ] || { echo "no binary for $v" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run VARIANT WORKLOAD -> appends "ns kb" to $tmp/VARIANT.WORKLOAD
run() {
    local out
    out=$(/usr/bin/time -v -o "$tmp/time" "${BIN[$1]}" "$2" "$(size "$2")" 2>/dev/null)
    local ns kb
    ns=$(printf '%s\n' "$out" | sed -n 's/^workload_ns=//p')
    kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tmp/time")
    echo "$ns $kb" >> "$tmp/$1.$2"
}

median() { # column number; reads numbers from stdin
    awk -v c="$1" '{print $c}' | LC_ALL=C sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

baseline_of() {
    case $1 in *mimalloc) echo wl_mimalloc ;; *) echo wl_system ;; esac
}

if [ "$WALL" = 1 ]; then
    for w in $WORKLOADS; do
        for r in $(seq "$ROUNDS"); do
            echo "  $w round $r/$ROUNDS" >&2
            # Every other round in reverse order, so no variant always runs
            # right after the same neighbour.
            order=$VARIANTS
            if [ $((r % 2)) = 0 ]; then order=$(printf '%s\n' $VARIANTS | tac); fi
            for v in $order; do run "$v" "$w"; done
        done
    done

    echo
    echo "Wall time of the workload (median of $ROUNDS interleaved rounds) and peak RSS"
    echo "(median). Ratios: to wl_system, or to wl_mimalloc for the mimalloc variants;"
    echo "\"ratio\" divides the medians, \"paired\" is the median of the per-round ratios"
    echo "(a variant and its baseline run in the same round, so slow periods of the"
    echo "machine that last longer than a round cancel out)."
    echo
    echo "| workload | variant | time (ms) | ratio | paired | peak RSS (MiB) | RSS ratio |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        for v in $VARIANTS; do
            b=$(baseline_of "$v")
            t=$(median 1 < "$tmp/$v.$w")
            k=$(median 2 < "$tmp/$v.$w")
            bt=$(median 1 < "$tmp/$b.$w")
            bk=$(median 2 < "$tmp/$b.$w")
            p=$(paste "$tmp/$v.$w" "$tmp/$b.$w" | awk '{ print $1 / $3 }' | median 1)
            awk -v w="$w" -v v="${v#wl_}" -v t="$t" -v k="$k" -v bt="$bt" -v bk="$bk" -v p="$p" \
                'BEGIN { printf "| %s | %s | %.1f | %.2fx | %.3fx | %.1f | %.2fx |\n", w, v, t / 1e6, t / bt, p, k / 1024, k / bk }'
        done
    done
fi

if [ "$CALLGRIND" = 1 ] && command -v valgrind > /dev/null; then
    echo
    echo "Instructions (callgrind, whole process) at smaller sizes (leak $(cg_size leak),"
    echo "churn $(cg_size churn), threads $(cg_size threads) per thread, json $(cg_size json) MiB x5;"
    echo "valgrind runs the two threads of \`threads\` one at a time)."
    echo
    echo "| workload | variant | instructions | ratio |"
    echo "|---|---|---:|---:|"
    for w in leak churn threads json; do
        case " $WORKLOADS " in *" $w "*) ;; *) continue ;; esac
        declare -A IR=()
        for v in $VARIANTS; do
            IR[$v]=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "${BIN[$v]}" "$w" "$(cg_size "$w")" 2>&1 >/dev/null |
                sed -n 's/.*Collected : *//p')
        done
        for v in $VARIANTS; do
            b=$(baseline_of "$v")
            awk -v w="$w" -v v="${v#wl_}" -v i="${IR[$v]}" -v b="${IR[$b]}" \
                'BEGIN { printf "| %s | %s | %.1f M | %.3fx |\n", w, v, i / 1e6, i / b }'
        done
    done
fi
