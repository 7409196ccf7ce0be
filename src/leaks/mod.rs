//! Leak detection: the growth monitor (a background thread that judges
//! per-site series of live bytes) and the leak checks for tests.

mod dump;
mod leakcheck;
mod monitor;
mod running;
mod status;
mod suspect;
mod trend;
mod window;

pub use leakcheck::{LeakCheck, assert_no_leaks};
pub use monitor::{Monitor, MonitorConfig};
pub use status::MonitorStatus;
pub use suspect::{SiteHistory, Suspect};

#[cfg_attr(not(all(feature = "metrics", feature = "http")), allow(unused_imports))]
pub(crate) use running::{running_history, running_status, running_suspects};
