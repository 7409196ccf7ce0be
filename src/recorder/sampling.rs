//! The Poisson sampler: a per-thread countdown of allocated bytes with
//! exponentially distributed draws (mean = the sample interval R), as Go's
//! `MemProfileRate` and jemalloc's `lg_prof_sample`, and the weight that makes
//! per-site estimates unbiased.
//!
//! A byte-level Poisson process of rate 1/R samples an allocation of `s` bytes
//! with probability `1 - exp(-s/R)`; counting each sampled block
//! `1 / (1 - exp(-s/R))` times makes the expected estimate equal the truth.
//! R = 1 is special: every allocation is recorded with weight exactly 1.
//!
//! The common path ([`tick`]) is integer-only: one thread-local subtraction
//! and one compare; it reads no global at all. Floating point and `ln`/`exp`
//! run only on the sampled path.
//!
//! An interval change reaches the other threads through `registry`: every
//! thread that has been through the slow path is registered there, and
//! [`set_sample_interval`] zeroes each one's countdown, so each thread takes
//! the slow path at its next allocation, sees the new generation and redraws.

#[cfg(any(test, miri, not(target_arch = "x86_64")))]
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicU64, Ordering::*, fence};

use super::fork;
use super::guard::{STATE, ThreadState};
use super::registry;
use crate::Error;

/// The default mean distance between samples: 512 KiB, as Go and jemalloc.
pub const DEFAULT_SAMPLE_INTERVAL: u64 = 512 * 1024;

/// The run-time override set by [`set_sample_interval`]; 0 while there is
/// none, and then each tracker samples at its own configured interval (so
/// several `Tracker` statics with different intervals can coexist, as the
/// benchmarks need). Written only by [`set_sample_interval`], so the line
/// stays in every core's cache.
static INTERVAL: AtomicU64 = AtomicU64::new(0);

/// The configured interval of the first tracker that made a sampling
/// decision: what snapshots report when there is no override.
static CONFIGURED: AtomicU64 = AtomicU64::new(0);

/// Bumped on every interval change so each thread redraws its countdown
/// instead of running out a countdown drawn under the old interval. Read on
/// the slow path only.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Changes the sample interval for allocations made from now on, on every
/// thread (and for every tracker, overriding the interval it was built with).
///
/// Blocks recorded earlier keep the weight they were recorded with, so they
/// are released correctly whatever the interval is when they are freed.
/// `1` records every allocation (exact mode).
///
/// The change applies at once on the calling thread and from the next
/// allocation on every other thread. (One exception, rare enough to ignore
/// in practice: a thread whose countdown update, a load and a store, straddles
/// the moment of the change keeps the old interval until its next sample.)
/// It takes a lock and touches every thread that has
/// allocated; call it when the mode changes, not per request.
///
/// # Errors
///
/// [`Error::InvalidSampleInterval`] for `0`.
///
/// # Examples
///
/// ```
/// leakscope::set_sample_interval(1).unwrap(); // exact from here on
/// assert!(leakscope::set_sample_interval(0).is_err());
/// leakscope::set_sample_interval(512 * 1024).unwrap();
/// ```
pub fn set_sample_interval(bytes: u64) -> Result<(), Error> {
    if bytes == 0 {
        return Err(Error::InvalidSampleInterval);
    }
    registry::with_threads(|threads| {
        INTERVAL.store(bytes, Relaxed);
        // Release: a thread that sees the new generation sees the new
        // interval.
        let generation = GENERATION.fetch_add(1, Release) + 1;
        // Orders the new generation before the zeroing stores below; `decide`
        // re-reads the generation after storing a countdown, with a fence of
        // its own, so either it sees the change or its countdown gets zeroed.
        fence(SeqCst);
        let _ = STATE.try_with(|s| s.remote.countdown.store(0, Relaxed));
        for r in threads.iter() {
            r.countdown.store(0, Relaxed);
        }
        // The owner's fast path updates its countdown with a load and a
        // store (one non-locked `sub` on x86-64), so a zero that landed
        // between the two is lost. One more pass catches a thread that has
        // neither redrawn yet nor kept the zero. (A thread whose update
        // straddles both passes keeps its old countdown until it runs out:
        // it picks the change up at its next sample instead.)
        for r in threads.iter() {
            if r.generation.load(Relaxed) != generation && r.countdown.load(Relaxed) > 0 {
                r.countdown.store(0, Relaxed);
            }
        }
    });
    Ok(())
}

/// The interval in force (the override, else the installed tracker's, else
/// the default when no tracker has run yet).
pub(crate) fn current_interval() -> u64 {
    match (INTERVAL.load(Relaxed), CONFIGURED.load(Relaxed)) {
        (0, 0) => DEFAULT_SAMPLE_INTERVAL,
        (0, c) => c,
        (r, _) => r,
    }
}

/// Remembers the first configured interval seen, for [`current_interval`].
#[inline(always)]
fn note_configured(configured: u64) {
    if CONFIGURED.load(Relaxed) == 0 {
        note_configured_slow(configured);
    }
}

