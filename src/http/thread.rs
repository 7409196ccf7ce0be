//! The built-in server's threads, started so that everything they
//! allocate goes through the reentrancy guard from their first instruction.
//!
//! Why not `std::thread::spawn`: std's thread start allocates on the new
//! thread before the closure runs (its stack-overflow bookkeeping: a node
//! of a global map, and the thread's name), where the guard cannot be held
//! yet, so every server thread left a few allocations in the profile (with
//! a thread per connection, +1406 at one site). Here the thread is a plain
//! `pthread_create` whose start routine takes the guard first thing. What
//! such a thread does not get from std: its stack-overflow message (an
//! overflow is a plain SIGSEGV, as in a C thread); its name is set here
//! (on Linux, `pthread_setname_np`, so `top -H` and `/proc/<pid>/task`
//! tell the server's threads apart from the service's).
//!
//! Elsewhere than Unix, std's threads (and their trace) are used.

use std::ffi::CStr;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::recorder::Guard;

/// A thread's stack, as std's default: ample for the renders (the old
/// server rendered on std threads).
#[cfg(unix)]
const STACK: usize = 2 << 20;

/// A running server thread; [`join`](Thread::join) waits for it. Dropped
/// without joining, it runs on detached.
pub(super) struct Thread {
    #[cfg(unix)]
    id: Option<libc::pthread_t>,
    #[cfg(not(unix))]
    handle: Option<std::thread::JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

/// What the start routine runs: the closure and the flag it sets at the
/// end.
#[cfg(unix)]
struct Start {
    name: &'static CStr,
    f: Box<dyn FnOnce() + Send>,
    done: Arc<AtomicBool>,
}

/// Starts `f` on a new thread named `name` (at most 15 bytes, the kernel's
/// limit) that holds the guard for its whole life. A panic in `f` ends the
/// thread (it is caught, never crosses into C).
pub(super) fn spawn(name: &'static CStr, f: impl FnOnce() + Send + 'static) -> io::Result<Thread> {
    debug_assert!(
        name.to_bytes().len() <= 15,
        "thread names are cut at 15 bytes"
    );
    let done = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    {
        let arg = Box::into_raw(Box::new(Start {
            name,
            f: Box::new(f),
            done: done.clone(),
        }));
        // SAFETY: `attr` is initialised by `pthread_attr_init` before use
        // and destroyed after `pthread_create` copied it. `start` has the
        // signature `pthread_create` expects; `arg` is a leaked
        // `Box<Start>` that `start` (and only it) takes back, or that we
        // take back here if no thread was started.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            let rc = libc::pthread_attr_init(&mut attr);
            if rc != 0 {
                drop(Box::from_raw(arg));
                return Err(io::Error::from_raw_os_error(rc));
            }
            // Refused only below the minimum or unaligned: keep the default.
            let _ = libc::pthread_attr_setstacksize(&mut attr, STACK);
            let mut id: libc::pthread_t = std::mem::zeroed();
            let rc = libc::pthread_create(&mut id, &attr, start, arg.cast());
            libc::pthread_attr_destroy(&mut attr);
            if rc != 0 {
                drop(Box::from_raw(arg));
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Thread { id: Some(id), done })
        }
    }
    #[cfg(not(unix))]
    {
        let d = done.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string_lossy().into_owned())
            .spawn(move || {
                let _guard = Guard::enter();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
                    log::error!("leakscope: an HTTP server thread panicked");
                }
                d.store(true, Ordering::Release);
            })?;
        Ok(Thread {
            handle: Some(handle),
            done,
        })
    }
}

#[cfg(unix)]
extern "C" fn start(arg: *mut libc::c_void) -> *mut libc::c_void {
    // First thing: nothing below is recorded.
    let _guard = Guard::enter();
    // SAFETY: `arg` is the `Box<Start>` leaked by `spawn` for this thread
    // alone.
    let start = unsafe { Box::from_raw(arg.cast::<Start>()) };
    let Start { name, f, done } = *start;
    // SAFETY: `name` is a nul-terminated string of at most 15 bytes (plus
    // the nul), as the call requires; it names the calling thread.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::pthread_setname_np(libc::pthread_self(), name.as_ptr());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
    // Unwinding must not cross this `extern "C"` frame.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        log::error!("leakscope: an HTTP server thread panicked");
    }
    done.store(true, Ordering::Release);
    std::ptr::null_mut()
}

impl Thread {
    /// Whether its closure has returned.
    pub(super) fn is_finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Waits for the thread to end.
    pub(super) fn join(mut self) {
        #[cfg(unix)]
        if let Some(id) = self.id.take() {
            // SAFETY: `id` is a joinable thread of ours, joined once (taken
            // out of `self`, so `drop` does not detach it).
            unsafe {
                libc::pthread_join(id, std::ptr::null_mut());
            }
        }
        #[cfg(not(unix))]
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(id) = self.id.take() {
            // SAFETY: `id` is a joinable thread of ours, never joined:
            // detached, its resources are freed when it ends.
            unsafe {
                libc::pthread_detach(id);
            }
        }
    }
}
