//! The monitor's history: per-site series of live bytes at several
//! resolutions ("levels"), bounded in length, and the suspects and histories
//! read off it.
//!
//! Level 0 keeps one point per summary; level `l` keeps one point every
//! `window^l` summaries (the summary itself, not an average, so a point's
//! churn counters stay exact for the noise model). Each level keeps its last
//! `window` points, so level `l` looks back `(window - 1) x window^l`
//! intervals: at the defaults (10 s x 30) 5 minutes, 2.5 hours, 3 days and 3
//! months. Memory: [`LEVELS`] x `window` points of 24 bytes per site that held
//! live bytes at any retained point (720 points, 17 KiB per site at the
//! defaults), plus one timestamp per point for all sites.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::suspect::{SiteHistory, Suspect};
use super::trend::{Point, judge};
use crate::profile::{SiteStack, Summary};
use crate::recorder;

/// Levels of history kept (see the module docs).
pub(super) const LEVELS: usize = 4;

/// Points a level needs before it is judged, when its window is longer: the
/// finest level gives its first verdict after `MIN_POINTS - 1` intervals (40 s
/// at the defaults), on a partial window.
pub(super) const MIN_POINTS: usize = 5;

/// Points a level of a `window`-point history needs to be judged.
pub(super) fn min_points(window: usize) -> usize {
    window.clamp(3, MIN_POINTS)
}

/// The per-site history at every level.
pub(super) struct Window {
    cap: usize,
    /// Summaries pushed so far.
    pushed: u64,
    /// Sample interval at the latest summary.
    sample_interval: u64,
    /// Tracker-clock time of each point of each level, oldest first.
    times: [VecDeque<u64>; LEVELS],
    /// Invariant: at every level, every series has exactly as many points as
    /// `times` there, and at least one point of some level is non-zero.
    series: HashMap<u32, Series>,
}

struct Series {
    /// Shared by every `Suspect` and `SiteHistory` handed out for this site,
    /// so its stack is symbolized once.
    stack: SiteStack,
    levels: [VecDeque<Point>; LEVELS],
}

impl Window {
    pub(super) fn new(cap: usize) -> Window {
        Window {
            cap,
            pushed: 0,
            sample_interval: 1,
            times: Default::default(),
            series: HashMap::new(),
        }
    }

    /// Whether summary number `k` (from 0) is a point of `level`.
    fn takes(&self, level: usize, k: u64) -> bool {
        match (self.cap as u64).checked_pow(level as u32) {
            Some(every) => k.is_multiple_of(every),
            // Coarser than anything a process lives through: the first only.
            None => k == 0,
        }
    }

    pub(super) fn push(&mut self, summary: Summary) {
        let k = self.pushed;
        self.pushed += 1;
        self.sample_interval = summary.sample_interval;
        let point = |id: usize| Point {
            live: summary.live.get(id).copied().unwrap_or(0),
            churn_bytes: summary.churn_bytes.get(id).copied().unwrap_or(0),
            churn_blocks: summary.churn_blocks.get(id).copied().unwrap_or(0),
        };
        for level in 0..LEVELS {
            if !self.takes(level, k) {
                continue;
            }
            let full = self.times[level].len() == self.cap;
            if full {
                self.times[level].pop_front();
            }
            self.times[level].push_back(summary.taken_us);
            for (id, s) in self.series.iter_mut() {
                if full {
                    s.levels[level].pop_front();
                }
                s.levels[level].push_back(point(*id as usize));
            }
        }
        for (id, (&live, stack)) in summary.live.iter().zip(&summary.stacks).enumerate() {
            if live == 0 || self.series.contains_key(&(id as u32)) {
                continue;
            }
            // New: zeros before (it held nothing at the retained points, or
            // it would not have been forgotten), this summary where taken.
            let mut levels: [VecDeque<Point>; LEVELS] = Default::default();
            for (level, points) in levels.iter_mut().enumerate() {
                let n = self.times[level].len();
                points.resize(n, Point::default());
                if self.takes(level, k) {
                    points[n - 1] = point(id);
                }
            }
            self.series.insert(
                id as u32,
                Series {
                    stack: stack.clone(),
                    levels,
                },
            );
        }
        self.series
            .retain(|_, s| s.levels.iter().flatten().any(|p| p.live > 0));
    }

