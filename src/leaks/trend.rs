//! The suspect rule's arithmetic on one site's series of live bytes: pure
//! functions of the numbers, tested on their own.

/// The least R² of the least-squares line through a suspect's window.
const MIN_FIT: f64 = 0.7;

/// What the rule found for one series.
#[derive(Debug, PartialEq)]
pub(super) struct Verdict {
    pub(super) growth_bytes: i64,
    /// Least-squares slope, bytes per second.
    pub(super) rate: f64,
    pub(super) score: f64,
}

/// The suspect rule of [`Monitor`] (see its docs) on one site's window:
/// `secs[i]` is the time of summary `i` in seconds, `v[i]` its live bytes.
pub(super) fn judge(secs: &[f64], v: &[u64], min_growth_bytes: u64) -> Option<Verdict> {
    let n = v.len();
    if n < 3 || secs.len() != n {
        return None;
    }
    let intervals = n - 1;
    let last = v[n - 1];
    let growth = i128::from(last) - i128::from(v[0]);
    // 1. Enough growth.
    if growth < i128::from(min_growth_bytes.max(1)) {
        return None;
    }
    // 2. Rose in most intervals.
    let rises = v.windows(2).filter(|w| w[1] > w[0]).count();
    if 2 * rises <= intervals {
        return None;
    }
    // 4. Not a burst: gave back at most a quarter of the growth.
    let max = v.iter().copied().max().unwrap_or(last);
    if 4 * i128::from(max - last) > growth {
        return None;
    }
    // 5. Not a plateau: the last k intervals grew at >= 1/4 of the average
    // rate, i.e. recent / k >= growth / intervals / 4.
    let k = intervals.div_ceil(3);
    let recent = i128::from(last) - i128::from(v[n - 1 - k]);
    if recent <= 0 || 4 * recent * intervals as i128 <= growth * k as i128 {
        return None;
    }
    // 3. A clear upward trend.
    let (slope, r2) = least_squares(secs, v)?;
    if slope <= 0.0 || r2 < MIN_FIT {
        return None;
    }
    let growth_bytes = growth.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
    Some(Verdict {
        growth_bytes,
        rate: slope,
        score: growth as f64 * r2 * rises as f64 / intervals as f64,
    })
}

/// Slope and R² of the least-squares line `v ~ a + b * t`; `None` when the
/// times or the values do not vary.
fn least_squares(t: &[f64], v: &[u64]) -> Option<(f64, f64)> {
    let n = t.len() as f64;
    let mt = t.iter().sum::<f64>() / n;
    let mv = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (&x, &y) in t.iter().zip(v) {
        let (dx, dy) = (x - mt, y as f64 - mv);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / sxx, sxy * sxy / (sxx * syy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Judges `mib` (in MiB) sampled once a second.
    fn judge_mib(mib: &[f64], min_growth: u64) -> Option<Verdict> {
        let secs: Vec<f64> = (0..mib.len()).map(|i| i as f64).collect();
        let v: Vec<u64> = mib.iter().map(|&m| (m * MIB as f64) as u64).collect();
        judge(&secs, &v, min_growth)
    }

    #[test]
    fn steady_growth_is_a_suspect() {
        let v = judge_mib(&[0.0, 1.0, 2.0, 3.0, 4.0], MIB).expect("steady growth");
        assert_eq!(v.growth_bytes, 4 * MIB as i64);
        assert!((v.rate - MIB as f64).abs() < 1.0, "slope {}", v.rate);
        // R² = 1 and every interval rose: the score is the growth.
        assert!(
            (v.score - 4.0 * MIB as f64).abs() < 1.0,
            "score {}",
            v.score
        );
    }

    #[test]
    fn three_summaries_suffice_and_two_do_not() {
        assert!(judge_mib(&[0.0, 1.0, 2.0], MIB).is_some());
        assert!(judge_mib(&[0.0, 2.0], MIB).is_none());
    }

    #[test]
    fn noisy_growth_is_a_suspect() {
        assert!(judge_mib(&[1.0, 2.0, 1.9, 3.1, 4.0, 4.8, 4.7, 6.0, 7.1], MIB).is_some());
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
        // Grew steadily, then gave most of it back.
        assert!(judge_mib(&[0.0, 2.0, 4.0, 6.0, 8.0, 9.0, 2.0], MIB).is_none());
        // A spike at the very end.
        assert!(judge_mib(&[0.0, 0.0, 0.0, 0.0, 8.0], MIB).is_none());
    }

    #[test]
    fn a_plateau_is_not() {
        // A cache that filled over the first half and then stayed flat.
        assert!(judge_mib(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0], MIB).is_none());
        // Slowing down to a crawl at the end counts as a plateau too.
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
            // Windows shorter than a period only see one tooth rising.
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
        let v = [0, MIB, 2 * MIB];
        assert!(judge(&[1.0, 1.0, 1.0], &v, 1).is_none());
    }
}
