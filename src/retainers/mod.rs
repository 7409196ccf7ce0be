//! Who holds the memory: retainer paths from named statics, thread stacks
//! and thread-local storage to each site's blocks, what each root retains,
//! and the blocks nothing reaches, computed in a forked child while the
//! process keeps running.
//!
//! How: the parent prepares the root ranges (`roots`), forks (the tracker's
//! fork handlers hold every tracker lock across the fork, so the child's
//! copy of the live lists is consistent and the parent's pause is the fork
//! itself), and the child (`child`) copies the live blocks, scans every
//! aligned word of every root range and every block for values that point
//! into a block (at its start or inside it), walks the graph and writes the
//! result into a pipe. The parent reads it with a timeout, reaps the child,
//! maps raw sites to the sites of a snapshot and names the roots.
//!
//! Limits (documented on [`retainers`]): conservative scanning sees stale
//! words (dead stack frames, freed memory), which errs towards reachable;
//! memory leakscope does not record (C `malloc`, blocks aligned to 4 KiB or
//! more, the tracker's own tables) is not scanned in exact mode.

mod arena;
mod child;
mod roots;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::profile::{Frame, SiteStack, merge};
use crate::recorder::{self, Guard};
use crate::report::text::{human, labels_suffix};
use roots::RangeKind;

/// What holds memory: where a retainer path starts.
///
/// # Examples
///
/// ```
/// let root = leakscope::Root::Static { name: "app::AUDIT_LOG".into() };
/// assert_eq!(root.to_string(), "static app::AUDIT_LOG");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Root {
    /// A static of a loaded module: its demangled path from the module's
    /// symbol table, or `<module>+0x<offset>` when the module is stripped.
    Static {
        /// The static's name.
        name: String,
    },
    /// A live thread's stack (its frames, and the registers the scan saw
    /// for the calling thread).
    Stack {
        /// The thread's name, or its id when it has none.
        thread: String,
    },
    /// A live thread's static thread-local storage (`thread_local!`).
    ThreadLocal {
        /// The thread's name, or its id when it has none.
        thread: String,
    },
    /// Sampled mode: memory that is not a sampled block (an unsampled block
    /// or a free chunk: the scan cannot tell them apart).
    UnsampledHeap,
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Root::Static { name } => write!(f, "static {name}"),
            Root::Stack { thread } => write!(f, "stack of thread {thread}"),
            Root::ThreadLocal { thread } => write!(f, "thread-local storage of thread {thread}"),
            Root::UnsampledHeap => f.write_str("unsampled heap memory"),
        }
    }
}

/// Options of [`retainers_with`], a builder.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let opts = leakscope::RetainerOptions::new()
///     .paths_per_site(5)
///     .timeout(Duration::from_secs(30))
///     .min_age(Duration::from_millis(500));
/// # let _ = opts;
/// ```
#[derive(Clone, Debug)]
pub struct RetainerOptions {
    paths_per_site: usize,
    timeout: Duration,
    min_age: Duration,
    max_memory: u64,
    /// Judge only blocks born since (a `LeakCheck`'s start); 0 = all.
    born_since_us: u64,
}

impl Default for RetainerOptions {
    fn default() -> Self {
        RetainerOptions::new()
    }
}

impl RetainerOptions {
    /// The defaults: 3 paths per site, a 60 s timeout, a minimum age of 1 s.
    pub const fn new() -> RetainerOptions {
        RetainerOptions {
            paths_per_site: 3,
            timeout: Duration::from_secs(60),
            min_age: Duration::from_secs(1),
            max_memory: 2 << 30,
            born_since_us: 0,
        }
    }
    /// How much memory the scanning child may map beyond the address space
    /// it inherits (`RLIMIT_AS`); past it the scan fails with an error.
    /// Default 2 GiB.
    pub const fn max_memory(mut self, bytes: u64) -> RetainerOptions {
        self.max_memory = bytes;
        self
    }
    /// How many retainer paths to keep per site (largest first).
    pub const fn paths_per_site(mut self, n: usize) -> RetainerOptions {
        self.paths_per_site = n;
        self
    }
    /// How long the scanning child may take before it is killed and the
    /// call returns an error.
    pub const fn timeout(mut self, timeout: Duration) -> RetainerOptions {
        self.timeout = timeout;
        self
    }
    /// Blocks younger than this are never judged unreachable (their only
    /// pointer may sit in another thread's register at the fork).
    pub const fn min_age(mut self, age: Duration) -> RetainerOptions {
        self.min_age = age;
        self
    }
}

