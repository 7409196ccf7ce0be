//! [`MonitorStatus`]: whether the monitor has judged anything yet, and how
//! far back it looks.

use std::fmt;
use std::time::Duration;

/// What a [`Monitor`](super::Monitor) can say right now, from
/// [`Monitor::status`](super::Monitor::status): before its first verdict an
/// empty suspect list means "not judged yet", not "no leak".
///
/// `Display` prints one line: `not judged yet: first verdict in 40 s`, or
/// `judged over the last 5 min: 2 leak suspects` (or `no leak suspects`).
///
/// # Examples
///
/// ```
/// let monitor = leakscope::Monitor::start(Default::default())?;
/// let status = monitor.status();
/// if !status.judged() {
///     println!("{status}"); // not judged yet: first verdict in 40 s
/// }
/// # Ok::<(), leakscope::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MonitorStatus {
    pub(super) first_verdict_in: Option<Duration>,
    pub(super) horizon: Duration,
    pub(super) suspects: usize,
}

impl MonitorStatus {
    /// Whether the monitor has given a first verdict (its finest level has
    /// enough points).
    pub fn judged(&self) -> bool {
        self.first_verdict_in.is_none()
    }

    /// Time left until the first verdict, `None` once judged. May be zero
    /// when the first verdict is due (the next summary gives it).
    pub fn first_verdict_in(&self) -> Option<Duration> {
        self.first_verdict_in
    }

    /// How far back the judged history reaches: the span of the coarsest
    /// level judged so far (zero before the first verdict).
    pub fn horizon(&self) -> Duration {
        self.horizon
    }

    /// The number of current suspects (0 before the first verdict).
    pub fn suspects(&self) -> usize {
        self.suspects
    }
}

/// `40 s`, `5 min`, `2.5 h`, `3.1 d`: a span for people.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 120.0 {
        format!("{:.0} s", s.ceil())
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 2.0 * 86400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

impl fmt::Display for MonitorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(left) = self.first_verdict_in {
            return write!(
                f,
                "not judged yet: first verdict in {}",
                human_duration(left)
            );
        }
        write!(f, "judged over the last {}: ", human_duration(self.horizon))?;
        match self.suspects {
            0 => write!(f, "no leak suspects"),
            1 => write!(f, "1 leak suspect"),
            n => write!(f, "{n} leak suspects"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = MonitorStatus {
            first_verdict_in: Some(Duration::from_millis(39_200)),
            horizon: Duration::ZERO,
            suspects: 0,
        };
        assert_eq!(s.to_string(), "not judged yet: first verdict in 40 s");
        assert!(!s.judged());
        let s = MonitorStatus {
            first_verdict_in: None,
            horizon: Duration::from_secs(290),
            suspects: 2,
        };
        assert_eq!(s.to_string(), "judged over the last 5 min: 2 leak suspects");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3.0 d");
    }
}
