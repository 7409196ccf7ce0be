//! The suspect rule's arithmetic on one site's series of live bytes at one
//! level of the monitor's history, and the sampling-noise model it uses: pure
//! functions of the numbers, tested on their own.
//!
//! # The noise model
//!
//! Under sampling (interval `R` > 1) a block of `s` bytes is recorded with
//! probability `p = 1 - exp(-s/R)` and counted `1/p` times (see the recorder's
//! `sampling.rs`), so its contribution to a site's estimate has variance
//! `s² (1-p)/p = s² / (exp(s/R) - 1)`. That is at most `R·s` (small blocks)
//! and at most `0.65·R²` (its maximum, near `s = 1.6 R`; large blocks tend to
//! 0). A change of a site's live bytes between two summaries is made of the
//! blocks allocated and freed in between, each sampled independently, so
//!
//! `Var(change) <= min(R x churned bytes, 0.65 x R² x churned blocks)`
//!
//! where "churned" counts what the site allocated plus what it freed between
//! the two summaries (the recorder's cumulative per-site counters, themselves
//! estimates). Blocks live at both summaries cancel out exactly: the same
//! sampling decision counts in both. Exact mode (`R = 1`) has no noise.

/// How many standard deviations a change must exceed to count: 2, about a
/// 95% two-sided band.
pub(super) const Z: f64 = 2.0;

/// The largest variance of one block's contribution, in units of `R²`:
/// `max over x of x² / (exp(x) - 1)` is 0.6476 at `x = 1.594`.
const MAX_BLOCK_VAR: f64 = 0.6476;

/// One summary of one site, as a level of the monitor keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Point {
    /// Estimated live bytes.
    pub(super) live: u64,
    /// Cumulative estimated bytes allocated + freed.
    pub(super) churn_bytes: u64,
    /// Cumulative estimated blocks allocated + freed.
    pub(super) churn_blocks: u64,
}

/// Standard deviation of the estimated change of live bytes from `a` to `b`
/// under sample interval `r` (see the module docs).
pub(super) fn change_sd(a: &Point, b: &Point, r: u64) -> f64 {
    if r <= 1 {
        return 0.0;
    }
    let (a, b) = if a.churn_bytes <= b.churn_bytes {
        (a, b)
    } else {
        (b, a)
    };
    let r = r as f64;
    let bytes = b.churn_bytes.saturating_sub(a.churn_bytes) as f64;
    let blocks = b.churn_blocks.saturating_sub(a.churn_blocks) as f64;
    (r * bytes).min(MAX_BLOCK_VAR * r * r * blocks).sqrt()
}

/// What the rule found for one series.
#[derive(Debug, PartialEq)]
pub(super) struct Verdict {
    pub(super) growth_bytes: i64,
    /// Standard deviation of `growth_bytes` from sampling.
    pub(super) growth_sd: f64,
    /// Least-squares slope, bytes per second.
    pub(super) rate: f64,
    pub(super) score: f64,
}

/// The suspect rule of [`Monitor`](super::Monitor) (see its docs) on one
/// site's points at one level: `secs[i]` is the time of point `i` in seconds,
/// `r` the sample interval.
pub(super) fn judge(secs: &[f64], p: &[Point], min_growth_bytes: u64, r: u64) -> Option<Verdict> {
    let n = p.len();
    if n < 3 || secs.len() != n {
        return None;
    }
    let v = |i: usize| i128::from(p[i].live);
    // A change from point `i` to point `j` beyond sampling noise.
    let clear = |i: usize, j: usize| (v(j) - v(i)) as f64 > Z * change_sd(&p[i], &p[j], r);
    let intervals = n - 1;
    let growth = v(n - 1) - v(0);
    // 1. Enough growth, beyond noise.
    if growth < i128::from(min_growth_bytes.max(1)) || !clear(0, n - 1) {
        return None;
    }
    // 2. Not a burst: gave back at most a quarter of the growth.
    // The first index of the maximum: where that high was set.
    let argmax = |from: usize, to: usize| {
        (from..to)
            .max_by_key(|&i| (v(i), std::cmp::Reverse(i)))
            .unwrap_or(from)
    };
    let top = argmax(0, n);
    if 4 * (v(top) - v(n - 1)) > growth {
        return None;
    }
    // 3. Sustained, step-wise or smooth: a clear rise in the first half (the
    // first point clearly above v[0], at `rise`) and a clear new high in the
    // second half (over the first half's maximum, at `high`), at least `k`
    // intervals apart. One step (a buffer doubled up to its size at once,
    // even across two summaries) is not a trend.
    let mid = intervals / 2;
    let k = intervals.div_ceil(3);
    let rise = (1..=mid).find(|&i| clear(0, i))?;
    let first_top = argmax(0, mid + 1);
    let high = argmax(mid + 1, n);
    if !clear(first_top, high) || high - rise < k {
        return None;
    }
    // 4. Not a plateau: over the last k intervals it still grew, beyond
    // noise and at >= 1/4 of the average rate (recent / k >= growth /
    // intervals / 4).
    let recent = v(n - 1) - v(n - 1 - k);
    if !clear(n - 1 - k, n - 1) || 4 * recent * intervals as i128 <= growth * k as i128 {
        return None;
    }
    let growth_bytes = growth.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
    let span = secs[n - 1] - secs[0];
    let rate = match least_squares(secs, p) {
        Some(slope) if slope > 0.0 => slope,
        _ if span > 0.0 => growth as f64 / span,
        _ => return None,
    };
    Some(Verdict {
        growth_bytes,
        growth_sd: change_sd(&p[0], &p[n - 1], r),
        rate,
        score: growth as f64,
    })
}

