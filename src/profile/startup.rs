//! Registers the query side's fork handlers before `main`, while the process
//! has one thread.
//!
//! Each set is also registered lazily, at its lock's first use (all there is
//! on platforms without ELF constructors), but that alone can lose a fork:
//! glibc lets `pthread_atfork` register a set while another thread's `fork`
//! is running the `prepare` handlers, and that fork then runs neither the
//! new set's `prepare` nor its `child`. A thread that made the process's
//! first query meanwhile registered the symbol cache's set and took its
//! lock, and the child found the lock held for ever (the first fork of
//! `tests/fork_sampled.rs` under AddressSanitizer; every time when another
//! library's `prepare` handler is slow: `tests/fork_first_report.rs`).
//! From an ELF constructor (`.init_array`, run by the loader before `main`,
//! or by `dlopen`), the sets exist before any thread of ours can fork.

/// The constructor: a function pointer in `.init_array`.
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER: extern "C" fn() = register;

/// Registers the recorder's handlers, then the symbol cache's and the label
/// table's (so that in `prepare`, which runs them last-registered first,
/// ours come before the recorder's: no recorder lock is held while the
/// query side's locks are waited for). Under the guard: `pthread_atfork`
/// may allocate. Never unwinds: each step is an atomic, a `pthread_atfork`
/// call or a `ForkOnce`, none of which panics.
extern "C" fn register() {
    crate::recorder::Guard::run(|| {
        super::symbolize::install_fork_handlers();
        super::labels::install_fork_handlers();
    });
}