/// One retainer path: a root, and the sites of the blocks between it and
/// the site's blocks.
#[derive(Clone, Debug)]
pub struct RetainerPath {
    root: Root,
    via: Vec<u32>,
    bytes: u64,
}

impl RetainerPath {
    /// A path made up by a test of the code that reads paths.
    #[cfg(test)]
    pub(crate) fn made_up(root: Root, bytes: u64) -> RetainerPath {
        RetainerPath {
            root,
            via: Vec::new(),
            bytes,
        }
    }
    /// Where the path starts.
    pub fn root(&self) -> &Root {
        &self.root
    }
    /// The site ids of the blocks between the root and this site, root side
    /// first (runs of one site folded into one); empty when the root points
    /// straight at the site's blocks.
    pub fn via(&self) -> &[u32] {
        &self.via
    }
    /// How many of the site's live bytes this path reaches first.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// One site's live memory split by what holds it.
#[derive(Clone, Debug)]
pub struct SiteRetainers {
    site_id: u32,
    stack: SiteStack,
    live: u64,
    reachable: u64,
    unreachable: u64,
    unreachable_blocks: u64,
    paths: Vec<RetainerPath>,
}

impl SiteRetainers {
    /// The site's id, as [`Site::id`](crate::Site::id) of a snapshot.
    pub fn site_id(&self) -> u32 {
        self.site_id
    }
    /// The site's frames, innermost first.
    pub fn frames(&self) -> &[Frame] {
        self.stack.frames()
    }
    /// The frame that owns the allocation (the first frame outside the
    /// standard library), as [`Site::owner`](crate::Site::owner).
    pub fn owner(&self) -> Option<&Frame> {
        self.stack.owner()
    }
    /// The site's labels.
    pub fn labels(&self) -> &[(String, String)] {
        self.stack.labels()
    }
    /// Live bytes (estimated in sampled mode).
    pub fn live_bytes(&self) -> u64 {
        self.live
    }
    /// Live bytes some root reaches.
    pub fn reachable_bytes(&self) -> u64 {
        self.reachable
    }
    /// Live bytes no root reaches (blocks older than the minimum age).
    pub fn unreachable_bytes(&self) -> u64 {
        self.unreachable
    }
    /// Live blocks no root reaches.
    pub fn unreachable_blocks(&self) -> u64 {
        self.unreachable_blocks
    }
    /// The retainer paths, largest first.
    pub fn paths(&self) -> &[RetainerPath] {
        &self.paths
    }
}

/// What one root retains: the bytes freed if it let go (the retained size
/// of its dominator subtree, as Eclipse MAT defines it).
#[derive(Clone, Debug)]
pub struct RootRetained {
    root: Root,
    retained: u64,
    sites: Vec<(u32, u64)>,
}

impl RootRetained {
    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }
    /// Bytes only this root reaches.
    pub fn retained_bytes(&self) -> u64 {
        self.retained
    }
    /// The sites among what it retains: `(site id, bytes)`, largest first.
    pub fn sites(&self) -> &[(u32, u64)] {
        &self.sites
    }
}

/// A set of unreachable blocks that refer to each other (connected, in
/// either direction): one leak.
#[derive(Clone, Debug)]
pub struct UnreachableLeak {
    bytes: u64,
    blocks: u64,
    sites: Vec<(u32, u64)>,
}

impl UnreachableLeak {
    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    /// Its sites: `(site id, bytes)`, largest first.
    pub fn sites(&self) -> &[(u32, u64)] {
        &self.sites
    }
}

