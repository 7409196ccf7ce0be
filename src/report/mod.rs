//! Reports: everything here runs at query time, never on the allocation path.

mod text;
