//! The built-in server's render pool: a fixed set of threads that build the
//! answers the event loop (`event_loop.rs`) hands them, so that rendering a
//! 16 MB export, a five-second symbol lookup or a five-minute delta never
//! holds up the loop, which keeps reading and writing every other
//! connection.
//!
//! The work is split into lanes by what it costs, each with its own
//! threads, so a flood of one kind cannot queue a cheap answer behind it:
//! - [`Lane::Light`]: `/metrics`, the index, errors (milliseconds);
//! - [`Lane::Heavy`]: snapshots and their exports, the dashboard, retainer
//!   scans (tens of milliseconds to seconds);
//! - [`Lane::Symbol`]: symbol lookups, one thread, since lookups take the
//!   process-wide symbol lock anyway (each bounded to 5 s, and stopped when
//!   its client goes);
//! - [`Lane::Delta`]: `?seconds=N` profiles, which mostly sleep, one thread
//!   per delta allowed at once (the event loop answers 503 past that).
//!
//! The expensive lanes keep the service's CPU priority: they take the
//! symbol lock and the recorder's locks, and a holder at a lower priority
//! made `/metrics` wait behind it on a loaded machine (measured with
//! `tests/http_abuse.rs`: at nice +10, renders of `/metrics` took up to
//! 1.6 s and one to three requests in 15-20 missed the second; none at the
//! service's priority).
//!
//! Identical `GET`s waiting in a lane are answered by one render (the same
//! bytes, shared): a crowd asking for the same export costs one render,
//! not one each.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::ctx::Ctx;
use super::query::profile_query;
use super::response::Response;
use super::routes;
use super::shared::Shared;
use super::thread::{self, Thread};

/// What a request costs to answer, which decides the threads it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    Light = 0,
    Heavy = 1,
    Symbol = 2,
    Delta = 3,
}

const LANES: usize = 4;

/// How long an idle worker waits before checking `stop` again (a backstop:
/// `stop` wakes them).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Which lane answers `method target`.
pub(super) fn lane_of(method: &str, target: &str, max_seconds: u64) -> Lane {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let get = matches!(method, "GET" | "HEAD");
    match path {
        "/debug/pprof/symbol" if method == "POST" || (get && !query.is_empty()) => Lane::Symbol,
        "/debug/pprof/heap" | "/debug/pprof/allocs" if get => {
            match profile_query(query, max_seconds) {
                Ok(q) if q.seconds.is_some() => Lane::Delta,
                Ok(_) => Lane::Heavy,
                // A 400, at once.
                Err(_) => Lane::Light,
            }
        }
        "/debug/leakscope"
        | "/debug/leakscope/"
        | "/debug/leakscope/flamegraph.svg"
        | "/debug/leakscope/snapshot.json"
        | "/debug/leakscope/dhat.json"
        | "/debug/leakscope/retainers"
            if get =>
        {
            Lane::Heavy
        }
        _ => Lane::Light,
    }
}

/// A connection, as the event loop names it: its slot and the serial
/// number of the connection in that slot (a slot is reused).
pub(super) type ConnId = (usize, u64);

/// One request to answer.
pub(super) struct Job {
    pub(super) conn: ConnId,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) body: Vec<u8>,
    pub(super) client: Option<IpAddr>,
    /// Set by the event loop when the client goes away: a job not yet
    /// started is dropped, a symbol lookup stops.
    pub(super) cancel: Arc<AtomicBool>,
}

/// An answer for the event loop to send (`None`: the job was dropped).
pub(super) struct Done {
    pub(super) conn: ConnId,
    pub(super) response: Option<Response>,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Jobs queued or being answered.
    in_flight: AtomicUsize,
}

/// The lanes, their queues and the answers waiting for the event loop.
pub(super) struct Pool {
    queues: [Queue; LANES],
    done: Mutex<Vec<Done>>,
    /// Wakes the event loop when an answer is ready.
    waker: mio::Waker,
    shared: Arc<Shared>,
}

impl Pool {
    pub(super) fn new(shared: Arc<Shared>, waker: mio::Waker) -> Pool {
        Pool {
            queues: std::array::from_fn(|_| Queue {
                jobs: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                in_flight: AtomicUsize::new(0),
            }),
            done: Mutex::new(Vec::new()),
            waker,
            shared,
        }
    }