#[cold]
#[inline(never)]
fn note_configured_slow(configured: u64) {
    let _ = CONFIGURED.compare_exchange(0, configured.max(1), Relaxed, Relaxed);
}

/// Subtracts `size` from this thread's countdown. Returns true when the
/// allocation must take the slow path (maybe sampled, or the interval
/// changed, which zeroes the countdown); false is the common "not sampled"
/// answer.
#[inline(always)]
pub(crate) fn tick(size: usize) -> bool {
    let Ok(countdown) = STATE.try_with(|s| s.remote.countdown.as_ptr()) else {
        return false;
    };
    // SAFETY: `countdown` points into this thread's `ThreadState`, which
    // lives as long as the thread. See `sub_and_test` for the memory model.
    unsafe { sub_and_test(countdown, size) }
}

/// `*countdown -= size; *countdown <= 0`, as one memory-operand `sub` and a
/// branch on its flags.
///
/// Why assembly: the countdown is an `AtomicI64` (so `set_sample_interval`
/// may zero it from another thread), and the compiler never folds an atomic
/// load and store into one read-modify-write instruction. As a load, a
/// subtraction, a store and a test, the countdown cost five instructions and
/// a register that allocation-heavy loops did not have to spare: on the
/// two-thread box churn the loop spilled and reloaded five more values per
/// iteration. This form costs three instructions (`mov` of the size, `sub`,
/// `jle`) and no extra register. Measured with callgrind, two-thread churn:
/// +6.7% -> +3.0% instructions over `System` for the common path alone.
///
/// Memory model: the `sub` is a load and a store of one aligned 8-byte word,
/// each single-copy atomic on x86-64, not a locked read-modify-write: exactly
/// the relaxed load and relaxed store of the portable version below, and it
/// races with a remote zeroing in the same benign way (a zero that lands
/// between the two is lost; `set_sample_interval` handles that).
///
/// `jle` tests the signed comparison `before <= size`, which equals
/// `before - size <= 0` because the subtraction cannot overflow: a countdown
/// is only ever set to 0 or a draw in `1..=i64::MAX / 4`, it is redrawn each
/// time a subtraction takes it to 0 or below, and `size <= isize::MAX`.
///
/// # Safety
/// `countdown` must be valid for reads and writes and 8-byte aligned.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
unsafe fn sub_and_test(countdown: *mut i64, size: usize) -> bool {
    // SAFETY: the caller guarantees the pointer; the block touches only
    // `*countdown` and the flags, and does not use the stack.
    unsafe {
        std::arch::asm!(
            "sub qword ptr [{countdown}], {size}",
            "jle {slow}",
            countdown = in(reg) countdown,
            size = in(reg) size,
            slow = label { return true; },
            options(nostack),
        );
    }
    false
}

#[cfg(any(miri, not(target_arch = "x86_64")))]
use sub_and_test_portable as sub_and_test;

/// The portable version (also under Miri, which cannot run `asm!`): relaxed
/// load and store, plain moves.
///
/// # Safety
/// As the x86-64 version.
#[cfg(any(test, miri, not(target_arch = "x86_64")))]
#[inline(always)]
unsafe fn sub_and_test_portable(countdown: *mut i64, size: usize) -> bool {
    // SAFETY: the caller guarantees the pointer, and `AtomicI64` has the same
    // layout as `i64`.
    let countdown = unsafe { AtomicI64::from_ptr(countdown) };
    let left = countdown.load(Relaxed).wrapping_sub(size as i64);
    countdown.store(left, Relaxed);
    left <= 0
}

/// The decision of a tracker configured with `sample_interval(1)`: record
/// (weight 1) unless [`set_sample_interval`] overrode the interval. Skips the
/// countdown entirely, so an exact tracker never runs out a countdown drawn
/// for another interval (or by another tracker).
#[inline(always)]
pub(crate) fn decide_exact(size: usize) -> Option<f32> {
    match INTERVAL.load(Relaxed) {
        0 | 1 => {
            note_configured(1);
            Some(1.0)
        }
        _ if tick(size) => decide(size, 1),
        _ => None,
    }
}

/// The slow half of [`tick`]: decides whether this allocation is sampled and
/// returns its weight if so, redrawing the countdown as needed.
/// `configured` is the calling tracker's own interval, used unless
/// [`set_sample_interval`] overrode it. (Two sampling trackers with different
/// intervals used on one thread share its countdown; each sample still
/// carries the weight of the interval it was drawn under, up to that draw.)
#[cold]
#[inline(never)]
pub(crate) fn decide(size: usize, configured: u64) -> Option<f32> {
    note_configured(configured);
    // Acquire: pairs with `set_sample_interval`, so the interval read next
    // is at least as new as this generation.
    let generation = GENERATION.load(Acquire);
    let interval = match INTERVAL.load(Relaxed) {
        0 => configured.max(1),
        r => r,
    };
    STATE
        .try_with(|s| {
            let verdict = decide_in(s, size, interval, generation);
            // An interval change that began after our load of the generation
            // may have zeroed the countdown before we stored ours: look
            // again, after a fence that pairs with `set_sample_interval`'s,
            // and leave a zero so the next allocation redraws.
            fence(SeqCst);
            if GENERATION.load(Relaxed) != generation {
                s.remote.countdown.store(0, Relaxed);
            }
            if s.registered.get() == 0 {
                // After the decision: registering allocates, and that nested
                // allocation runs this function too (then with the guard held).
                // The fork handlers first: the registry lock is a tracker lock.
                fork::install();
                registry::register(s);
                if s.registered.get() == 0 {
                    // Deferred (inside tracker code): until this thread is
                    // registered, no interval change could reach it, so keep
                    // sending it here; a zeroed countdown is redrawn, not
                    // sampled.
                    s.remote.countdown.store(0, Relaxed);
                }
            }
            verdict
        })
        .ok()
        .flatten()
}

