//! [`Frame`]: one symbolized frame of a site's stack, and the rule that tells
//! the standard library's frames from the program's own.

/// One frame of a site's stack, symbolized. Inlined calls get frames of their
/// own (sharing the address of the real frame they were inlined into).
///
/// # Examples
///
/// ```
/// let snap = leakscope::snapshot();
/// for site in snap.sites() {
///     for frame in site.frames() {
///         println!("{} {:?}:{:?}", frame.function(), frame.file(), frame.line());
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub(super) function: String,
    pub(super) file: Option<String>,
    pub(super) line: Option<u32>,
    pub(super) address: usize,
    pub(super) inlined: bool,
}

impl Frame {
    /// Demangled function name without the `::h0123…` hash, or the address
    /// in hex when it could not be resolved.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Source file, when line tables are available.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Source line, when line tables are available.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The return address this frame was captured at (shared by a real frame
    /// and the frames inlined into it).
    pub fn address(&self) -> usize {
        self.address
    }

    /// True for a frame inlined into its caller (the next frame outwards
    /// with the same address).
    pub fn is_inlined(&self) -> bool {
        self.inlined
    }

    /// Whether this frame belongs to the Rust standard library: its source is
    /// under `/rustc/<hash>/library/`, or, without a file, its name (after
    /// stripping leading `<`, `&`, `&mut ` and `T as `) starts with `alloc::`,
    /// `core::`, `std::` or `hashbrown::`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let snap = leakscope::snapshot();
    /// # for site in snap.sites() {
    /// let user_frame = site.frames().iter().find(|f| !f.is_std_library());
    /// # let _ = user_frame;
    /// # }
    /// ```
    pub fn is_std_library(&self) -> bool {
        if let Some(file) = &self.file {
            return is_std_path(file);
        }
        is_std_name(&self.function)
    }
}

pub(super) fn is_std_path(file: &str) -> bool {
    match file.find("/rustc/") {
        Some(i) => {
            let rest = &file[i + "/rustc/".len()..];
            match rest.find('/') {
                Some(j) => rest[j..].starts_with("/library/"),
                None => false,
            }
        }
        None => false,
    }
}

/// The name rule of [`Frame::is_std_library`].
pub(crate) fn is_std_name(name: &str) -> bool {
    let mut s = strip_refs(name);
    // `<T as alloc::string::ToString>::to_string`: a generic parameter's
    // blanket impl is the impl's crate's code.
    if let Some((ty, rest)) = s.split_once(" as ") {
        if !ty.is_empty() && ty.chars().all(|c| c.is_alphanumeric() || c == '_') {
            s = strip_refs(rest);
        }
    }
    ["alloc::", "core::", "std::", "hashbrown::"]
        .iter()
        .any(|p| s.starts_with(p))
}

fn strip_refs(mut s: &str) -> &str {
    loop {
        let before = s.len();
        s = s.trim_start_matches(['<', '&']);
        if let Some(r) = s.strip_prefix("mut ") {
            s = r;
        }
        if s.len() == before {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_names() {
        assert!(is_std_name(
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate"
        ));
        assert!(is_std_name("alloc::raw_vec::RawVec<T,A>::grow_one"));
        assert!(is_std_name(
            "<&mut std::io::Stdout as std::io::Write>::write"
        ));
        assert!(is_std_name("hashbrown::raw::RawTable<T>::reserve_rehash"));
        assert!(is_std_name("<T as alloc::string::ToString>::to_string"));
        assert!(!is_std_name("global_slice_leak::generate_string"));
        assert!(!is_std_name("<myapp::Cache as core::ops::Drop>::drop"));
        assert!(is_std_path("/rustc/abc123/library/alloc/src/raw_vec.rs"));
        assert!(!is_std_path("/home/u/src/main.rs"));
    }
}
