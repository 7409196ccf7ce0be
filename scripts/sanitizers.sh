#!/usr/bin/env bash
# The slow checks that stay out of scripts/test.sh: AddressSanitizer over the
# core tests and the main example, ThreadSanitizer over the threaded tests,
# and the loom models of the recorder's concurrency protocols.
#
#   scripts/sanitizers.sh            # all three
#   CHECKS="asan" scripts/sanitizers.sh
#   CHECKS="tsan loom" scripts/sanitizers.sh
#
# The stable toolchain ships the sanitizer runtimes; `-Zsanitizer` is an
# unstable flag, hence RUSTC_BOOTSTRAP=1 (only for these builds, in their own
# target directories, so the ordinary build cache is left alone). The
# standard library is the precompiled, uninstrumented one: ASan needs
# nothing more (it checks the accesses of the code it instruments); TSan
# needs `-Cunsafe-allow-abi-mismatch=sanitizer` to link against it, and
# cannot see std's own synchronisation, hence scripts/tsan.supp (std
# internals only, each entry explained there).
#
# Each check prints its wall time (figures in RELIABILITY.md).
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKS=${CHECKS:-"asan tsan loom"}
TARGET=x86_64-unknown-linux-gnu
# Frame pointers as in .cargo/config.toml (a RUSTFLAGS variable replaces it).
FP="-C force-frame-pointers=yes"

timed() { # timed NAME COMMAND...
    local start=$SECONDS
    "${@:2}"
    echo "== $1: passed in $((SECONDS - start)) s"
}

asan() {
    # `leakscope_asan`: the free path's recognition load asks ASan's shadow
    # memory and then reads with an instrumented load instead of an `asm!`
    # block ASan cannot see (src/recorder/header.rs, `word_below`).
    # detect_leaks=0: the tracker's books and site table are leaked on
    # purpose (they live as long as the process), and so are the tests'
    # deliberate leaks.
    export RUSTFLAGS="-Zsanitizer=address --cfg leakscope_asan $FP"
    # allocator_may_return_null=1: an allocation ASan cannot satisfy returns
    # null, as the system allocator does (tests/recorder_oom.rs needs that).
    local opts="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1"
    export ASAN_OPTIONS="$opts"
    local dir=target/sanitizers/asan
    # Left out by name:
    # - tests/max_sites.rs measures the process's RSS growth, which ASan's
    #   quarantine (freed memory kept poisoned, not returned) and shadow
    #   memory change by design;
    # - tests/frame_pointers.rs checks frame-pointer stacks against the
    #   frame layout of uninstrumented code: ASan's instrumented frames
    #   (redzones, fake stacks) are laid out differently.
    # - the http_*/exports tests drive Go, Prometheus and Chromium; their
    #   allocation paths are the ones covered here.
    # - tests/recorder_oom.rs's out-of-memory test exhausts the address
    #   space under RLIMIT_AS, which ASan's allocator (its heap reserved up
    #   front) does not run into; the same binary's corruption test runs.
    cargo test --target "$TARGET" --target-dir "$dir" \
        --lib \
        --test core_exact --test core_inner --test core_oracle --test core_sampled \
        --test core_threads --test consistency \
        --test model --test leakcheck --test labels --test self_record --test attribution \
        --test recorder_oom \
        -- --skip try_reserve_at_new_stacks_fails_with_err_not_an_abort
    # The fork tests (threads allocating and freeing while another forks;
    # each child frees), without ASan's quarantine: quarantine_size_mb=0.
    # ASan's own fork handler locks its allocator, thread registry and
    # stack depot, but not its quarantine's global lock (`cache_mutex_` in
    # sanitizer_common's Quarantine, taken by `Drain` when a thread's local
    # quarantine overflows and by `Recycle`). A parent thread inside that
    # lock at the fork leaves it held in the child for ever, and the
    # child's next free that overflows its local quarantine spins in
    # `Quarantine::Drain` (gdb: internal_sched_yield <- LockSlow <- Drain
    # <- Put <- asan_realloc: the child waits on ASan's lock, not ours).
    # It is ASan's, not leakscope's: a plain Rust program without leakscope
    # (scripts/asan_fork_repro.rs), three threads freeing while the main one
    # forks, hangs the same way (4 of 800 children; 0 of 10000 with
    # quarantine_size_mb=0; figures in RELIABILITY.md). Without a quarantine `free` recycles at once and
    # never takes that lock; ASan still checks every access against
    # redzones and freed-chunk state, it only stops holding freed memory
    # back (use-after-free of memory already reused goes unseen here; the
    # tests above keep the quarantine).
    # LEAKSCOPE_FORK_DEADLINE_SECS: an instrumented debug child on a loaded
    # machine gets 30 s instead of 5 (they take under a second; a deadlocked
    # child stays hung however long it is given).
    ASAN_OPTIONS="$opts:quarantine_size_mb=0" LEAKSCOPE_FORK_DEADLINE_SECS=30 \
        cargo test --target "$TARGET" --target-dir "$dir" \
        --test fork_exact --test fork_sampled --test fork_first_report
    # The README's main example, checked as scripts/test.sh checks it (in
    # the dev profile, already built above: an ASan release build of every
    # dependency would add minutes for the same check).
    local out top
    out=$(cargo run --target "$TARGET" --target-dir "$dir" --example global_slice_leak)
    top=$(printf '%s\n' "$out" | grep -A1 'live change' | tail -n 1)
    case "$top" in
        *global_slice_leak::generate_string*) echo "global_slice_leak under ASan: $top" ;;
        *) echo "FAIL: global_slice_leak under ASan: top site is not generate_string" >&2
           printf '%s\n' "$out" >&2; return 1 ;;
    esac
    unset RUSTFLAGS ASAN_OPTIONS
}

tsan() {
    export RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer $FP"
    export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp halt_on_error=1 report_signal_unsafe=0"
    # The threaded tests, release-built (TSan's runtime cost times a debug
    # build's is too slow for the stress tests). The fork tests are left
    # out: TSan does not support a multi-threaded process forking and then
    # starting threads in the child, which is what they test.
    cargo test --target "$TARGET" --target-dir target/sanitizers/tsan --release \
        --test core_threads --test consistency -- --test-threads=1
    unset RUSTFLAGS TSAN_OPTIONS
}

loom() {
    # The recorder's protocols, model-checked (src/recorder/sync/loom_*.rs):
    # test names contain `loom`.
    RUSTFLAGS="--cfg loom $FP" LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3} \
        cargo test --target-dir target/loom --release --lib loom
}

export RUSTC_BOOTSTRAP=1
for check in $CHECKS; do
    case "$check" in
        asan) timed ASan asan ;;
        tsan) timed TSan tsan ;;
        loom) (unset RUSTC_BOOTSTRAP; timed loom loom) ;;
        *) echo "unknown check $check (asan, tsan, loom)" >&2; exit 2 ;;
    esac
done
