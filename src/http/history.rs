//! The server's own periodic summaries: the dashboard's chart when no
//! growth monitor runs. A bounded ring of points, each with the live bytes
//! of the top few sites at that moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use super::chart::Line;
use crate::profile::{SiteStack, summary};
use crate::report::text::owner_name;

/// Points kept (two hours at 1 a minute, ten minutes at the default 5 s).
const CAP: usize = 120;
/// Sites kept per point: the chart draws the top few of the latest point,
/// and a site that was in the top this many at a moment is drawn there.
const SITES_PER_POINT: usize = 12;

pub(super) struct History {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    points: VecDeque<Point>,
    /// The stacks of the sites named by the retained points.
    stacks: HashMap<u32, SiteStack>,
}

struct Point {
    at: Instant,
    /// (site id, live bytes), largest first.
    top: Vec<(u32, u64)>,
}

impl History {
    pub(super) fn new() -> History {
        History {
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes one summary (cheap: the per-site counters, no live-list walk).
    /// Called on the server's history thread, under its guard.
    pub(super) fn record(&self) {
        let s = summary();
        let at = crate::recorder::instant_of(s.taken_us);
        let mut top: Vec<(u32, u64)> = s
            .live
            .iter()
            .enumerate()
            .filter(|&(_, &v)| v > 0)
            .map(|(id, &v)| (id as u32, v))
            .collect();
        top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(SITES_PER_POINT);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for &(id, _) in &top {
            if let Some(stack) = s.stacks.get(id as usize) {
                inner.stacks.entry(id).or_insert_with(|| stack.clone());
            }
        }
        inner.points.push_back(Point { at, top });
        if inner.points.len() > CAP {
            inner.points.pop_front();
            let Inner { points, stacks } = &mut *inner;
            stacks.retain(|id, _| points.iter().any(|p| p.top.iter().any(|t| t.0 == *id)));
        }
    }

    /// The series of the `n` largest sites of the latest point.
    pub(super) fn lines(&self, n: usize) -> Vec<Line> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = inner.points.back() else {
            return Vec::new();
        };
        last.top
            .iter()
            .take(n)
            .map(|&(id, _)| Line {
                id,
                label: inner
                    .stacks
                    .get(&id)
                    .map_or_else(|| format!("site {id}"), |s| owner_name(s.frames())),
                points: inner
                    .points
                    .iter()
                    .filter_map(|p| p.top.iter().find(|t| t.0 == id).map(|t| (p.at, t.1)))
                    .collect(),
            })
            .collect()
    }
}
