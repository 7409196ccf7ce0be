//! The tracker's monotonic clock: microseconds since the first recorded event
//! (or first query). Read only on recorded paths and at query time.
//!
//! Births of recorded blocks are read on every recorded event, so in exact
//! mode the clock is a visible part of the cost: a precise
//! `CLOCK_MONOTONIC` read through `Instant` measured ~25-30 ns on our VMs, the
//! kernel's tick-granular `CLOCK_MONOTONIC_COARSE` ~4 ns. [`birth_us`] uses
//! the coarse clock but stays exact where precision matters: ordering births
//! against query times ([`now_us`], used by snapshots and leak checks).
//!
//! **Invariant (ordering):** a block allocated after a call to [`now_us`]
//! that returned `q` gets a birth `>= q`; a block allocated before it gets a
//! birth `<=` the precise time of its allocation. The coarse clock never runs
//! ahead of the precise one (it is the precise clock's value at the last
//! tick), so the only risk is a coarse birth below `q` for a block allocated
//! after the query within the same tick: [`birth_us`] detects it (the coarse
//! value is not above the last query time) and reads the precise clock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use once_cell::sync::OnceCell;

/// The epoch as an `Instant` and, where the raw clocks are used, as
/// nanoseconds of `CLOCK_MONOTONIC` (the clock `Instant` reads on Linux).
struct Epoch {
    instant: Instant,
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    raw_ns: u64,
}

static EPOCH: OnceCell<Epoch> = OnceCell::new();

/// The latest value [`now_us`] returned; see the module invariant. Written
/// only by queries, so recorded events only read it.
static LAST_QUERY_US: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
fn epoch() -> &'static Epoch {
    EPOCH.get_or_init(|| Epoch {
        instant: Instant::now(),
        raw_ns: raw::precise_ns(),
    })
}

/// Sets the epoch if it is not set yet (before a fork, so that no thread is
/// inside its initialiser when the child is made).
pub(crate) fn init() {
    let _ = epoch();
}

/// Microseconds since the epoch, precise. For queries (snapshots, leak
/// checks); recorded births use [`birth_us`].
pub(crate) fn now_us() -> u64 {
    let us = precise_us();
    LAST_QUERY_US.fetch_max(us, Relaxed);
    us
}

fn precise_us() -> u64 {
    let e = epoch();
    if cfg!(any(target_os = "linux", target_os = "android")) {
        raw::precise_ns().saturating_sub(e.raw_ns) / 1000
    } else {
        e.instant.elapsed().as_micros() as u64
    }
}

/// The birth time of a block recorded now: the coarse clock, or the precise
/// one within a tick of a query (see the module docs).
#[inline(always)]
pub(crate) fn birth_us() -> u64 {
    let e = epoch();
    match raw::coarse_ns() {
        Some(ns) => {
            let us = ns.saturating_sub(e.raw_ns) / 1000;
            if us > LAST_QUERY_US.load(Relaxed) {
                us
            } else {
                precise_us()
            }
        }
        None => precise_us(),
    }
}

/// The instant that `us` microseconds after the epoch stands for.
pub(crate) fn instant_of(us: u64) -> Instant {
    epoch().instant + Duration::from_micros(us)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod raw {
    #[inline(always)]
    fn read(clock: libc::clockid_t) -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call has no other
        // effect (on Linux it is a vDSO read, no system call, no allocation).
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        (rc == 0).then(|| {
            (ts.tv_sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(ts.tv_nsec as u64)
        })
    }

    pub(super) fn precise_ns() -> u64 {
        read(libc::CLOCK_MONOTONIC).unwrap_or(0)
    }

    #[inline]
    pub(super) fn coarse_ns() -> Option<u64> {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod raw {
    pub(super) fn precise_ns() -> u64 {
        0
    }

    #[inline]
    pub(super) fn coarse_ns() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn births_after_a_query_are_not_before_it() {
        for _ in 0..10_000 {
            let q = now_us();
            assert!(birth_us() >= q);
        }
    }

    #[test]
    fn births_before_a_later_query_are_before_it() {
        for _ in 0..1000 {
            let b = birth_us();
            let mut q = now_us();
            while q == b {
                q = now_us();
            }
            assert!(b < q);
        }
    }
}