/// The result of [`retainers`]: every site's holders, every root's retained
/// size, the unreachable blocks, and the scan's own figures.
#[derive(Clone, Debug)]
pub struct Retainers {
    sites: Vec<SiteRetainers>,
    roots: Vec<RootRetained>,
    leaks: Vec<UnreachableLeak>,
    unreachable: u64,
    young: u64,
    sampled: bool,
    pause: Duration,
    scan_time: Duration,
    wall: Duration,
    bytes_scanned: u64,
    blocks: u64,
    child_peak: u64,
}

impl Retainers {
    /// Every site with live blocks, largest live first.
    pub fn sites(&self) -> &[SiteRetainers] {
        &self.sites
    }
    /// The site with this id ([`Site::id`](crate::Site::id)).
    pub fn site(&self, id: u32) -> Option<&SiteRetainers> {
        self.sites.iter().find(|s| s.site_id == id)
    }
    /// Every root that retains something, largest retained first.
    pub fn roots(&self) -> &[RootRetained] {
        &self.roots
    }
    /// The unreachable blocks, grouped into leaks, largest first.
    pub fn unreachable(&self) -> &[UnreachableLeak] {
        &self.leaks
    }
    /// Bytes no root reaches (blocks older than the minimum age).
    pub fn unreachable_bytes(&self) -> u64 {
        self.unreachable
    }
    /// Bytes of blocks no root reaches but younger than the minimum age
    /// (not judged).
    pub fn young_bytes(&self) -> u64 {
        self.young
    }
    /// Whether the scan ran in sampled mode (sample interval above 1).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }
    /// How long the calling thread waited for the fork (the parent's pause).
    pub fn pause(&self) -> Duration {
        self.pause
    }
    /// How long the child took to scan and walk the graph.
    pub fn scan_time(&self) -> Duration {
        self.scan_time
    }
    /// The whole call's time.
    pub fn wall_time(&self) -> Duration {
        self.wall
    }
    /// Bytes of memory the child scanned (roots and blocks).
    pub fn bytes_scanned(&self) -> u64 {
        self.bytes_scanned
    }
    /// Recorded blocks in the graph.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    /// The child's peak resident memory (`ru_maxrss`; it includes pages
    /// shared with the parent that the child touched).
    pub fn child_peak_bytes(&self) -> u64 {
        self.child_peak
    }
}

impl crate::LeakCheck {
    /// Panics if a block allocated since the check started is unreachable
    /// now: LeakSanitizer's question (a leak nothing points to any more),
    /// asked while the process runs. Blocks still held (a cache, a static)
    /// are not reported; use [`finish`](crate::LeakCheck::finish) for those.
    /// Every such block is judged, however young. Forks a scan
    /// ([`retainers`]), so it needs Linux; best with `sample_interval(1)`.
    ///
    /// # Panics
    ///
    /// With a report of the unreachable leaks and their sites, or when the
    /// scan fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let check = leakscope::LeakCheck::start();
    /// let kept = vec![1u8; 100]; // reachable: fine
    /// check.assert_no_unreachable();
    /// # drop(kept);
    /// ```
    #[track_caller]
    pub fn assert_no_unreachable(&self) {
        let mut opts = RetainerOptions::new().min_age(Duration::ZERO);
        opts.born_since_us = self.start_us();
        let r = match retainers_with(opts) {
            Ok(r) => r,
            Err(e) => panic!("leak check: the retainer scan failed: {e}"),
        };
        if r.unreachable_bytes() > 0 {
            let mut msg = format!(
                "leak check: {} unreachable in {} leak(s) allocated inside the check\n",
                human(r.unreachable_bytes() as f64),
                r.unreachable().len()
            );
            for l in r.unreachable() {
                msg.push_str(&format!(
                    "  {} in {} block(s):\n",
                    human(l.bytes as f64),
                    l.blocks
                ));
                for &(s, b) in &l.sites {
                    let name = r.site_title(s);
                    msg.push_str(&format!("      {:>10}  {name}\n", human(b as f64)));
                }
            }
            panic!("{msg}");
        }
    }
}

/// One scan at a time per process.
static BUSY: AtomicBool = AtomicBool::new(false);
const BUSY_MSG: &str = "another retainer scan is running";