    /// Starts the workers: `threads[lane]` for each lane. All of them hold
    /// the reentrancy guard for their whole life.
    pub(super) fn spawn(self: &Arc<Pool>, threads: [usize; LANES]) -> std::io::Result<Vec<Thread>> {
        let mut handles = Vec::new();
        for (lane, &n) in threads.iter().enumerate() {
            for _ in 0..n {
                let pool = self.clone();
                match thread::spawn(c"leakscope-rendr", move || pool.work(lane)) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        self.stop();
                        return Err(e);
                    }
                }
            }
        }
        Ok(handles)
    }

    /// Queues `job` on `lane`.
    pub(super) fn submit(&self, lane: Lane, job: Job) {
        let q = &self.queues[lane as usize];
        q.in_flight.fetch_add(1, Ordering::Relaxed);
        lock(&q.jobs).push_back(job);
        q.ready.notify_one();
    }

    /// Jobs queued or being answered on `lane`.
    pub(super) fn in_flight(&self, lane: Lane) -> usize {
        self.queues[lane as usize].in_flight.load(Ordering::Relaxed)
    }

    /// The answers ready since the last call.
    pub(super) fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut *lock(&self.done))
    }

    /// Wakes every worker and the event loop to notice the stop (the
    /// shared flag is set).
    pub(super) fn stop(&self) {
        for q in &self.queues {
            // Under the lock, so a worker between its check and its wait
            // cannot miss the wake-up.
            let _jobs = lock(&q.jobs);
            q.ready.notify_all();
        }
        let _ = self.waker.wake();
    }

    fn work(&self, lane: usize) {
        let q = &self.queues[lane];
        loop {
            let (job, same) = {
                let mut jobs = lock(&q.jobs);
                loop {
                    if self.shared.stopping() {
                        return;
                    }
                    if let Some(job) = jobs.pop_front() {
                        let same = coalesce(&mut jobs, &job);
                        break (job, same);
                    }
                    jobs = q
                        .ready
                        .wait_timeout(jobs, IDLE_WAIT)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            let n = 1 + same.len();
            let response = if job.cancel.load(Ordering::Relaxed) && same.is_empty() {
                None
            } else {
                Some(self.render(&job))
            };
            {
                let mut done = lock(&self.done);
                for j in std::iter::once(&job).chain(&same) {
                    done.push(Done {
                        conn: j.conn,
                        response: response.clone(),
                    });
                }
            }
            q.in_flight.fetch_sub(n, Ordering::Relaxed);
            // A failed wake-up leaves the answer for the loop's next tick.
            let _ = self.waker.wake();
        }
    }

    fn render(&self, job: &Job) -> Response {
        let shared = &*self.shared;
        let cancel = &*job.cancel;
        let abandoned = || cancel.load(Ordering::Relaxed) || shared.stopping();
        let sleep = |d: Duration| shared.sleep(d, &abandoned);
        let ctx = Ctx {
            max_seconds: shared.options.max_seconds_value(),
            top_sites: shared.options.top_sites_value(),
            history: Some(&shared.history),
            deltas: &shared.deltas,
            client: job.client,
            sleep: &sleep,
            abandoned: &abandoned,
        };
        // Never panics: a panic inside a route is a 500.
        routes::respond_with_body(&job.method, &job.target, &job.body, &ctx)
    }
}

/// The queued jobs that `job`'s answer also answers, taken out of the
/// queue: `GET`s and `HEAD`s of the same target (a `HEAD` is sent only the
/// head of the same answer), none of them a delta (whose answer depends on
/// when it started, and which is limited per client).
fn coalesce(jobs: &mut VecDeque<Job>, job: &Job) -> Vec<Job> {
    let plain = |j: &Job| matches!(j.method.as_str(), "GET" | "HEAD") && j.body.is_empty();
    if !plain(job) || job.target.contains("seconds=") {
        return Vec::new();
    }
    let mut same = Vec::new();
    let mut i = 0;
    while i < jobs.len() {
        if plain(&jobs[i]) && jobs[i].target == job.target {
            if let Some(j) = jobs.remove(i) {
                same.push(j);
            }
        } else {
            i += 1;
        }
    }
    same
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes() {
        for (method, target, lane) in [
            ("GET", "/metrics", Lane::Light),
            ("GET", "/debug/pprof/", Lane::Light),
            ("GET", "/nonesuch", Lane::Light),
            ("GET", "/debug/pprof/heap", Lane::Heavy),
            ("HEAD", "/debug/pprof/allocs?debug=1", Lane::Heavy),
            ("GET", "/debug/pprof/heap?seconds=0", Lane::Light),
            ("GET", "/debug/pprof/heap?seconds=5", Lane::Delta),
            ("GET", "/debug/pprof/heap?seconds=301", Lane::Light),
            ("DELETE", "/debug/pprof/heap?seconds=5", Lane::Light),
            ("GET", "/debug/leakscope/snapshot.json", Lane::Heavy),
            ("GET", "/debug/pprof/symbol", Lane::Light),
            ("GET", "/debug/pprof/symbol?0x10", Lane::Symbol),
            ("POST", "/debug/pprof/symbol", Lane::Symbol),
            ("POST", "/metrics", Lane::Light),
        ] {
            assert_eq!(lane_of(method, target, 300), lane, "{method} {target}");
        }
    }

    #[test]
    fn identical_gets_are_answered_together() {
        let job = |n: usize, method: &str, target: &str| Job {
            conn: (n, 0),
            method: method.to_string(),
            target: target.to_string(),
            body: Vec::new(),
            client: None,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let mut q: VecDeque<Job> = [
            job(1, "GET", "/metrics"),
            job(2, "GET", "/metrics?x"),
            job(3, "HEAD", "/metrics"),
            job(4, "POST", "/metrics"),
            job(5, "GET", "/metrics"),
        ]
        .into();
        let same = coalesce(&mut q, &job(0, "GET", "/metrics"));
        let ids: Vec<usize> = same.iter().map(|j| j.conn.0).collect();
        assert_eq!(ids, [1, 3, 5]);
        let left: Vec<usize> = q.iter().map(|j| j.conn.0).collect();
        assert_eq!(left, [2, 4]);
        let mut q: VecDeque<Job> = [job(1, "GET", "/debug/pprof/heap?seconds=5")].into();
        assert!(coalesce(&mut q, &job(0, "GET", "/debug/pprof/heap?seconds=5")).is_empty());
    }
}