    /// Whether the finest level has been judged yet.
    pub(super) fn judged(&self) -> bool {
        self.times[0].len() >= min_points(self.cap)
    }

    /// The longest span judged so far (the judged level reaching furthest
    /// back), zero before the first verdict.
    pub(super) fn horizon(&self) -> Duration {
        (0..LEVELS)
            .filter(|&l| self.times[l].len() >= min_points(self.cap))
            .map(|l| self.span(l))
            .max()
            .unwrap_or_default()
    }

    fn span(&self, level: usize) -> Duration {
        let t = &self.times[level];
        match (t.front(), t.back()) {
            (Some(a), Some(b)) => Duration::from_micros(b.saturating_sub(*a)),
            _ => Duration::ZERO,
        }
    }

    /// Every site some level names, with the verdict of the finest level
    /// that names it, highest score first.
    pub(super) fn suspects(&self, min_growth_bytes: u64) -> Vec<Suspect> {
        let mut found: HashMap<u32, Suspect> = HashMap::new();
        for level in 0..LEVELS {
            let times = &self.times[level];
            if times.len() < min_points(self.cap) {
                continue;
            }
            let t0 = times[0];
            let secs: Vec<f64> = times
                .iter()
                .map(|&t| t.saturating_sub(t0) as f64 / 1e6)
                .collect();
            let span = self.span(level);
            let mut points = Vec::with_capacity(times.len());
            for (&id, s) in &self.series {
                if found.contains_key(&id) {
                    continue;
                }
                points.clear();
                points.extend(s.levels[level].iter().copied());
                let Some(v) = judge(&secs, &points, min_growth_bytes, self.sample_interval) else {
                    continue;
                };
                found.insert(
                    id,
                    Suspect {
                        id,
                        stack: s.stack.clone(),
                        growth_bytes: v.growth_bytes,
                        growth_sd: v.growth_sd,
                        growth_rate: v.rate,
                        live_bytes: s.levels[0].back().map_or(0, |p| p.live),
                        score: v.score,
                        span,
                        level,
                        sample_interval: self.sample_interval,
                        samples: 0,
                        holder: None,
                    },
                );
            }
        }
        let mut out: Vec<Suspect> = found.into_values().collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out
    }