/// Whether `e` is the refusal of a second concurrent scan (the HTTP route
/// answers it with 429).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn is_busy(e: &Error) -> bool {
    matches!(e, Error::Retainers(m) if m == BUSY_MSG)
}

/// Finds what holds the live heap, with the default [`RetainerOptions`].
///
/// In exact mode (sample interval 1) every recorded block is a node; in
/// sampled mode only sampled blocks are, and every word of writable
/// anonymous memory outside them is the root [`Root::UnsampledHeap`], so a
/// missing sample never makes a false leak. Conservative scanning errs
/// towards "reachable" (stale words in dead stack frames or freed memory);
/// memory leakscope does not record (C `malloc`, blocks aligned to 4 KiB or
/// more) is not scanned in exact mode. Linux only.
///
/// # Errors
///
/// When another scan is running, the fork or the pipe fails, the child runs
/// past the timeout (it is killed and reaped) or dies, or the platform is not
/// Linux.
///
/// # Examples
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();
///
/// let held = leakscope::retainers().unwrap();
/// println!("{held}"); // holders first: "static app::AUDIT_LOG retains 65.0 MiB in 3 sites"
/// ```
pub fn retainers() -> Result<Retainers, Error> {
    retainers_with(RetainerOptions::new())
}

/// [`retainers`] with options.
///
/// # Errors
///
/// As [`retainers`].
///
/// # Examples
///
/// ```no_run
/// let held = leakscope::retainers_with(leakscope::RetainerOptions::new().paths_per_site(1));
/// ```
pub fn retainers_with(opts: RetainerOptions) -> Result<Retainers, Error> {
    if BUSY.swap(true, Ordering::Acquire) {
        return Err(Error::Retainers(BUSY_MSG.into()));
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            BUSY.store(false, Ordering::Release);
        }
    }
    let _release = Release;
    recorder::register_current_thread();
    Guard::run(|| scan(&opts))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn scan(_: &RetainerOptions) -> Result<Retainers, Error> {
    Err(Error::Retainers("retainer scans need Linux".into()))
}

/// Thread names by tid, from `/proc/self/task/<tid>/comm`; a thread whose
/// name is the process's (inherited, never set) is named by its id.
fn thread_name(tid: u32, names: &mut HashMap<u32, String>) -> String {
    names
        .entry(tid)
        .or_insert_with(|| {
            let pid = std::process::id();
            let comm = |t: u32| {
                std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .ok()
            };
            if tid == pid {
                return "'main'".to_string();
            }
            match comm(tid) {
                Some(n) if Some(&n) != comm(pid).as_ref() => format!("'{n}'"),
                _ => format!("{tid}"),
            }
        })
        .clone()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn scan(opts: &RetainerOptions) -> Result<Retainers, Error> {
    let start = Instant::now();
    let threads = recorder::threads();
    let (mut ranges, kinds) = roots::plan(&threads);
    let sampled = recorder::current_interval() > 1;
    let young_after_us = recorder::now_us().saturating_sub(opts.min_age.as_micros() as u64);
    // SAFETY: `gettid` has no preconditions.
    let me = unsafe { libc::gettid() } as u32;

    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    let (rd, wr) = (fds[0], fds[1]);
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: a descriptor we own, closed once.
            unsafe { libc::close(self.0) };
        }
    }
    let rd = Fd(rd);
    let mut wr = Some(Fd(wr));

    // The calling thread's callee-saved registers, stored where its stack
    // scan starts, so a pointer held only in a register is seen. Everything
    // below this mark is the child's own frames (never scanned: stale words
    // there would be the scan's own).
    let mut regs = [0usize; 8];
    spill_registers(&mut regs);
    let mark = regs.as_ptr() as usize;
    for (r, k) in ranges.iter_mut().zip(&kinds) {
        if matches!(k, RangeKind::Stack(t) if *t == me) && r.start < mark && mark < r.end {
            r.start = mark;
        }
    }
    let plan = child::Plan {
        ranges,
        sampled,
        young_after_us,
        born_since_us: opts.born_since_us,
    };

    let fork_start = Instant::now();
    // SAFETY: the child runs only `child::run` (which allocates through the
    // inner allocator or its own mappings; the fork handlers left no lock
    // held), writes to the pipe and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    let pause = fork_start.elapsed();
    if pid < 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        std::hint::black_box(&regs);
        limit_memory(opts.max_memory);
        let wfd = wr.as_ref().map_or(-1, |f| f.0);
        let code = match child::run(&plan) {
            Some(words) => {
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                if write_all(wfd, &bytes) { 0 } else { 2 }
            }
            None => 3,
        };
        // SAFETY: leaves the child at once, running no destructor or
        // `atexit` handler of the parent's.
        unsafe { libc::_exit(code) };
    }
    drop(wr.take());
    let read = read_with_timeout(rd.0, start + opts.timeout);
    drop(rd);
    let status = reap(pid, read.is_err());
    let bytes = read?;
    if !matches!(status, Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0) {
        return Err(Error::Retainers(format!(
            "the scanning child failed (status {status:?})"
        )));
    }
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    decode(&words, &kinds, sampled, opts, pause, start)
        .ok_or_else(|| Error::Retainers("the scanning child's result is malformed".into()))
}

