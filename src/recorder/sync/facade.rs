//! The atomics and cells the primitives use, as tokio's `loom` facade: std's
//! here; the loom models (`loom_*.rs`) compile the primitives' source again
//! against a facade of the same shape made of loom's types.

/// Atomics as the primitives see them (loom's in the models).
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
}

/// `UnsafeCell` with loom's closure-based interface, so that the same
/// source compiles against `loom::cell::UnsafeCell` in the models (where
/// every access is checked for a race).
pub(crate) mod cell {
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(data: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(data))
        }

        /// Calls `f` with a pointer to the data, for writing.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// `const fn` in the normal build (the recorder's locks are statics), a
/// plain `fn` in the loom models (loom's atomics are not `const`).
macro_rules! maybe_const_fn {
    ($(#[$m:meta])* $vis:vis fn $($rest:tt)*) => {
        $(#[$m])* $vis const fn $($rest)*
    };
}
pub(crate) use maybe_const_fn;
