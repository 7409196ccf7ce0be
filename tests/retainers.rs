//! `retainers()` in exact mode, with real forks: what holds each site's
//! blocks, what nothing holds, and many scans under load.
//!
//! One `#[test]` runs the scenarios in order, those that judge leaks first:
//! the whole stack mapping of every live thread is scanned, dead frames
//! included, and a test harness thread started later could reuse the cached
//! stack of a thread that made a leak (and hold its stale pointers). Leaks are made on threads that then exit (an exited
//! thread's stack is no longer a root), and their stack is wiped first so
//! that a later thread reusing the cached stack sees no stale pointer.

use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use leakscope::{RetainerOptions, Retainers, Root, Snapshot};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

static SERIAL: Mutex<()> = Mutex::new(());

/// The seed program's shape.
static GLOBAL_SLICE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// A static whose blocks must stay reachable while other blocks leak.
#[allow(clippy::vec_box)] // separate blocks, each reachable only through the static
static KEEP: Mutex<Vec<Box<[u8; 300]>>> = Mutex::new(Vec::new());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scan() -> Retainers {
    leakscope::retainers_with(RetainerOptions::new().min_age(Duration::ZERO)).expect("scan")
}

/// The ids of the snapshot sites whose stack goes through `name`.
fn site_ids(snap: &Snapshot, name: &str) -> Vec<u32> {
    snap.sites()
        .iter()
        .filter(|s| s.live_bytes() > 0 && s.frames().iter().any(|f| f.function().contains(name)))
        .map(|s| s.id())
        .collect()
}

fn one_site(snap: &Snapshot, name: &str) -> u32 {
    let ids = site_ids(snap, name);
    assert_eq!(ids.len(), 1, "sites through {name}: {ids:?}");
    ids[0]
}

/// Overwrites a large part of this thread's stack, so no stale pointer stays
/// in it for a thread that reuses the stack later.
#[inline(never)]
fn wipe_stack() {
    let mut junk = [0usize; 16 * 1024];
    black_box(&mut junk);
}

#[inline(never)]
fn generate_string(i: usize) -> String {
    let mut s = String::with_capacity(100);
    for d in 0..100 {
        s.push(char::from(b'0' + ((i + d) % 10) as u8));
    }
    s
}

#[inline(never)]
fn fill_global_slice() {
    let mut v = GLOBAL_SLICE.lock().unwrap();
    if !v.is_empty() {
        return; // filled by another test already
    }
    for i in 0..1000 {
        v.push(generate_string(i));
    }
}

fn the_seed_shape_is_reached_exactly_from_its_static() {
    let _s = serial();
    thread::spawn(|| {
        fill_global_slice();
        wipe_stack();
    })
    .join()
    .unwrap();
    let snap = leakscope::snapshot();
    let strings = one_site(&snap, "generate_string");
    let r = scan();
    let site = r.site(strings).expect("the strings' site");
    assert_eq!(site.live_bytes(), 100 * 1000);
    assert_eq!(site.reachable_bytes(), 100 * 1000);
    assert_eq!(site.unreachable_bytes(), 0);
    let path = &site.paths()[0];
    assert_eq!(path.bytes(), 100 * 1000, "{r}");
    assert_eq!(
        path.root(),
        &Root::Static {
            name: "retainers::GLOBAL_SLICE".into()
        },
        "{r}"
    );
    // Through the Vec's buffer, one site.
    assert_eq!(path.via().len(), 1, "{r}");
    let buffer = r.site(path.via()[0]).expect("the buffer's site");
    assert!(
        buffer
            .frames()
            .iter()
            .any(|f| f.function().contains("fill_global_slice"))
    );
    assert_eq!(buffer.paths()[0].via(), &[] as &[u32]);
    // The holders' row: the static retains the strings and the buffer.
    let holder = r
        .roots()
        .iter()
        .find(|x| x.root() == path.root())
        .expect("the static's row");
    assert_eq!(holder.retained_bytes(), 100 * 1000 + buffer.live_bytes());
    let text = r.to_string();
    assert!(
        text.contains("static retainers::GLOBAL_SLICE retains"),
        "{text}"
    );
}

#[derive(Debug)]
struct Node {
    next: RefCell<Option<Rc<Node>>>,
    _pad: [u8; 500],
}

#[inline(never)]
fn leak_box() {
    let b: &'static mut [u8; 1000] = Box::leak(Box::new([7u8; 1000]));
    black_box(b);
}

