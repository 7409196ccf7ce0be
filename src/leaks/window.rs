//! The monitor's sliding window: per-site series of live bytes, one value per
//! summary, bounded in length, and the suspects and histories read off it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::suspect::{SiteHistory, Suspect};
use super::trend::judge;
use crate::profile::{SiteStack, Summary};
use crate::recorder;

/// The sliding window of summaries.
pub(super) struct Window {
    cap: usize,
    /// Tracker-clock time of each summary, oldest first.
    times: VecDeque<u64>,
    /// Invariant: every series has exactly `times.len()` values, and at
    /// least one of them is non-zero.
    series: HashMap<u32, Series>,
}

struct Series {
    /// Shared by every `Suspect` and `SiteHistory` handed out for this site,
    /// so its stack is symbolized once.
    stack: SiteStack,
    values: VecDeque<u64>,
}

impl Window {
    pub(super) fn new(cap: usize) -> Window {
        Window {
            cap,
            times: VecDeque::new(),
            series: HashMap::new(),
        }
    }

    pub(super) fn push(&mut self, summary: Summary) {
        if self.times.len() == self.cap {
            self.times.pop_front();
            for s in self.series.values_mut() {
                s.values.pop_front();
            }
        }
        self.times.push_back(summary.taken_us);
        for (id, s) in self.series.iter_mut() {
            s.values
                .push_back(summary.live.get(*id as usize).copied().unwrap_or(0));
        }
        let n = self.times.len();
        for (id, (&live, stack)) in summary.live.iter().zip(&summary.stacks).enumerate() {
            if live == 0 {
                continue;
            }
            self.series.entry(id as u32).or_insert_with(|| {
                let mut values = VecDeque::with_capacity(n);
                values.resize(n - 1, 0);
                values.push_back(live);
                Series {
                    stack: stack.clone(),
                    values,
                }
            });
        }
        self.series.retain(|_, s| s.values.iter().any(|&v| v > 0));
    }

    pub(super) fn suspects(&self, min_growth_bytes: u64) -> Vec<Suspect> {
        // A full window only (see the rule on `Monitor`); `cap >= 3`.
        if self.times.len() < self.cap.max(3) {
            return Vec::new();
        }
        let t0 = self.times[0];
        let secs: Vec<f64> = self
            .times
            .iter()
            .map(|&t| t.saturating_sub(t0) as f64 / 1e6)
            .collect();
        let span = Duration::from_micros(self.times[self.times.len() - 1].saturating_sub(t0));
        let mut values = Vec::with_capacity(self.times.len());
        let mut out: Vec<Suspect> = self
            .series
            .iter()
            .filter_map(|(&id, s)| {
                values.clear();
                values.extend(s.values.iter().copied());
                let v = judge(&secs, &values, min_growth_bytes)?;
                Some(Suspect {
                    id,
                    stack: s.stack.clone(),
                    growth_bytes: v.growth_bytes,
                    growth_rate: v.rate,
                    live_bytes: values[values.len() - 1],
                    score: v.score,
                    span,
                    holder: None,
                })
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out
    }

    pub(super) fn history(&self) -> Vec<SiteHistory> {
        let at: Vec<Instant> = self
            .times
            .iter()
            .map(|&t| recorder::instant_of(t))
            .collect();
        let mut out: Vec<SiteHistory> = self
            .series
            .iter()
            .map(|(&id, s)| SiteHistory {
                id,
                stack: s.stack.clone(),
                points: at.iter().copied().zip(s.values.iter().copied()).collect(),
            })
            .collect();
        out.sort_by(|a, b| b.live_bytes().cmp(&a.live_bytes()).then(a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn window_keeps_aligned_bounded_series() {
        let mut w = Window::new(3);
        let stack: Arc<[usize]> = Arc::from(&[1usize, 2][..]);
        let summary = |t: u64, live: Vec<u64>| Summary {
            taken_us: t,
            stacks: vec![SiteStack::new(stack.clone()); live.len()],
            live,
        };
        w.push(summary(0, vec![0, 5]));
        w.push(summary(10, vec![7, 5]));
        let h = w.history();
        assert_eq!(h.len(), 2);
        let site0 = h.iter().find(|s| s.id() == 0).unwrap();
        assert_eq!(
            site0.points().iter().map(|p| p.1).collect::<Vec<_>>(),
            [0, 7]
        );
        w.push(summary(20, vec![0, 0]));
        w.push(summary(30, vec![0, 0]));
        // The window holds t = 10, 20, 30: site 1's 5 at t = 10 is still in.
        assert_eq!(w.history().len(), 2);
        w.push(summary(40, vec![3, 0]));
        // Now site 1 has been zero for the whole window and is forgotten.
        let h = w.history();
        assert_eq!(h.iter().map(|s| s.id()).collect::<Vec<_>>(), [0]);
        assert_eq!(
            h[0].points().iter().map(|p| p.1).collect::<Vec<_>>(),
            [0, 0, 3]
        );
        for t in [50, 60, 70] {
            w.push(summary(t, vec![0, 0]));
        }
        assert!(w.history().is_empty());
        assert_eq!(w.times.len(), 3);
    }

    #[test]
    fn verdicts_wait_for_a_full_window() {
        let mut w = Window::new(4);
        let stack: Arc<[usize]> = Arc::from(&[1usize][..]);
        for i in 0..4u64 {
            assert!(w.suspects(MIB).is_empty(), "judged after {i} summaries");
            w.push(Summary {
                taken_us: i * 1_000_000,
                stacks: vec![SiteStack::new(stack.clone())],
                live: vec![i * MIB],
            });
        }
        let s = w.suspects(MIB);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].id(), s[0].growth_bytes(), s[0].live_bytes()),
            (0, 3 * MIB as i64, 3 * MIB)
        );
        assert_eq!(s[0].span(), Duration::from_secs(3));
        assert!((s[0].growth_rate() - MIB as f64).abs() < 1.0);
    }
}