    /// The finest level's series (the latest `window` summaries).
    pub(super) fn history(&self) -> Vec<SiteHistory> {
        let at: Vec<Instant> = self.times[0]
            .iter()
            .map(|&t| recorder::instant_of(t))
            .collect();
        let mut out: Vec<SiteHistory> = self
            .series
            .iter()
            .filter(|(_, s)| s.levels[0].iter().any(|p| p.live > 0))
            .map(|(&id, s)| SiteHistory {
                id,
                stack: s.stack.clone(),
                points: at
                    .iter()
                    .copied()
                    .zip(s.levels[0].iter().map(|p| p.live))
                    .collect(),
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

    /// A summary at `t` seconds with these live bytes, exact mode, no churn
    /// beyond the live bytes themselves.
    fn summary(t: u64, live: Vec<u64>) -> Summary {
        let stack: Arc<[usize]> = Arc::from(&[1usize, 2][..]);
        Summary {
            taken_us: t * 1_000_000,
            stacks: vec![SiteStack::new(stack); live.len()],
            churn_bytes: live.clone(),
            churn_blocks: vec![1; live.len()],
            live_blocks: vec![1; live.len()],
            live,
            sample_interval: 1,
        }
    }

    #[test]
    fn levels_keep_aligned_bounded_series() {
        let mut w = Window::new(3);
        w.push(summary(0, vec![0, 5]));
        w.push(summary(1, vec![7, 5]));
        let h = w.history();
        assert_eq!(h.len(), 2);
        let site0 = h.iter().find(|s| s.id() == 0).unwrap();
        assert_eq!(
            site0.points().iter().map(|p| p.1).collect::<Vec<_>>(),
            [0, 7]
        );
        for t in 2..40 {
            w.push(summary(t, vec![t, 0]));
            for level in 0..LEVELS {
                let n = w.times[level].len();
                assert!(n <= 3);
                assert!(w.series.values().all(|s| s.levels[level].len() == n));
            }
        }
        // Level 1 holds t = 33, 36, 39; level 2 t = 18, 27, 36; level 3 t = 0, 27.
        assert_eq!(w.times[1], [33_000_000, 36_000_000, 39_000_000]);
        assert_eq!(w.times[2], [18_000_000, 27_000_000, 36_000_000]);
        assert_eq!(w.times[3], [0, 27_000_000]);
        // Site 1's 5 at t = 0 is still at level 3: remembered, but out of
        // the finest level's history.
        assert!(w.series.contains_key(&1));
        assert_eq!(w.history().iter().map(|s| s.id()).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_site_is_forgotten_once_zero_at_every_level() {
        let mut w = Window::new(3);
        w.push(summary(0, vec![0, 0]));
        w.push(summary(1, vec![0, 5]));
        assert!(w.series.contains_key(&1));
        // Level 0 keeps 3 points: zero after 3 more summaries; levels 1..
        // never took t = 1.
        for t in 2..5 {
            w.push(summary(t, vec![0, 0]));
        }
        assert!(!w.series.contains_key(&1));
    }

    #[test]
    fn the_finest_level_judges_a_partial_window() {
        let mut w = Window::new(30);
        for i in 0..MIN_POINTS as u64 {
            assert!(!w.judged());
            assert!(w.suspects(MIB).is_empty(), "judged after {i} summaries");
            w.push(summary(i * 10, vec![i * 10 * MIB]));
        }
        assert!(w.judged());
        assert_eq!(w.horizon(), Duration::from_secs(40));
        let s = w.suspects(MIB);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (
                s[0].id(),
                s[0].growth_bytes(),
                s[0].live_bytes(),
                s[0].level
            ),
            (0, 40 * MIB as i64, 40 * MIB, 0)
        );
        assert_eq!(s[0].span(), Duration::from_secs(40));
        assert!((s[0].growth_rate() - MIB as f64).abs() < 1.0);
    }

    #[test]
    fn a_slow_leak_is_named_by_a_coarser_level() {
        // 1 unit per summary, 20 needed: level 0 (4 points) sees 3, level 1
        // (4 points, every 4th summary) sees 12, level 2 (every 16th) names
        // it once it holds enough points spanning >= 20.
        let mut w = Window::new(4);
        let mut named = None;
        for k in 0..100u64 {
            w.push(summary(k, vec![1000 + k]));
            if let Some(s) = w.suspects(20).first() {
                named = Some((k, s.level, s.growth_bytes()));
                break;
            }
        }
        // Level 2 has its 4 points (t = 0, 16, 32, 48) at k = 48.
        assert_eq!(named, Some((48, 2, 48)));
    }

    #[test]
    fn a_doubling_vec_is_named_and_a_warmed_buffer_is_not() {
        let mut w = Window::new(10);
        let mut named_at = None;
        for k in 0..400u64 {
            // Capacity of a Vec pushed at a constant rate: doubles at k = 2^j.
            let vec = (k + 1).next_power_of_two() * 64 * 1024;
            // Doubled up to 16 MiB within one interval, then flat.
            let buffer = if k < 5 { 64 * 1024 } else { 16 * MIB };
            w.push(summary(k, vec![vec, buffer]));
            let s = w.suspects(MIB);
            assert!(s.iter().all(|s| s.id() == 0), "k {k}: {s:?}");
            if named_at.is_none() && !s.is_empty() {
                named_at = Some(k);
            }
        }
        assert!(named_at.is_some_and(|k| k < 64), "{named_at:?}");
    }
}