/// The decision proper, on this thread's state.
#[inline(always)]
fn decide_in(s: &ThreadState, size: usize, interval: u64, generation: u64) -> Option<f32> {
    let new_generation = s.remote.generation.load(Relaxed) != generation;
    if new_generation {
        s.remote.generation.store(generation, Relaxed);
    }
    if interval == 1 {
        // Exact mode: keep the countdown at zero so every allocation comes
        // here.
        s.remote.countdown.store(0, Relaxed);
        return Some(1.0);
    }
    let mut left = s.remote.countdown.load(Relaxed);
    // A countdown that was exactly 0 before this allocation was zeroed (by
    // `set_sample_interval`, or while this thread waits to be registered),
    // since draws are at least 1: redraw rather than sample, even if this
    // thread already redrew under the new generation before the zero landed.
    let zeroed = left.wrapping_add(size as i64) == 0;
    if new_generation || zeroed {
        // The countdown was drawn under another interval: redraw, and let
        // this allocation take its chance under the new one.
        left = draw(s, interval).wrapping_sub(size as i64);
    }
    if left > 0 {
        s.remote.countdown.store(left, Relaxed);
        return None;
    }
    // Sampled. By memorylessness the distance from the end of this block to
    // the next sample point is again exponential.
    s.remote.countdown.store(draw(s, interval), Relaxed);
    Some(weight(size, interval))
}

/// The unbiasing weight `1 / (1 - exp(-size/R))` (Go's `scaleHeapSample`);
/// exactly 1 when R = 1.
pub(crate) fn weight(size: usize, interval: u64) -> f32 {
    if interval <= 1 {
        return 1.0;
    }
    let p = -(-(size as f64) / interval as f64).exp_m1();
    if p <= 0.0 {
        return f32::MAX;
    }
    (1.0 / p).max(1.0) as f32
}

/// An exponential draw with mean `interval`, at least 1.
fn draw(s: &super::guard::ThreadState, interval: u64) -> i64 {
    let mut x = s.rng.get();
    if x == 0 {
        x = seed(s as *const _ as u64);
    }
    // xorshift64*: plenty for sampling, and it never allocates.
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s.rng.set(x);
    let bits = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    // u in (0, 1]: never 0, so ln(u) is finite.
    let u = (bits as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
    let d = -u.ln() * interval as f64;
    (d as i64).clamp(1, i64::MAX / 4)
}

/// A per-thread seed: the thread-local's address (distinct per live thread),
/// a global counter (distinct per thread ever), the address of a static
/// (distinct per process under ASLR) and the time, mixed by splitmix64.
fn seed(thread_addr: u64) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static ANCHOR: u8 = 0;
    let n = COUNTER.fetch_add(1, Relaxed);
    // The wall clock too: addresses repeat from run to run where address
    // randomisation is off, and identical runs would then sample identically.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = thread_addr
        ^ (&ANCHOR as *const u8 as u64).rotate_left(17)
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ now.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 { 0x1234_5678_9ABC_DEF1 } else { z }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_matches_formula() {
        assert_eq!(weight(100, 1), 1.0);
        let w = weight(256, 524_288) as f64;
        let expect = 1.0 / (1.0 - (-(256.0f64) / 524_288.0).exp());
        assert!((w - expect).abs() / expect < 1e-5, "{w} vs {expect}");
        // Blocks much larger than R are always sampled: weight ~1.
        assert!((weight(1 << 30, 524_288) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_countdown_instruction_matches_the_portable_version() {
        let draws = [
            0,
            1,
            2,
            31,
            32,
            33,
            4096,
            524_288,
            i64::MAX / 8,
            i64::MAX / 4,
        ];
        let sizes = [0, 1, 2, 32, 33, 4096, 524_288, 1 << 40, isize::MAX as usize];
        for &before in &draws {
            for &size in &sizes {
                let (mut a, mut b) = (before, before);
                // SAFETY: both point to live, aligned locals.
                let (got, want) = unsafe {
                    (
                        sub_and_test(&mut a, size),
                        sub_and_test_portable(&mut b, size),
                    )
                };
                assert_eq!((got, a), (want, b), "countdown {before}, size {size}");
                assert_eq!(want, before.wrapping_sub(size as i64) <= 0);
            }
        }
    }

    #[test]
    fn zero_interval_is_an_error() {
        assert!(matches!(
            set_sample_interval(0),
            Err(Error::InvalidSampleInterval)
        ));
    }
}
