//! Leak detection: the growth monitor (a background thread that judges
//! per-site series of live bytes) and the leak checks for tests.

mod leakcheck;
mod monitor;
mod suspect;
mod trend;
mod window;

pub use leakcheck::{LeakCheck, assert_no_leaks};
pub use monitor::{Monitor, MonitorConfig};
pub use suspect::{SiteHistory, Suspect};
