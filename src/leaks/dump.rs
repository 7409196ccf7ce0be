//! The monitor's black box: heap profiles written to disk by the monitor's
//! thread on a new high of the live heap and near the memory limit, so a
//! process the OOM killer takes (SIGKILL: nobody gets to ask the endpoint
//! then) leaves its last profiles behind.
//!
//! Each dump is a `.pb.gz` (pprof) and a `.txt` text report beside it, each
//! written to a hidden temporary name in the same directory and then renamed:
//! a kill mid-write leaves a stray temporary file, never a torn profile
//! under a dump's name.

use std::path::{Path, PathBuf};

use crate::Error;

/// What `MonitorConfig` collects for dumps.
#[derive(Clone, Debug, Default)]
pub(super) struct DumpConfig {
    pub(super) dir: Option<PathBuf>,
    pub(super) on_new_high: Option<u64>,
    pub(super) near_limit: Vec<f64>,
    pub(super) memory_limit: Option<u64>,
    pub(super) max_dumps: Option<usize>,
}

/// Dumps kept when `max_dumps` is not set.
pub(super) const DEFAULT_MAX_DUMPS: usize = 16;
/// The fractions of the memory limit dumped at when `dump_dir` is set
/// without a trigger.
pub(super) const DEFAULT_NEAR_LIMIT: [f64; 2] = [0.8, 0.9];

/// File names: `heap-<UTC time, 20261204T221530.123Z>-<seq>-<reason>.pb.gz`:
/// readable, free of `:` (which some file systems and `scp` refuse), and of
/// fixed width, so names sort by time.
const PREFIX: &str = "heap-";
const PROFILE: &str = ".pb.gz";

/// The dumper, owned by the monitor thread.
#[derive(Debug)]
pub(super) struct Dumper {
    dir: PathBuf,
    on_new_high: Option<u64>,
    /// Each fraction of the limit, and whether it is armed (the resident
    /// size is below it since the last dump for it).
    near: Vec<(f64, bool)>,
    limit: Option<u64>,
    max_dumps: usize,
    /// Live heap at the last new-high dump (or the first summary).
    reference: Option<u64>,
    seq: u64,
}

