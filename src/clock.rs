//! The tracker's monotonic clock: microseconds since the first recorded event
//! (or first query). Read only on recorded paths and at query time.

use std::time::{Duration, Instant};

use once_cell::sync::OnceCell;

static EPOCH: OnceCell<Instant> = OnceCell::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the epoch.
pub(crate) fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The instant that `us` microseconds after the epoch stands for.
pub(crate) fn instant_of(us: u64) -> Instant {
    epoch() + Duration::from_micros(us)
}
