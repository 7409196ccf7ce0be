//! Reports: everything here runs at query time, never on the allocation path.
//! Each export format is an inherent `write_*` method on `Snapshot` and
//! `Diff`, in its own file, behind the cargo feature that names it.

mod text;