impl Dumper {
    /// Checks the configuration; `None` when dumps are off.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for dump settings without `dump_dir`, a
    /// fraction outside (0, 1], `max_dumps(0)`, `dump_near_limit` with no
    /// limit known, or a build without the `pprof` feature; [`Error::Io`]
    /// when the directory cannot be created or written.
    pub(super) fn new(c: &DumpConfig) -> Result<Option<Dumper>, Error> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        let Some(dir) = &c.dir else {
            if c.on_new_high.is_some() || !c.near_limit.is_empty() || c.max_dumps.is_some() {
                return bad("dump_on_new_high, dump_near_limit and max_dumps need dump_dir".into());
            }
            return Ok(None);
        };
        if !cfg!(feature = "pprof") {
            return bad("dump_dir needs the `pprof` feature (dumps are pprof profiles)".into());
        }
        // `dump_dir` alone turns the black box on: near the memory limit,
        // where the OOM killer comes.
        let near_limit: &[f64] = if c.on_new_high.is_none() && c.near_limit.is_empty() {
            &DEFAULT_NEAR_LIMIT
        } else {
            &c.near_limit
        };
        if c.on_new_high == Some(0) {
            return bad("dump_on_new_high must be greater than zero".into());
        }
        if let Some(f) = near_limit.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return bad(format!(
                "dump_near_limit fractions must be in (0, 1], got {f}"
            ));
        }
        if c.max_dumps == Some(0) {
            return bad("max_dumps must be at least 1".into());
        }
        // Without a limit of its own or of its cgroup, a process is bounded
        // by the machine's memory: that is where the OOM killer comes for it
        // (a cgroup limit above it is bounded by it too).
        let limit = c.memory_limit.or_else(|| {
            [cgroup_memory_limit(), machine_memory()]
                .into_iter()
                .flatten()
                .min()
        });
        if !near_limit.is_empty() && limit.is_none() {
            return bad(
                "dump_near_limit needs a memory limit: set memory_limit (none was found in the cgroup or /proc/meminfo)"
                    .into(),
            );
        }
        std::fs::create_dir_all(dir)?;
        // Writable? A probe file, written and removed.
        let probe = dir.join(format!(".leakscope-probe-{}", std::process::id()));
        std::fs::write(&probe, b"probe")?;
        std::fs::remove_file(&probe)?;
        let mut near: Vec<(f64, bool)> = near_limit.iter().map(|&f| (f, true)).collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        near.dedup_by(|a, b| a.0 == b.0);
        Ok(Some(Dumper {
            dir: dir.clone(),
            on_new_high: c.on_new_high,
            near,
            limit,
            max_dumps: c.max_dumps.unwrap_or(DEFAULT_MAX_DUMPS),
            reference: None,
            seq: 0,
        }))
    }

    /// After a summary: dumps if the live heap (`live`, estimated) passed
    /// its reference by `on_new_high`, or the resident size rose past a
    /// fraction of the limit. Failures are logged, never fatal.
    pub(super) fn after_summary(&mut self, live: u64) {
        let mut reasons: Vec<String> = Vec::new();
        if let Some(step) = self.on_new_high {
            match self.reference {
                None => self.reference = Some(live),
                Some(r) if live >= r.saturating_add(step) => {
                    self.reference = Some(live);
                    reasons.push("new-high".to_string());
                }
                Some(_) => {}
            }
        }
        if let (Some(limit), false) = (self.limit, self.near.is_empty()) {
            let rss = resident_bytes().unwrap_or(0);
            // The highest fraction newly passed names the dump; one dump
            // for several fractions passed at once.
            let mut passed = None;
            for (f, armed) in &mut self.near {
                let line = (*f * limit as f64) as u64;
                if rss >= line {
                    if *armed {
                        passed = Some(*f);
                    }
                    *armed = false;
                } else {
                    *armed = true;
                }
            }
            if let Some(f) = passed {
                reasons.push(format!("near-limit-{:.0}pct", f * 100.0));
            }
        }
        if reasons.is_empty() {
            return;
        }
        if let Err(e) = self.write(&reasons.join("+")) {
            log::error!(
                "leakscope: could not write a heap dump to {}: {e}",
                self.dir.display()
            );
        }
    }

    fn write(&mut self, reason: &str) -> Result<(), Error> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.seq += 1;
        let stem = format!("{PREFIX}{}-{:04}-{reason}", utc_stamp(ms), self.seq);
        let snap = crate::profile::snapshot();
        write_atomically(&self.dir, &format!("{stem}{PROFILE}"), |w| {
            write_profile(&snap, w)
        })?;
        write_atomically(&self.dir, &format!("{stem}.txt"), |w| {
            use std::io::Write;
            write!(w, "leakscope heap dump ({reason})\n\n{snap}").map_err(Error::from)
        })?;
        log::warn!(
            "leakscope: wrote heap dump {} ({reason})",
            self.dir.join(format!("{stem}{PROFILE}")).display()
        );
        self.prune()
    }

    /// Deletes the oldest dumps (and their text reports) past `max_dumps`,
    /// including those an earlier run left in the directory.
    fn prune(&self) -> Result<(), Error> {
        let mut dumps: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(PROFILE))
            .collect();
        dumps.sort();
        let excess = dumps.len().saturating_sub(self.max_dumps);
        for name in &dumps[..excess] {
            std::fs::remove_file(self.dir.join(name))?;
            let txt = format!("{}.txt", &name[..name.len() - PROFILE.len()]);
            match std::fs::remove_file(self.dir.join(txt)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `ms` since the Unix epoch as a basic ISO 8601 UTC time with milliseconds,
/// `20261204T221530.123Z`.
///
/// Written by hand: a file name needs only this one format, and the civil
/// date of a day count is the few lines below (the days-to-civil algorithm
/// of H. Hinnant's "chrono-compatible low-level date algorithms"), not a
/// date-time dependency.
fn utc_stamp(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Shifted to eras of 400 years starting on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}.{milli:03}Z")
}

#[cfg(feature = "pprof")]
fn write_profile(snap: &crate::profile::Snapshot, w: &mut std::fs::File) -> Result<(), Error> {
    snap.write_pprof(w)
}

#[cfg(not(feature = "pprof"))]
fn write_profile(_: &crate::profile::Snapshot, _: &mut std::fs::File) -> Result<(), Error> {
    // `Dumper::new` refuses dumps without the feature.
    Err(Error::InvalidConfig(
        "dumps need the `pprof` feature".into(),
    ))
}

/// Writes `name` in `dir` through a hidden temporary file, synced, then
/// renamed into place (atomic within one file system).
fn write_atomically(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut std::fs::File) -> Result<(), Error>,
) -> Result<(), Error> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The resident set size of this process, from `/proc/self/statm`.
pub(super) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096))
}