/// In the child: caps its address space at what it inherited plus
/// `budget` (`RLIMIT_AS`), so a huge graph fails the scan (an allocation
/// failure ends the child, and the parent returns an error) instead of
/// pushing the machine into swap.
fn limit_memory(budget: u64) {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; reads into our stack buffer; the
    // descriptor is closed once.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return;
    }
    let pages: u64 = buf[..n as usize]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0u64, |v, c| {
            v.saturating_mul(10).saturating_add(u64::from(c - b'0'))
        });
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let cap = pages.saturating_mul(page).saturating_add(budget);
    let lim = libc::rlimit {
        rlim_cur: cap,
        rlim_max: cap,
    };
    // SAFETY: sets this (child) process's own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
}

/// Stores the callee-saved registers into `regs` (x86-64 and aarch64; a
/// no-op elsewhere, where the values are on the stack anyway once spilled).
#[inline(never)]
fn spill_registers(regs: &mut [usize; 8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: stores six registers into the array we own.
    unsafe {
        std::arch::asm!(
            "mov [{0}], rbx", "mov [{0} + 8], rbp", "mov [{0} + 16], r12",
            "mov [{0} + 24], r13", "mov [{0} + 32], r14", "mov [{0} + 40], r15",
            in(reg) regs.as_mut_ptr(), options(nostack, preserves_flags)
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: stores eight registers into the array we own.
    unsafe {
        std::arch::asm!(
            "stp x19, x20, [{0}]", "stp x21, x22, [{0}, #16]",
            "stp x23, x24, [{0}, #32]", "stp x25, x26, [{0}, #48]",
            in(reg) regs.as_mut_ptr(), options(nostack, preserves_flags)
        );
    }
    std::hint::black_box(regs);
}

fn write_all(fd: i32, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: writes from our buffer.
        let n = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Reads the pipe to its end, or fails at `deadline`.
fn read_with_timeout(fd: i32, deadline: Instant) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Retainers(
                "the scan timed out (the child was killed)".into(),
            ));
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe {
            libc::poll(
                &mut p,
                1,
                left.as_millis().clamp(1, i32::MAX as u128) as i32,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Io(e));
        }
        if r == 0 {
            continue;
        }
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Io(e));
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Waits for the child (killing it first if `kill`); its wait status.
fn reap(pid: libc::pid_t, kill: bool) -> Option<i32> {
    if kill {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Turns the child's words into the report.
fn decode(
    w: &[u64],
    kinds: &[RangeKind],
    sampled: bool,
    opts: &RetainerOptions,
    pause: Duration,
    start: Instant,
) -> Option<Retainers> {
    let mut it = w.iter().copied();
    let mut next = || it.next();
    if next()? != child::MAGIC {
        return None;
    }
    let blocks = next()?;
    let bytes_scanned = next()?;
    let scan_time = Duration::from_micros(next()?);
    let child_peak = next()?;
    let young = next()?;

    let mut names = HashMap::new();
    let n_roots = next()? as usize;
    let mut roots: Vec<Root> = Vec::with_capacity(n_roots);
    for _ in 0..n_roots {
        let key = next()?;
        let range = (key >> child::KEY_SHIFT) as usize;
        let off = (key & ((1 << child::KEY_SHIFT) - 1)) as usize;
        roots.push(match kinds.get(range) {
            None => Root::UnsampledHeap,
            Some(RangeKind::Static(name)) => Root::Static {
                name: name.to_string(),
            },
            Some(RangeKind::Words {
                module,
                base_offset,
            }) => Root::Static {
                name: format!("{module}+{:#x}", base_offset + off),
            },
            Some(RangeKind::Tls(t)) => Root::ThreadLocal {
                thread: thread_name(*t, &mut names),
            },
            Some(RangeKind::Stack(t)) => Root::Stack {
                thread: thread_name(*t, &mut names),
            },
        });
    }
    let n_nodes = next()? as usize;
    let mut nodes = Vec::with_capacity(n_nodes);
    for _ in 0..n_nodes {
        let v = next()?;
        nodes.push(((v >> 32) as u32, v as u32));
    }
    let mut take = |k: usize| -> Option<Vec<Vec<u64>>> {
        let n = next()? as usize;
        (0..n)
            .map(|_| (0..k).map(|_| next()).collect::<Option<Vec<u64>>>())
            .collect()
    };
    let site_rows = take(6)?;
    let path_rows = take(3)?;
    let retained_rows = take(2)?;
    let root_site_rows = take(3)?;
    let comp_rows = take(3)?;
    let comp_site_rows = take(3)?;

    // Raw site ids -> the sites of a snapshot.
    let (raw_stacks, raw_labels) = recorder::site_stacks();
    let merged = merge::merge(&raw_stacks, &raw_labels);
    let site_of = |raw: u64| merged.of_raw.get(raw as usize).copied();

    // A path node's via list (site ids, root side first) and root.
    let path_of = |mut node: u32| -> Option<(u32, Vec<u32>)> {
        let mut via = Vec::new();
        loop {
            let &(parent, val) = nodes.get(node as usize)?;
            if parent == u32::MAX {
                via.reverse();
                return Some((val, via));
            }
            let s = site_of(u64::from(val))?;
            if via.last() != Some(&s) {
                via.push(s);
            }
            node = parent;
        }
    };

    #[derive(Default)]
    struct Acc {
        live: u64,
        reachable: u64,
        unreachable: u64,
        unreachable_blocks: u64,
        paths: HashMap<(u32, Vec<u32>), u64>,
    }
    let mut by_site: HashMap<u32, Acc> = HashMap::new();
    for r in &site_rows {
        let Some(s) = site_of(r[0]) else { continue };
        let a = by_site.entry(s).or_default();
        a.live += r[1];
        a.reachable += r[3];
        a.unreachable += r[4];
        a.unreachable_blocks += r[5];
    }
    for r in &path_rows {
        let Some(s) = site_of(r[0]) else { continue };
        let (root, mut via) = path_of(r[1] as u32)?;
        while via.last() == Some(&s) {
            via.pop();
        }
        *by_site
            .entry(s)
            .or_default()
            .paths
            .entry((root, via))
            .or_default() += r[2];
    }
    let mut sites: Vec<SiteRetainers> = by_site
        .into_iter()
        .filter_map(|(id, a)| {
            let mut paths: Vec<RetainerPath> = a
                .paths
                .into_iter()
                .filter_map(|((root, via), bytes)| {
                    Some(RetainerPath {
                        root: roots.get(root as usize)?.clone(),
                        via,
                        bytes,
                    })
                })
                .collect();
            paths.sort_by(|x, y| {
                y.bytes
                    .cmp(&x.bytes)
                    .then_with(|| x.via.len().cmp(&y.via.len()))
            });
            paths.truncate(opts.paths_per_site);
            Some(SiteRetainers {
                site_id: id,
                stack: merged.stacks.get(id as usize)?.clone(),
                live: a.live,
                reachable: a.reachable,
                unreachable: a.unreachable,
                unreachable_blocks: a.unreachable_blocks,
                paths,
            })
        })
        .collect();
    sites.sort_by(|a, b| b.live.cmp(&a.live).then(a.site_id.cmp(&b.site_id)));

    // Roots: several root keys can name one root (a static's words, one
    // `module+0x..` per word): sum them by root.
    let mut retained: HashMap<Root, (u64, HashMap<u32, u64>)> = HashMap::new();
    for r in &retained_rows {
        let root = roots.get(r[0] as usize)?.clone();
        retained.entry(root).or_default().0 += r[1];
    }
    for r in &root_site_rows {
        let root = roots.get(r[0] as usize)?.clone();
        let Some(s) = site_of(r[1]) else { continue };
        *retained.entry(root).or_default().1.entry(s).or_default() += r[2];
    }
    let mut roots_out: Vec<RootRetained> = retained
        .into_iter()
        .map(|(root, (bytes, sites))| RootRetained {
            root,
            retained: bytes,
            sites: sorted(sites),
        })
        .collect();
    roots_out.sort_by(|a, b| {
        b.retained
            .cmp(&a.retained)
            .then_with(|| a.root.to_string().cmp(&b.root.to_string()))
    });

    let mut comps: HashMap<u64, (u64, u64, HashMap<u32, u64>)> = HashMap::new();
    for r in &comp_rows {
        let e = comps.entry(r[0]).or_default();
        e.0 += r[1];
        e.1 += r[2];
    }
    for r in &comp_site_rows {
        let Some(s) = site_of(r[1]) else { continue };
        *comps.entry(r[0]).or_default().2.entry(s).or_default() += r[2];
    }
    let mut leaks: Vec<UnreachableLeak> = comps
        .into_values()
        .map(|(bytes, blocks, sites)| UnreachableLeak {
            bytes,
            blocks,
            sites: sorted(sites),
        })
        .collect();
    leaks.sort_by_key(|l| std::cmp::Reverse(l.bytes));
    let unreachable = leaks.iter().map(|l| l.bytes).sum();
    Some(Retainers {
        sites,
        roots: roots_out,
        leaks,
        unreachable,
        young,
        sampled,
        pause,
        scan_time,
        wall: start.elapsed(),
        bytes_scanned,
        blocks,
        child_peak,
    })
}

fn sorted(m: HashMap<u32, u64>) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// A site's short name for the report: its owner frame's function.
fn site_name(s: &SiteRetainers) -> String {
    s.owner().or_else(|| s.frames().first()).map_or_else(
        || format!("site {}", s.site_id),
        |f| f.function().to_string(),
    )
}

impl Retainers {
    /// A site as the reports name it: its owner, id and labels
    /// (`app::remember (site 21, tenant=acme)`); one handler's sites for
    /// three tenants share the owner.
    pub(crate) fn site_title(&self, id: u32) -> String {
        self.site(id)
            .map_or_else(|| format!("site {id}"), site_title)
    }
}

/// [`Retainers::site_title`] of a site at hand.
fn site_title(s: &SiteRetainers) -> String {
    format!(
        "{} (site {}{})",
        site_name(s),
        s.site_id,
        labels_suffix(s.labels())
    )
}

/// Sites shown with their paths in the text report.
const TEXT_SITES: usize = 10;
/// Roots shown in the text report.
const TEXT_ROOTS: usize = 10;

impl fmt::Display for Retainers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |id: u32| self.site_title(id);
        writeln!(
            f,
            "Who holds the heap ({} mode: {} blocks, {} scanned in {:.0?}, fork pause {:.1?})",
            if self.sampled { "sampled" } else { "exact" },
            self.blocks,
            human(self.bytes_scanned as f64),
            self.scan_time,
            self.pause,
        )?;
        writeln!(f, "\nHolders (what each root alone keeps alive):")?;
        if self.roots.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for r in self.roots.iter().take(TEXT_ROOTS) {
            let n = r.sites.len();
            writeln!(
                f,
                "  {} retains {} in {} site{}",
                r.root,
                human(r.retained as f64),
                n,
                if n == 1 { "" } else { "s" }
            )?;
            for &(s, b) in r.sites.iter().take(3) {
                writeln!(f, "      {:>10}  {}", human(b as f64), name(s))?;
            }
        }
        writeln!(f, "\nLargest sites and their retainer paths:")?;
        for s in self.sites.iter().take(TEXT_SITES) {
            writeln!(
                f,
                "  {}: {} live, {} reachable, {} unreachable",
                site_title(s),
                human(s.live as f64),
                human(s.reachable as f64),
                human(s.unreachable as f64)
            )?;
            for p in &s.paths {
                write!(f, "      {:>10}  {}", human(p.bytes as f64), p.root)?;
                for v in &p.via {
                    write!(f, " -> {}", name(*v))?;
                }
                writeln!(f)?;
            }
        }
        writeln!(
            f,
            "\nUnreachable (nothing points to them from any root): {}",
            human(self.unreachable as f64)
        )?;
        for l in self.leaks.iter().take(TEXT_SITES) {
            writeln!(
                f,
                "  {} in {} block{}",
                human(l.bytes as f64),
                l.blocks,
                if l.blocks == 1 { "" } else { "s" }
            )?;
            for &(s, b) in l.sites.iter().take(3) {
                writeln!(f, "      {:>10}  {}", human(b as f64), name(s))?;
            }
        }
        if self.young > 0 {
            writeln!(
                f,
                "  (plus {} in blocks too young to judge)",
                human(self.young as f64)
            )?;
        }
        Ok(())
    }
}

#[cfg(feature = "json")]
impl Retainers {
    /// Writes the result as JSON: `{"version":1, "kind":"retainers",
    /// "sampled", "unreachable_bytes", "scan": {pause_us, scan_us, wall_us,
    /// bytes_scanned, blocks, child_peak_bytes}, "roots": [{root,
    /// retained_bytes, sites: [{site, bytes}]}], "sites": [{site, function,
    /// live_bytes, reachable_bytes, unreachable_bytes, unreachable_blocks,
    /// paths: [{root, via, bytes}]}], "unreachable": [{bytes, blocks,
    /// sites}]}`.
    ///
    /// # Errors
    ///
    /// When writing fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut out = Vec::new();
    /// leakscope::retainers().unwrap().write_json(&mut out).unwrap();
    /// ```
    pub fn write_json<W: std::io::Write>(&self, w: W) -> Result<(), Error> {
        use serde_json::json;
        let pairs = |v: &[(u32, u64)]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|&(s, b)| json!({"site": s, "bytes": b}))
                .collect()
        };
        let value = json!({
            "version": 1,
            "kind": "retainers",
            "sampled": self.sampled,
            "unreachable_bytes": self.unreachable,
            "scan": {
                "pause_us": self.pause.as_micros() as u64,
                "scan_us": self.scan_time.as_micros() as u64,
                "wall_us": self.wall.as_micros() as u64,
                "bytes_scanned": self.bytes_scanned,
                "blocks": self.blocks,
                "child_peak_bytes": self.child_peak,
            },
            "roots": self.roots.iter().map(|r| json!({
                "root": r.root.to_string(),
                "retained_bytes": r.retained,
                "sites": pairs(&r.sites),
            })).collect::<Vec<_>>(),
            "sites": self.sites.iter().map(|s| json!({
                "site": s.site_id,
                "function": site_name(s),
                "live_bytes": s.live,
                "reachable_bytes": s.reachable,
                "unreachable_bytes": s.unreachable,
                "unreachable_blocks": s.unreachable_blocks,
                "paths": s.paths.iter().map(|p| json!({
                    "root": p.root.to_string(),
                    "via": p.via,
                    "bytes": p.bytes,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "unreachable": self.leaks.iter().map(|l| json!({
                "bytes": l.bytes, "blocks": l.blocks, "sites": pairs(&l.sites),
            })).collect::<Vec<_>>(),
        });
        serde_json::to_writer(w, &value).map_err(|e| Error::Encode(e.to_string()))
    }
}