#[inline(never)]
fn forget_vec() {
    std::mem::forget(black_box(vec![1u8; 2000]));
}

#[inline(never)]
fn rc_cycle() {
    let a = Rc::new(Node {
        next: RefCell::new(None),
        _pad: [0; 500],
    });
    let b = Rc::new(Node {
        next: RefCell::new(Some(a.clone())),
        _pad: [0; 500],
    });
    *a.next.borrow_mut() = Some(b.clone());
    black_box((&a, &b));
}

#[inline(never)]
fn keep_some() {
    let mut k = KEEP.lock().unwrap();
    for _ in 0..10 {
        k.push(Box::new([3u8; 300]));
    }
}

fn leaked_forgotten_and_cyclic_blocks_are_unreachable_to_the_byte() {
    let _s = serial();
    thread::spawn(|| {
        leak_box();
        forget_vec();
        rc_cycle();
        keep_some();
        wipe_stack();
    })
    .join()
    .unwrap();
    let snap = leakscope::snapshot();
    let r = scan();
    let leaked = r.site(one_site(&snap, "leak_box")).unwrap();
    assert_eq!(leaked.unreachable_bytes(), 1000, "{r}");
    assert_eq!(leaked.unreachable_blocks(), 1);
    let forgotten = r.site(one_site(&snap, "forget_vec")).unwrap();
    assert_eq!(
        forgotten.unreachable_bytes(),
        2000,
        "{:?}",
        forgotten.paths()
    );
    // `Rc::new` on two lines: two sites.
    let cycle_sites = site_ids(&snap, "rc_cycle");
    let rc_box = (2 * std::mem::size_of::<usize>() + std::mem::size_of::<Node>()) as u64;
    let (bytes, blocks) = cycle_sites.iter().fold((0, 0), |(b, n), &id| {
        let s = r.site(id).unwrap();
        (b + s.unreachable_bytes(), n + s.unreachable_blocks())
    });
    assert_eq!((bytes, blocks), (2 * rc_box, 2), "{r}");
    // The cycle is one leak of two blocks.
    let leak = r
        .unreachable()
        .iter()
        .find(|l| l.sites().iter().any(|&(s, _)| s == cycle_sites[0]))
        .unwrap();
    assert_eq!((leak.bytes(), leak.blocks()), (2 * rc_box, 2), "{r}");
    // The static's boxes stay reachable.
    let kept = site_ids(&snap, "keep_some")
        .into_iter()
        .filter_map(|id| r.site(id))
        .find(|s| s.live_bytes() == 3000)
        .expect("the boxes' site");
    assert_eq!(kept.unreachable_bytes(), 0, "{r}");
    assert!(
        kept.paths().iter().any(|p| p.root()
            == &Root::Static {
                name: "retainers::KEEP".into()
            }),
        "{r}"
    );
}

thread_local! {
    static TL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[inline(never)]
fn stack_box() -> Box<[u8; 4000]> {
    Box::new([5u8; 4000])
}

#[inline(never)]
fn fill_thread_local() {
    TL.with(|t| t.borrow_mut().extend_from_slice(&[9u8; 5000]));
}

fn a_threads_stack_and_its_thread_local_are_named_roots() {
    let _s = serial();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = thread::Builder::new()
        .name("holder".into())
        .spawn(move || {
            fill_thread_local();
            let b = stack_box();
            black_box(&b);
            ready_tx.send(()).unwrap();
            done_rx.recv().unwrap();
            black_box(&b);
        })
        .unwrap();
    ready_rx.recv().unwrap();
    let snap = leakscope::snapshot();
    let r = scan();
    let on_stack = r.site(one_site(&snap, "stack_box")).unwrap();
    assert!(
        on_stack.paths().iter().any(|p| p.root()
            == &Root::Stack {
                thread: "'holder'".into()
            }),
        "{r}"
    );
    assert_eq!(on_stack.unreachable_bytes(), 0);
    let tl = r.site(one_site(&snap, "fill_thread_local")).unwrap();
    assert!(
        tl.paths().iter().any(|p| p.root()
            == &Root::ThreadLocal {
                thread: "'holder'".into()
            }),
        "{:?}",
        tl.paths()
    );
    assert_eq!(
        r.roots()
            .iter()
            .filter(|x| x.root().to_string() == "stack of thread 'holder'")
            .count(),
        1
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

fn many_scans_while_threads_allocate_leave_no_child_behind() {
    let _s = serial();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut keep = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    keep.push(vec![0u8; 64]);
                    if keep.len() > 1000 {
                        keep.clear();
                    }
                }
            })
        })
        .collect();
    let mut ok = 0;
    for _ in 0..200 {
        let r = leakscope::retainers().expect("scan under load");
        ok += (r.blocks() > 0) as u32;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(ok, 200);
    // No child left: not running, not a zombie.
    // SAFETY: a non-blocking wait for any child; we start none elsewhere.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(r, -1, "a child is left");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ECHILD)
    );
}