/// The machine's physical memory (`MemTotal` of `/proc/meminfo`).
fn machine_memory() -> Option<u64> {
    meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kib.saturating_mul(1024))
}

/// The memory limit of this process's own cgroup: v2 `memory.max`, else v1
/// `memory.limit_in_bytes`; `None` when unlimited or unknown.
///
/// Read from `/proc/self/cgroup` (`0::/path` for v2, `N:memory:/path` or
/// `N:...,memory,...:/path` for v1) and the cgroup file system at
/// `/sys/fs/cgroup` (v1: its `memory` hierarchy). v1 reports "unlimited" as
/// a huge page-rounded number; anything from 2^62 up counts as unlimited.
pub(crate) fn cgroup_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_from(&cgroups, Path::new("/sys/fs/cgroup"))
}

fn cgroup_limit_from(cgroups: &str, root: &Path) -> Option<u64> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let rel = |path: &str| path.trim_start_matches('/').to_string();
    let lines = cgroups.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        Some((parts.next()?, parts.next()?, parts.next()?))
    });
    // v1 first: on a hybrid host (v1 controllers, an empty v2 tree at
    // `unified`) the memory controller is the v1 one.
    if let Some((_, _, path)) = lines
        .clone()
        .find(|(_, controllers, _)| controllers.split(',').any(|c| c == "memory"))
    {
        // The path as the host names it; inside a container whose mount is
        // namespaced, our cgroup is the hierarchy's root.
        let v = read(
            root.join("memory")
                .join(rel(path))
                .join("memory.limit_in_bytes"),
        )
        .or_else(|| read(root.join("memory").join("memory.limit_in_bytes")))?;
        let v: u64 = v.trim().parse().ok()?;
        return (v < 1 << 62).then_some(v);
    }
    let (_, _, path) = lines
        .clone()
        .find(|(id, c, _)| *id == "0" && c.is_empty())?;
    // v2: the limit of our cgroup, else of the nearest ancestor that has
    // one (a child without its own limit is bounded by them).
    let mut dir = root.join(rel(path));
    loop {
        if let Some(v) = read(dir.join("memory.max")) {
            let v = v.trim();
            if v != "max" {
                return v.parse().ok();
            }
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_bytes() {
        let text = "MemTotal:       24590436 kB\nMemFree:        1000 kB\n";
        assert_eq!(meminfo_total(text), Some(24_590_436 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total("MemTotal: x kB\n"), None);
        assert_eq!(meminfo_total("MemTotal: 12 MB\n"), None);
        assert!(machine_memory().is_some_and(|b| b > 1 << 20));
    }

    /// The naive oracle: whole years, then whole months, day by day.
    fn naive_stamp(ms: u64) -> String {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let mut days = ms / 86_400_000;
        let mut year = 1970;
        while days >= if leap(year) { 366 } else { 365 } {
            days -= if leap(year) { 366 } else { 365 };
            year += 1;
        }
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while days >= lengths[month] {
            days -= lengths[month];
            month += 1;
        }
        let rem = ms % 86_400_000;
        format!(
            "{year:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            month + 1,
            days + 1,
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1000 % 60,
            rem % 1000
        )
    }

    #[test]
    fn dump_names_carry_a_readable_utc_time() {
        assert_eq!(utc_stamp(0), "19700101T000000.000Z");
        // 2000-02-29 (a leap day in a century year), 23:59:59.999.
        assert_eq!(utc_stamp(951_868_799_999), "20000229T235959.999Z");
        assert_eq!(utc_stamp(1_796_418_556_012), "20261204T210916.012Z");
        // Against the oracle over three centuries, a prime step apart.
        let mut ms = 0u64;
        while ms < 10_000_000_000_000 {
            assert_eq!(utc_stamp(ms), naive_stamp(ms), "{ms}");
            ms += 7_919_993_311;
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("leakscope-dump-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    #[cfg(not(feature = "pprof"))]
    fn dumps_need_the_pprof_feature() {
        let c = DumpConfig {
            dir: Some(temp("nopprof")),
            on_new_high: Some(1 << 20),
            ..Default::default()
        };
        let e = Dumper::new(&c).unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig(ref m) if m.contains("pprof")),
            "{e}"
        );
    }

    #[test]
    #[cfg(feature = "pprof")]
    fn bad_configurations_are_errors() {
        let dir = temp("bad");
        let ok = DumpConfig {
            dir: Some(dir.clone()),
            on_new_high: Some(1 << 20),
            ..Default::default()
        };
        assert!(Dumper::new(&ok).unwrap().is_some());
        assert!(Dumper::new(&DumpConfig::default()).unwrap().is_none());
        // `dump_dir` alone: dumps near the memory limit, at 80% and 90%.
        let alone = Dumper::new(&DumpConfig {
            dir: Some(dir.clone()),
            memory_limit: Some(1 << 30),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(alone.near, vec![(0.8, true), (0.9, true)]);
        assert_eq!(alone.on_new_high, None);
        for (c, what) in [
            (
                DumpConfig {
                    on_new_high: Some(1),
                    ..Default::default()
                },
                "dump_dir",
            ),
            (
                DumpConfig {
                    near_limit: vec![1.5],
                    memory_limit: Some(1 << 30),
                    ..ok.clone()
                },
                "(0, 1]",
            ),
            (
                DumpConfig {
                    near_limit: vec![0.0],
                    memory_limit: Some(1 << 30),
                    ..ok.clone()
                },
                "(0, 1]",
            ),
            (
                DumpConfig {
                    near_limit: vec![f64::NAN],
                    memory_limit: Some(1 << 30),
                    ..ok.clone()
                },
                "(0, 1]",
            ),
            (
                DumpConfig {
                    max_dumps: Some(0),
                    ..ok.clone()
                },
                "max_dumps",
            ),
        ] {
            let e = Dumper::new(&c).unwrap_err();
            assert!(
                matches!(e, Error::InvalidConfig(ref m) if m.contains(what)),
                "{e}"
            );
        }
        // A directory that cannot be created: under a regular file.
        let file = temp("file");
        std::fs::write(&file, b"x").unwrap();
        let e = Dumper::new(&DumpConfig {
            dir: Some(file.join("sub")),
            ..ok.clone()
        })
        .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e}");
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cgroup_files_v1_and_v2() {
        let root = temp("cgroup");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/memory.max"), "1048576\n").unwrap();
        std::fs::write(root.join("a/b/memory.max"), "max\n").unwrap();
        // v2, own limit unlimited: the parent's.
        assert_eq!(cgroup_limit_from("0::/a/b\n", &root), Some(1 << 20));
        std::fs::write(root.join("a/b/memory.max"), "4096\n").unwrap();
        assert_eq!(cgroup_limit_from("0::/a/b\n", &root), Some(4096));
        std::fs::write(root.join("a/memory.max"), "max\n").unwrap();
        std::fs::write(root.join("a/b/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit_from("0::/a/b\n", &root), None);
        // v1.
        std::fs::create_dir_all(root.join("memory/svc")).unwrap();
        std::fs::write(root.join("memory/svc/memory.limit_in_bytes"), "536870912\n").unwrap();
        let v1 = "12:cpu,cpuacct:/svc\n4:memory:/svc\n0::/a/b\n";
        assert_eq!(cgroup_limit_from(v1, &root), Some(512 << 20));
        std::fs::write(
            root.join("memory/svc/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_limit_from(v1, &root), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// This machine: what we read equals what the cgroup files say, read by
    /// a shell (`cat`) in the same cgroup.
    #[test]
    fn cgroup_limit_of_this_process_matches_the_files() {
        let script = r#"p=$(sed -n 's/^[0-9]*:[^:]*\bmemory\b[^:]*://p' /proc/self/cgroup)
if [ -n "$p" ]; then
  v=$(cat /sys/fs/cgroup/memory$p/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
  if [ "$v" -ge 4611686018427387904 ]; then echo none; else echo "$v"; fi; exit; fi
p=$(sed -n 's/^0:://p' /proc/self/cgroup); d=/sys/fs/cgroup$p
while :; do if [ -r "$d/memory.max" ] && [ "$(cat "$d/memory.max")" != max ]; then cat "$d/memory.max"; exit; fi
  [ "$d" = /sys/fs/cgroup ] && break; d=$(dirname "$d"); done
echo none"#;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let said = String::from_utf8(out.stdout).unwrap();
        let expected = match said.trim() {
            "none" | "" => None,
            v => Some(v.parse::<u64>().unwrap()),
        };
        assert_eq!(cgroup_memory_limit(), expected, "the files say {said:?}");
        eprintln!("cgroup memory limit here: {expected:?}");
    }
}
