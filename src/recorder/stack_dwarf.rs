//! The default unwinder's fast path: DWARF call-frame information read once
//! per return address and cached, so a sampled allocation's stack costs a
//! few instructions a frame instead of libgcc's whole CFI interpretation.
//!
//! A submodule of `stack` (`Unwinder::Backtrace`). x86-64 Linux only; on
//! other targets [`walk`] declines and `stack` uses the `backtrace` crate.
//!
//! # How
//! The unwind rule of a frame (where its caller's stack pointer, return
//! address and frame pointer are, relative to its own stack or frame
//! pointer) depends only on the return address into it. The first stack
//! that passes through a return address computes its rule from the module's
//! `.eh_frame_hdr` (binary search) and `.eh_frame` (the FDE's CFA program),
//! parsed by `gimli`, and stores it, packed with the address into one word,
//! in a process-wide direct-mapped table of 4096 words; every later
//! stack reads the word. A service's sampled stacks pass through a few
//! hundred distinct return addresses, so after warm-up a frame is one load,
//! one compare and two stack reads.
//!
//! # Why by hand (and not `framehop`)
//! `framehop` caches rules the same way, but it keeps a module list that is
//! built with `&mut` (a lock, or a rebuild, for every `dlopen`), holds the
//! modules' section bytes for as long as they are registered (dangling after
//! a `dlclose`, unless copied), and wants a heap-allocated cache per
//! unwinding thread, which the allocator's destructor-free thread-local
//! state cannot own. Here nothing is kept about modules at all: a cache miss
//! asks the dynamic loader (`dl_iterate_phdr`) for the module of that one
//! address and reads its tables inside the loader's callback, while the
//! loader holds its lock, so the module cannot be unloaded under the read;
//! the cache holds only packed rules, shared by all threads without a lock.
//! The DWARF parsing itself is `gimli`'s (already linked through
//! `backtrace`).
//!
//! # Safety of the walk
//! - Stack reads: every word read lies within `[sp, hi)`, where `sp` is this
//!   function's own stack pointer and `hi` the top of the thread's stack
//!   (`pthread_getattr_np`, cached per thread), is 8-aligned, and each
//!   frame's canonical frame address must be above the previous one, so the
//!   walk ends (and at `MAX_DEPTH` frames at most).
//! - Module reads: only on a miss, only within the `PT_LOAD` segments that
//!   the loader reports for the module holding the address, during its
//!   callback.
//! - Anything unusual (no unwind info, a signal frame, a CFA or register
//!   rule other than "register + offset" / "saved at CFA + offset", an
//!   address that does not fit the table's packing, a bad read) makes
//!   [`walk`] return false, and the caller captures the stack with the
//!   `backtrace` crate instead, as before. End of stack is where the unwind
//!   info says the return address is undefined (`_start`, `clone3`), as for
//!   libgcc, so both give the same frames.
//! - A stale rule (code unloaded and other code loaded at the same address)
//!   can only give a wrong stack, never a read outside the stack.
//! - Forked children: `dl_iterate_phdr` takes the loader's list lock, which
//!   a child of a multi-threaded parent may inherit held. After a fork
//!   ([`forked`], from the recorder's `fork` child handler) a miss goes to the
//!   `backtrace` crate instead: the platform unwinder every capture used
//!   before this walk existed (libgcc finds modules with glibc's lock-free
//!   `_dl_find_object` where glibc has it, 2.35 on), so a child is no worse
//!   off than it was. Rules cached before the fork still serve it. And no
//!   parent thread is inside the loader's lock at the fork: the recorder's
//!   `prepare` handler waits for lookups under way and keeps new ones off
//!   the loader until `parent` (those misses take the platform unwinder),
//!   since the child's symbolizer asks the loader too.

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
pub(super) use imp::is_forked;
pub(super) use imp::{fork_parent, fork_prepare, forked, walk};

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    /// No cached DWARF walk on this target: the caller uses `backtrace`.
    #[inline(always)]
    pub(in super::super) fn walk(_stack: &mut super::super::Stack) -> bool {
        false
    }

    /// Nothing to forget on this target.
    pub(in super::super) fn forked() {}

    /// No loader lookups to wait for on this target.
    pub(in super::super) fn fork_prepare() {}

    /// Nothing to resume on this target.
    pub(in super::super) fn fork_parent() {}
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::sync::atomic::{
        AtomicBool, AtomicU64, AtomicUsize,
        Ordering::{Relaxed, SeqCst},
    };

    use gimli::{
        BaseAddresses, CfaRule, EhFrame, EhFrameHdr, NativeEndian, Pointer, Register, RegisterRule,
        UnwindContext, UnwindContextStorage, UnwindSection, UnwindTableRow, X86_64,
    };

    use super::super::{MAX_DEPTH, Stack, fp, mix};

    /// Bits of an address that select its slot.
    const SLOT_BITS: u32 = 12;
    /// Slots in [`CACHE`] (32 KiB of zeroed static memory).
    const SLOTS: usize = 1 << SLOT_BITS;
    /// Addresses the table can hold: below 2^47 (x86-64 user space with
    /// 4-level paging). Others are looked up on every stack.
    const ADDR_BITS: u32 = 47;
    /// Bits of a packed rule: what the address leaves of a 64-bit word.
    const RULE_BITS: u32 = 64 - (ADDR_BITS - SLOT_BITS);

    // A rule, packed into `RULE_BITS` bits:
    //   bits 0-1   kind: STEP, END or FALLBACK
    //   bit 2      CFA is rbp + offset (else rsp + offset)
    //   bits 3-17  CFA offset / 8
    //   bit 18     the caller's rbp is saved in this frame (else unchanged)
    //   bits 19-28 where: CFA - 8 * this
    /// Unwind one frame with the fields below.
    const STEP: u32 = 1;
    /// The return address is undefined here: the outermost frame.
    const END: u32 = 2;
    /// This frame needs the general unwinder.
    const FALLBACK: u32 = 3;
    const KIND: u32 = 3;
    const CFA_RBP: u32 = 1 << 2;
    const CFA_SHIFT: u32 = 3;
    const CFA_MAX: u32 = 0x7fff;
    const RBP_SAVED: u32 = 1 << 18;
    const RBP_SHIFT: u32 = 19;
    const RBP_MAX: u32 = 0x3ff;
    const _: () = assert!(RBP_SHIFT + 10 <= RULE_BITS);

    /// Rules by return address: `(address >> SLOT_BITS) << RULE_BITS | rule`
    /// in the slot `(address ^ address >> SLOT_BITS) % SLOTS`, so the word
    /// alone tells which address it holds; 0 is an empty slot (no address
    /// below 4 KiB is code). One relaxed load or store each: two threads
    /// writing one slot leave either word, both valid.
    static CACHE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

    /// Set in a forked child (see the module docs).
    static FORKED: AtomicBool = AtomicBool::new(false);

    /// Threads inside the loader's callback ([`lookup`]), and forks under
    /// way (a count: two threads may fork at once): a fork waits for the
    /// first to reach zero, and while one is under way no thread starts a
    /// lookup, so no thread of the
    /// parent holds the loader's lock at the fork (the child symbolizes
    /// with `dl_iterate_phdr`, and waited for ever on a lock copied held:
    /// the first child of `tests/fork_exact.rs`, 1 run in 18 under load).
    static IN_LOADER: AtomicUsize = AtomicUsize::new(0);
    static FORKING: AtomicUsize = AtomicUsize::new(0);

    /// Called by the recorder's `fork` prepare handler, before it takes any
    /// recorder lock (a thread in the loader holds none, and waits for
    /// none): returns once no thread is inside the loader's callback.
    pub(in super::super) fn fork_prepare() {
        FORKING.fetch_add(1, SeqCst);
        while IN_LOADER.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Called by the recorder's `fork` parent handler.
    pub(in super::super) fn fork_parent() {
        FORKING.fetch_sub(1, SeqCst);
    }

    /// Called by the recorder's `fork` child handler.
    pub(in super::super) fn forked() {
        FORKED.store(true, Relaxed);
        // The child's only thread is this one: no other fork is under way.
        FORKING.store(0, SeqCst);
    }

    /// Whether this process is a forked child, as far as the walk knows.
    #[cfg(test)]
    pub(in super::super) fn is_forked() -> bool {
        FORKED.load(Relaxed)
    }

    /// The instruction pointer, stack pointer and frame pointer at one point
    /// of the calling function, read by one instruction sequence so that the
    /// unwind row of that point describes the two stack registers.
    #[inline(always)]
    fn registers() -> (usize, usize, usize) {
        let (pc, sp, bp): (usize, usize, usize);
        // SAFETY: copies `rip` (the address of the next instruction, still
        // in this asm block), `rsp` and `rbp`; no memory access.
        unsafe {
            std::arch::asm!("lea {pc}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp",
                pc = out(reg) pc, sp = out(reg) sp, bp = out(reg) bp,
                options(nomem, nostack, preserves_flags));
        }
        (pc, sp, bp)
    }

    /// Walks the stack from this function's frame into `stack` (innermost
    /// first, starting with the return address into the caller). Returns
    /// false if any frame needs the general unwinder: `stack` is then
    /// partly filled and must be cleared.
    #[inline(never)]
    pub(in super::super) fn walk(stack: &mut Stack) -> bool {
        let (pc, sp0, bp0) = registers();
        let Some((lo, hi)) = fp::thread_stack() else {
            return false;
        };
        if sp0 < lo || sp0 >= hi || sp0 & 7 != 0 {
            return false;
        }
        // The highest address a word may be read at.
        let top = hi - 8;
        // A cache key `k` stands for the unwind row at `k - 1`: for a return
        // address, the call instruction it follows (a call can end a
        // function, whose row then differs from the next one's). Here, in
        // this function's body, the row at `pc` itself.
        let (mut key, mut sp, mut bp) = (pc + 1, sp0, bp0);
        let (mut len, mut hash) = (0usize, 0u64);
        loop {
            let rule = rule_for(key);
            match rule & KIND {
                STEP => {}
                END => break,
                _ => return false,
            }
            let base = if rule & CFA_RBP != 0 { bp } else { sp };
            let cfa = base.wrapping_add(((rule >> CFA_SHIFT) & CFA_MAX) as usize * 8);
            // The return address sits just below the CFA, which lies above
            // the current frame (so the walk only goes outwards and ends) and
            // within the stack.
            if cfa & 7 != 0 || cfa < sp + 8 || cfa - 8 > top {
                return false;
            }
            // SAFETY: `cfa - 8 .. cfa` lies within `[sp0, hi)` (checked just
            // above: `cfa - 8 >= sp >= sp0`), this thread's live stack, and
            // is aligned. Volatile: our callers' frames are only read as
            // numbers, and the compiler must not reason about them.
            let ra = unsafe { std::ptr::read_volatile((cfa - 8) as *const usize) };
            if rule & RBP_SAVED != 0 {
                let at = cfa.wrapping_sub(((rule >> RBP_SHIFT) & RBP_MAX) as usize * 8);
                if at < sp0 || at > top {
                    return false;
                }
                // SAFETY: as above, for `at .. at + 8` (checked just above;
                // aligned since `cfa` is).
                bp = unsafe { std::ptr::read_volatile(at as *const usize) };
            }
            sp = cfa;
            if ra == 0 || len == MAX_DEPTH {
                break;
            }
            stack.addrs[len] = std::mem::MaybeUninit::new(ra);
            len += 1;
            hash = mix(hash, ra);
            if len == MAX_DEPTH {
                break;
            }
            key = ra;
        }
        stack.len = len;
        stack.hash = hash;
        true
    }

    /// The packed rule for cache key `key` (see [`walk`]).
    #[inline(always)]
    fn rule_for(key: usize) -> u32 {
        if key >> ADDR_BITS != 0 {
            return lookup(key).unwrap_or(FALLBACK);
        }
        let tag = (key >> SLOT_BITS) as u64;
        let Some(slot) = CACHE.get((key ^ key >> SLOT_BITS) & (SLOTS - 1)) else {
            return FALLBACK;
        };
        let word = slot.load(Relaxed);
        if word >> RULE_BITS == tag && word != 0 {
            return (word & ((1 << RULE_BITS) - 1)) as u32;
        }
        // Not asking (a fork): the platform unwinder this once, nothing kept.
        let Some(rule) = lookup(key) else {
            return FALLBACK;
        };
        slot.store(tag << RULE_BITS | u64::from(rule), Relaxed);
        rule
    }

    /// What [`lookup`] asks the loader's callback about, and its answer.
    struct Query {
        addr: usize,
        rule: u32,
    }

    /// Computes the rule for cache key `key` from the unwind tables of the
    /// module that holds `key - 1`; `None` when the loader must not be
    /// asked: in a forked child (its lock may have been copied held), or
    /// while a fork is under way (see [`fork_prepare`]).
    #[cold]
    #[inline(never)]
    fn lookup(key: usize) -> Option<u32> {
        if FORKED.load(Relaxed) {
            return None;
        }
        // Counted in before looking at `FORKING`, and `fork_prepare` sets
        // `FORKING` before reading the count (both `SeqCst`): either it sees
        // this thread, or this thread sees the fork.
        IN_LOADER.fetch_add(1, SeqCst);
        if FORKING.load(SeqCst) != 0 {
            IN_LOADER.fetch_sub(1, SeqCst);
            return None;
        }
        let mut q = Query {
            addr: key.wrapping_sub(1),
            rule: FALLBACK,
        };
        // SAFETY: `on_module` only reads what the loader hands it (see
        // there) and writes `q`, which outlives the call. glibc's loader
        // uses libc's own `malloc`, never the Rust global allocator, so it
        // cannot call back into the tracker while holding its lock.
        unsafe {
            libc::dl_iterate_phdr(Some(on_module), (&raw mut q).cast());
        }
        IN_LOADER.fetch_sub(1, SeqCst);
        Some(q.rule)
    }

    /// `dl_iterate_phdr`'s callback: for the module whose `PT_LOAD` segments
    /// hold the queried address, computes the rule and stops the iteration.
    /// Never unwinds (nothing in it panics: `gimli` returns errors on bad
    /// input, and every slice is bounds-checked).
    ///
    /// # Safety
    /// `info` is the loader's description of a loaded module and `data` the
    /// `Query` passed by [`lookup`].
    unsafe extern "C" fn on_module(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `info` for the duration of the
        // call; `data` is `lookup`'s `Query`, borrowed only here.
        let (info, q) = unsafe { (&*info, &mut *data.cast::<Query>()) };
        if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
            return 0;
        }
        // SAFETY: the loader's program headers of this module: `dlpi_phnum`
        // entries at `dlpi_phdr`, mapped while the module is loaded (and it
        // stays loaded during the callback).
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        let module = Module {
            base: info.dlpi_addr as usize,
            phdrs,
        };
        if module.load_end(q.addr).is_none() {
            return 0;
        }
        q.rule = module.rule(q.addr).unwrap_or(FALLBACK);
        1
    }

    /// A loaded module, as the loader describes it.
    struct Module<'a> {
        base: usize,
        phdrs: &'a [libc::Elf64_Phdr],
    }

    impl Module<'_> {
        /// The end of the `PT_LOAD` segment that holds `addr`, if any: the
        /// bytes `addr..end` are mapped (while the module is loaded).
        fn load_end(&self, addr: usize) -> Option<usize> {
            self.phdrs.iter().find_map(|p| {
                let start = self.base.checked_add(usize::try_from(p.p_vaddr).ok()?)?;
                let end = start.checked_add(usize::try_from(p.p_memsz).ok()?)?;
                (p.p_type == libc::PT_LOAD && (start..end).contains(&addr)).then_some(end)
            })
        }

        /// `len` mapped bytes at `addr`, or `None` if they are not all in one
        /// `PT_LOAD` segment.
        fn bytes(&self, addr: usize, len: usize) -> Option<&[u8]> {
            let end = self.load_end(addr)?;
            if len == 0 || len > end - addr {
                return None;
            }
            // SAFETY: `addr..addr + len` lies within one `PT_LOAD` segment of
            // a module the loader keeps loaded during its callback (the only
            // caller), which maps it readable; nothing writes a loaded
            // module's unwind tables. The slice does not outlive `self`,
            // which lives within the callback.
            Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len) })
        }

        /// The rule for the frame executing at `addr`, from this module's
        /// `.eh_frame_hdr` and `.eh_frame`; `None` if it needs the general
        /// unwinder.
        fn rule(&self, addr: usize) -> Option<u32> {
            let hdr_ph = self
                .phdrs
                .iter()
                .find(|p| p.p_type == libc::PT_GNU_EH_FRAME)?;
            let hdr_addr = self
                .base
                .checked_add(usize::try_from(hdr_ph.p_vaddr).ok()?)?;
            let hdr = self.bytes(hdr_addr, usize::try_from(hdr_ph.p_memsz).ok()?)?;
            let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr as u64);
            let parsed = EhFrameHdr::new(hdr, NativeEndian).parse(&bases, 8).ok()?;
            let Pointer::Direct(eh_addr) = parsed.eh_frame_ptr() else {
                return None;
            };
            let eh_addr = usize::try_from(eh_addr).ok()?;
            // `.eh_frame` has no length of its own here: the rest of its
            // segment bounds every read (FDEs are found through the table).
            let eh_len = self.load_end(eh_addr)? - eh_addr;
            let eh_frame = EhFrame::new(self.bytes(eh_addr, eh_len)?, NativeEndian);
            let bases = bases.set_eh_frame(eh_addr as u64);
            let fde = parsed.table()?.fde_for_address(
                &eh_frame,
                &bases,
                addr as u64,
                EhFrame::cie_from_offset,
            );
            let fde = fde.ok()?;
            if fde.cie().is_signal_trampoline() {
                return None;
            }
            let mut ctx = UnwindContext::<usize, Small>::new_in();
            let row = fde
                .unwind_info_for_address(&eh_frame, &bases, &mut ctx, addr as u64)
                .ok()?;
            pack(row)
        }
    }

    /// Unwind context storage on the stack, sized for real x86-64 code (a
    /// frame saves at most the 7 callee-saved registers and the return
    /// address); a program that needs more fails with an error, and the
    /// frame goes to the general unwinder. About 3 KiB, on the miss path
    /// only; no allocation.
    struct Small;

    impl<T: gimli::ReaderOffset> UnwindContextStorage<T> for Small {
        type Rules = [(Register, RegisterRule<T>); 24];
        type Stack = [UnwindTableRow<T, Self>; 4];
    }

    /// Packs an unwind row into a rule, if it is one [`walk`] can follow.
    fn pack(row: &UnwindTableRow<usize, Small>) -> Option<u32> {
        match row.register(X86_64::RA) {
            Some(RegisterRule::Undefined) => return Some(END),
            Some(RegisterRule::Offset(-8)) => {}
            _ => return None,
        }
        let CfaRule::RegisterAndOffset { register, offset } = *row.cfa() else {
            return None;
        };
        let from = match register {
            X86_64::RSP => 0,
            X86_64::RBP => CFA_RBP,
            _ => return None,
        };
        let cfa = u32::try_from(offset)
            .ok()
            .filter(|o| o % 8 == 0 && o / 8 <= CFA_MAX)?
            / 8;
        let rbp = match row.register(X86_64::RBP) {
            None | Some(RegisterRule::SameValue) => 0,
            Some(RegisterRule::Offset(at)) => {
                let below = u32::try_from(at.checked_neg()?).ok();
                let below = below.filter(|b| *b >= 8 && b % 8 == 0 && b / 8 <= RBP_MAX)?;
                RBP_SAVED | (below / 8) << RBP_SHIFT
            }
            _ => return None,
        };
        Some(STEP | from | cfa << CFA_SHIFT | rbp)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// While a fork is under way (between the recorder's `prepare` and
        /// `parent`), no lookup enters the loader and none is left inside
        /// it; after, lookups ask the loader again. (Other tests of this
        /// binary capture stacks meanwhile: their misses take the platform
        /// unwinder, the same stacks.)
        #[test]
        fn a_fork_holds_lookups_off_the_loader() {
            let key = lookup as *const () as usize + 1;
            assert!(
                lookup(key).is_some(),
                "a lookup outside a fork asks the loader"
            );
            // Returns: no thread was left inside (it would wait for ever).
            fork_prepare();
            assert_eq!(lookup(key), None, "a lookup during a fork asked the loader");
            fork_parent();
            assert!(lookup(key).is_some(), "lookups stay off after the fork");
        }
    }
}