/// Slope of the least-squares line `live ~ a + b * t`; `None` when the times
/// or the values do not vary.
fn least_squares(t: &[f64], p: &[Point]) -> Option<f64> {
    let n = t.len() as f64;
    let mt = t.iter().sum::<f64>() / n;
    let mv = p.iter().map(|x| x.live as f64).sum::<f64>() / n;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (&x, y) in t.iter().zip(p) {
        let (dx, dy) = (x - mt, y.live as f64 - mv);
        sxx += dx * dx;
        sxy += dx * dy;
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn points(mib: &[f64]) -> Vec<Point> {
        mib.iter()
            .map(|&m| Point {
                live: (m * MIB as f64) as u64,
                ..Point::default()
            })
            .collect()
    }

    /// Judges `mib` (in MiB) sampled once a second, exact mode.
    fn judge_mib(mib: &[f64], min_growth: u64) -> Option<Verdict> {
        let secs: Vec<f64> = (0..mib.len()).map(|i| i as f64).collect();
        judge(&secs, &points(mib), min_growth, 1)
    }

    #[test]
    fn steady_growth_is_a_suspect() {
        let v = judge_mib(&[0.0, 1.0, 2.0, 3.0, 4.0], MIB).expect("steady growth");
        assert_eq!(v.growth_bytes, 4 * MIB as i64);
        assert!((v.rate - MIB as f64).abs() < 1.0, "slope {}", v.rate);
        assert_eq!(v.growth_sd, 0.0);
        assert!(
            (v.score - 4.0 * MIB as f64).abs() < 1.0,
            "score {}",
            v.score
        );
    }

    #[test]
    fn three_points_suffice_and_two_do_not() {
        assert!(judge_mib(&[0.0, 1.0, 2.0], MIB).is_some());
        assert!(judge_mib(&[0.0, 2.0], MIB).is_none());
    }

    #[test]
    fn noisy_growth_is_a_suspect() {
        assert!(judge_mib(&[1.0, 2.0, 1.9, 3.1, 4.0, 4.8, 4.7, 6.0, 7.1], MIB).is_some());
    }

    #[test]
    fn doublings_are_a_suspect() {
        // A Vec's capacity: flat for ever longer stretches between steps.
        assert!(judge_mib(&[1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.0, 4.0], MIB).is_some());
        assert!(judge_mib(&[1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 4.0], MIB).is_some());
    }

    #[test]
    fn one_step_is_not() {
        // A buffer that doubled up to its size at once, then stayed there.
        assert!(judge_mib(&[1.0, 1.0, 1.0, 8.0, 8.0, 8.0, 8.0], MIB).is_none());
        assert!(judge_mib(&[1.0, 1.0, 1.0, 1.0, 1.0, 8.0, 8.0], MIB).is_none());
        assert!(judge_mib(&[1.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0], MIB).is_none());
        // The same doublings caught halfway by a summary: two adjacent steps.
        assert!(judge_mib(&[0.1, 0.1, 4.0, 16.0, 16.0], MIB).is_none());
        assert!(
            judge_mib(
                &[0.1, 0.1, 0.1, 0.1, 4.0, 16.0, 16.0, 16.0, 16.0, 16.0],
                MIB
            )
            .is_none()
        );
    }

    #[test]
    fn too_little_growth_is_not() {
        assert!(judge_mib(&[0.0, 0.25, 0.5, 0.75], MIB).is_none());
        assert!(judge_mib(&[0.0, 0.25, 0.5, 0.75], MIB / 2).is_some());
    }

    #[test]
    fn flat_and_shrinking_are_not() {
        assert!(judge_mib(&[4.0; 8], 1).is_none());
        assert!(judge_mib(&[8.0, 7.0, 6.0, 5.0], 1).is_none());
    }

    #[test]
    fn a_burst_that_came_back_down_is_not() {
        assert!(judge_mib(&[0.0, 2.0, 4.0, 6.0, 8.0, 9.0, 2.0], MIB).is_none());
        assert!(judge_mib(&[0.0, 0.0, 0.0, 0.0, 8.0], MIB).is_none());
    }

    #[test]
    fn a_plateau_is_not() {
        assert!(judge_mib(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0], MIB).is_none());
        assert!(
            judge_mib(
                &[0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 15.01, 15.02, 15.03, 15.04],
                MIB
            )
            .is_none()
        );
    }

    #[test]
    fn sawtooth_is_not() {
        let teeth = [1.0, 2.0, 3.0, 0.0];
        for offset in 0..4 {
            for len in 5..16 {
                let v: Vec<f64> = (0..len).map(|i| 2.0 * teeth[(i + offset) % 4]).collect();
                assert!(judge_mib(&v, MIB).is_none(), "{v:?}");
            }
        }
    }

    #[test]
    fn alternating_spikes_are_not() {
        for len in 3..12 {
            for phase in 0..2 {
                let v: Vec<f64> = (0..len)
                    .map(|i| if (i + phase) % 2 == 1 { 8.0 } else { 0.0 })
                    .collect();
                assert!(judge_mib(&v, MIB).is_none(), "{v:?}");
            }
        }
    }

    #[test]
    fn no_time_spread_is_not_judged() {
        assert!(judge(&[1.0, 1.0, 1.0], &points(&[0.0, 1.0, 2.0]), 1, 1).is_none());
    }

    #[test]
    fn growth_within_sampling_noise_is_not() {
        // 1 MiB more live, but through 64 MiB of churn of small blocks at
        // R = 512 KiB: sd = sqrt(R x 64 MiB) = 5.7 MiB.
        let r = 512 << 10;
        let churned = |i: u64, live: u64| Point {
            live,
            churn_bytes: i * 16 * MIB,
            churn_blocks: i * 16 * 1024,
        };
        let p: Vec<Point> = (0..5).map(|i| churned(i, 8 * MIB + i * MIB / 4)).collect();
        let secs = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert!(judge(&secs, &p, MIB / 2, r).is_none());
        // The same numbers in exact mode are a trend.
        assert!(judge(&secs, &p, MIB / 2, 1).is_some());
    }

    #[test]
    fn the_variance_bound_matches_the_sampling_model() {
        let r = 1u64 << 19;
        // Small blocks: R x bytes.
        let a = Point::default();
        let b = Point {
            live: 0,
            churn_bytes: 1000 * 64,
            churn_blocks: 1000,
        };
        assert!((change_sd(&a, &b, r) - ((r * 64_000) as f64).sqrt()).abs() < 1e-6);
        // Large blocks: 0.65 R² per block, whatever their size.
        let c = Point {
            live: 0,
            churn_bytes: 4 * (64 << 20),
            churn_blocks: 4,
        };
        let sd = change_sd(&a, &c, r);
        assert!(
            (sd - (MAX_BLOCK_VAR * 4.0).sqrt() * r as f64).abs() < 1.0,
            "{sd}"
        );
        // The model's maximum: x²/(e^x - 1) over x.
        let max = (1..4000)
            .map(|i| {
                let x = i as f64 / 1000.0;
                x * x / x.exp_m1()
            })
            .fold(0.0, f64::max);
        assert!(
            max <= MAX_BLOCK_VAR + 1e-4 && max > MAX_BLOCK_VAR - 1e-3,
            "{max}"
        );
        assert_eq!(change_sd(&a, &c, 1), 0.0);
    }
}
