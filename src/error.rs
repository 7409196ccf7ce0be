//! The crate's one error type, for configuration and report paths.
//!
//! The allocation path has no errors to return: whatever goes wrong there
//! (a full site table, a failed inner allocation) degrades to "not recorded".

use std::fmt;

/// What went wrong in a configuration call or while writing a report.
///
/// # Examples
///
/// ```
/// let err = leakscope::set_sample_interval(0).unwrap_err();
/// assert!(err.to_string().contains("sample interval"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A sample interval of zero bytes was asked for (1 means "record everything").
    InvalidSampleInterval,
    /// A configuration value is out of range; the message names it.
    InvalidConfig(String),
    /// Writing a report or serving a request failed.
    Io(std::io::Error),
    /// A report could not be encoded.
    Encode(String),
    /// A retainer scan failed (another one is running, the child timed out
    /// or died); the message says which.
    Retainers(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidSampleInterval => {
                f.write_str("invalid sample interval: 0 bytes (use 1 to record every allocation)")
            }
            Error::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Encode(msg) => write!(f, "encoding error: {msg}"),
            Error::Retainers(msg) => write!(f, "retainer scan failed: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