fn a_second_concurrent_scan_is_refused_and_a_timeout_is_an_error() {
    let _s = serial();
    let r = leakscope::retainers_with(RetainerOptions::new().timeout(Duration::ZERO));
    let err = r.expect_err("a zero timeout fails").to_string();
    assert!(err.contains("timed out"), "{err}");
    // Concurrent scans: every one either succeeds or is refused, and at
    // least one succeeds.
    let results: Vec<Result<Retainers, leakscope::Error>> = thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(leakscope::retainers)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().any(|r| r.is_ok()));
    for r in &results {
        if let Err(e) = r {
            assert!(e.to_string().contains("another retainer scan"), "{e}");
        }
    }
}

#[cfg(feature = "http")]
fn the_http_route_serves_text_and_json_and_refuses_a_concurrent_scan() {
    let _s = serial();
    thread::spawn(|| {
        fill_global_slice();
        wipe_stack();
    })
    .join()
    .unwrap();
    let r = leakscope::http::respond("GET", "/debug/leakscope/retainers");
    assert_eq!(r.status(), 200);
    let text = String::from_utf8_lossy(r.body()).into_owned();
    assert!(
        text.contains("static retainers::GLOBAL_SLICE retains"),
        "{text}"
    );
    let r = leakscope::http::respond("GET", "/debug/leakscope/retainers?format=json");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["kind"], "retainers");
    assert!(
        v["roots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["root"] == "static retainers::GLOBAL_SLICE")
    );
    let bad = leakscope::http::respond("GET", "/debug/leakscope/retainers?format=xml");
    assert_eq!(bad.status(), 400);
    // While another thread scans in a loop, a request gets 200 or 429.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let saw_429 = thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = leakscope::retainers();
            }
        });
        let mut saw = false;
        for _ in 0..200 {
            let r = leakscope::http::respond("GET", "/debug/leakscope/retainers");
            assert!(r.status() == 200 || r.status() == 429, "{}", r.status());
            if r.status() == 429 {
                assert!(String::from_utf8_lossy(r.body()).contains("another retainer scan"));
                saw = true;
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        saw
    });
    assert!(saw_429);
}

fn a_child_out_of_memory_is_an_error() {
    let _s = serial();
    let r = leakscope::retainers_with(RetainerOptions::new().max_memory(0));
    assert!(r.is_err());
    // And the next scan works.
    leakscope::retainers().unwrap();
}

#[inline(never)]
fn leak_in_check() {
    std::mem::forget(black_box(vec![2u8; 777]));
}

fn a_leak_check_asserts_nothing_it_allocated_is_unreachable() {
    let _s = serial();
    // Held, not leaked: passes.
    let check = leakscope::LeakCheck::start();
    thread::spawn(|| {
        keep_some();
        wipe_stack();
    })
    .join()
    .unwrap();
    check.assert_no_unreachable();
    // Forgotten: fails, naming the site and the bytes.
    let check = leakscope::LeakCheck::start();
    thread::spawn(|| {
        leak_in_check();
        wipe_stack();
    })
    .join()
    .unwrap();
    // Silence the expected panic: the default hook would capture a backtrace
    // (with RUST_BACKTRACE set), whose symbolization allocates tens of MiB
    // that every later scan of this process would then walk.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let err = std::panic::catch_unwind(|| check.assert_no_unreachable());
    std::panic::set_hook(hook);
    let err = err.unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("777 B in 1 block(s)"), "{msg}");
    assert!(msg.contains("leak_in_check"), "{msg}");
}

static GROWING: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn grow_a_bit() {
    GROWING.lock().unwrap().push(vec![4u8; 32 * 1024]);
}

