//! The running monitors, for readers that have no `Monitor` handle: the
//! `/metrics` exposition and the dashboard find the program's monitor here.
//!
//! A monitor registers its shared state when it starts, as a weak reference:
//! the registry never keeps a stopped monitor's window alive, and a dropped
//! `Monitor` needs no unregistering (dead entries are pruned on the next
//! registration). The registry knows monitors only through [`View`], so this
//! file does not import `monitor.rs`, which imports it.

use std::sync::{Mutex, Weak};

use super::status::MonitorStatus;
use super::suspect::{SiteHistory, Suspect};
use crate::recorder::Guard;

/// What a running monitor shows to readers without its handle.
pub(super) trait View: Send + Sync {
    /// As `Monitor::suspects`.
    fn suspects(&self) -> Vec<Suspect>;
    /// As `Monitor::history`.
    fn history(&self) -> Vec<SiteHistory>;
    /// As `Monitor::status`.
    fn status(&self) -> MonitorStatus;
    /// Whether the monitor has been stopped (its thread may still be ending).
    fn stopped(&self) -> bool;
}

/// Oldest first. A plain `Mutex` (const-initialised): taken only at monitor
/// start and by readers at query time, never on the allocation path.
static RUNNING: Mutex<Vec<Weak<dyn View>>> = Mutex::new(Vec::new());

/// Adds a starting monitor. Under the guard: the entry is the tracker's.
pub(super) fn register(view: Weak<dyn View>) {
    Guard::run(|| {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|w| w.strong_count() > 0);
        running.push(view);
    });
}

/// The first-started monitor that is still running, if any. Programs run one
/// monitor; with several, the oldest is the one readers see.
fn first() -> Option<std::sync::Arc<dyn View>> {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running
        .iter()
        .filter_map(Weak::upgrade)
        .find(|v| !v.stopped())
}

/// The suspects of the running monitor; `None` when no monitor runs.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn running_suspects() -> Option<Vec<Suspect>> {
    Guard::run(|| first().map(|v| v.suspects()))
}

/// The history of the running monitor; `None` when no monitor runs.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn running_history() -> Option<Vec<SiteHistory>> {
    Guard::run(|| first().map(|v| v.history()))
}

/// The status of the running monitor; `None` when no monitor runs.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn running_status() -> Option<MonitorStatus> {
    Guard::run(|| first().map(|v| v.status()))
}