fn the_monitor_names_a_suspects_holder() {
    let _s = serial();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let monitor = leakscope::Monitor::start(
        leakscope::MonitorConfig::new()
            .interval(Duration::from_millis(50))
            .window(5)
            .min_growth_bytes(64 * 1024)
            .retainers(true)
            .on_suspect(move |s| {
                if s.frames()
                    .iter()
                    .any(|f| f.function().contains("grow_a_bit"))
                {
                    let _ = tx
                        .lock()
                        .unwrap()
                        .send((s.holder().cloned(), s.to_string()));
                }
            }),
    )
    .unwrap();
    let grower = thread::spawn(move || {
        for _ in 0..300 {
            grow_a_bit();
            thread::sleep(Duration::from_millis(5));
        }
        wipe_stack();
    });
    let (holder, text) = rx.recv_timeout(Duration::from_secs(20)).expect("a suspect");
    grower.join().unwrap();
    monitor.stop();
    assert_eq!(
        holder,
        Some(Root::Static {
            name: "retainers::GROWING".into()
        }),
        "{text}"
    );
    assert!(text.contains("held by static retainers::GROWING"), "{text}");
}

static SHARED_VEC: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[inline(never)]
fn fill_shared_vec() -> usize {
    let mut v = SHARED_VEC.lock().unwrap();
    v.extend(0..1000u64);
    v.as_ptr() as usize
}

/// A static's buffer that a thread's stack also points to (a stale word, as
/// conservative scanning finds them) is still the static's: stacks claim
/// only what no static or thread-local reaches.
fn a_static_keeps_what_a_stack_also_points_to() {
    let _s = serial();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let p = black_box(fill_shared_vec());
        ready_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        black_box(p);
    });
    ready_rx.recv().unwrap();
    let snap = leakscope::snapshot();
    let buffer = one_site(&snap, "fill_shared_vec");
    let r = scan();
    let held = r
        .roots()
        .iter()
        .find(|x| x.root().to_string() == "static retainers::SHARED_VEC")
        .unwrap_or_else(|| panic!("the static is not a holder:\n{r}"));
    assert!(held.retained_bytes() >= 8000, "{r}");
    assert!(held.sites().iter().any(|&(s, _)| s == buffer), "{r}");
    let site = r.site(buffer).unwrap();
    assert_eq!(
        site.paths()[0].root(),
        &Root::Static {
            name: "retainers::SHARED_VEC".into()
        },
        "{r}"
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

static PER_TENANT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn keep_for(tenant: &str) {
    leakscope::with_labels(&[("tenant", tenant)], || {
        PER_TENANT.lock().unwrap().push(vec![5u8; 700]);
    });
}

/// One line of code, two tenants: two sites with one owner, told apart in
/// the text by their labels as well as their ids.
fn labelled_sites_carry_their_labels_in_the_text() {
    let _s = serial();
    thread::spawn(|| {
        for _ in 0..10 {
            keep_for("acme");
            keep_for("globex");
        }
        wipe_stack();
    })
    .join()
    .unwrap();
    let snap = leakscope::snapshot();
    let r = scan();
    let text = r.to_string();
    assert!(text.contains("static retainers::PER_TENANT"), "{text}");
    for tenant in ["acme", "globex"] {
        let site = snap
            .sites()
            .iter()
            .find(|s| {
                s.frames().iter().any(|f| f.function().contains("keep_for"))
                    && s.labels() == [("tenant".to_string(), tenant.to_string())]
            })
            .expect("a site per tenant");
        let tag = format!("(site {}, tenant={tenant})", site.id());
        assert!(text.contains(&tag), "no {tag} in:\n{text}");
    }
}

#[test]
fn retainers_in_exact_mode() {
    the_seed_shape_is_reached_exactly_from_its_static();
    leaked_forgotten_and_cyclic_blocks_are_unreachable_to_the_byte();
    a_leak_check_asserts_nothing_it_allocated_is_unreachable();
    a_threads_stack_and_its_thread_local_are_named_roots();
    #[cfg(feature = "http")]
    the_http_route_serves_text_and_json_and_refuses_a_concurrent_scan();
    a_second_concurrent_scan_is_refused_and_a_timeout_is_an_error();
    a_child_out_of_memory_is_an_error();
    the_monitor_names_a_suspects_holder();
    labelled_sites_carry_their_labels_in_the_text();
    a_static_keeps_what_a_stack_also_points_to();
    many_scans_while_threads_allocate_leave_no_child_behind();
}
