//! [`Options`]: how the built-in server listens and what it allows.

use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::metrics::DEFAULT_TOP_SITES;

/// Settings of the built-in server ([`serve_with`](super::serve_with)): a
/// builder.
///
/// Defaults: loopback addresses only, no token, `seconds=` up to 300, the
/// top 20 sites in `/metrics`, a summary for the dashboard's chart every 5 s.
///
/// # Examples
///
/// ```
/// use leakscope::http::Options;
///
/// let options = Options::default()
///     .allow_remote(true)
///     .token("s3cret")
///     .max_seconds(60)
///     .top_sites(50);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct Options {
    allow_remote: bool,
    token: Option<String>,
    max_seconds: u64,
    top_sites: usize,
    history_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            allow_remote: false,
            token: None,
            max_seconds: 300,
            top_sites: DEFAULT_TOP_SITES,
            history_interval: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// Allow binding an address other than loopback (`127.0.0.0/8`, `::1`).
    /// Off by default: heap profiles name the program's functions and files,
    /// so serving them beyond the host is the caller's explicit choice
    /// (together with a [`token`](Options::token), preferably).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let options = leakscope::http::Options::default().allow_remote(true).token("s3cret");
    /// let server = leakscope::http::serve_with("0.0.0.0:6060", options)?;
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn allow_remote(mut self, allow: bool) -> Options {
        self.allow_remote = allow;
        self
    }

    /// Require `Authorization: Bearer <token>` on every request (checked in
    /// constant time); others get 401. Must not be empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = leakscope::http::Options::default().token("s3cret");
    /// # let _ = options;
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Options {
        self.token = Some(token.into());
        self
    }

    /// The longest `?seconds=N` delta served (default 300); longer asks get
    /// 400. At least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = leakscope::http::Options::default().max_seconds(60);
    /// # let _ = options;
    /// ```
    pub fn max_seconds(mut self, seconds: u64) -> Options {
        self.max_seconds = seconds;
        self
    }

    /// How many top sites `/metrics` exposes (default 20), besides the one
    /// `site="other"` series; the dashboard lists as many.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = leakscope::http::Options::default().top_sites(10);
    /// # let _ = options;
    /// ```
    pub fn top_sites(mut self, n: usize) -> Options {
        self.top_sites = n;
        self
    }

    /// Time between the summaries the server keeps for the dashboard's
    /// chart when no [`Monitor`](crate::Monitor) runs (default 5 s; the last
    /// 120 are kept). Must not be zero.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let options = leakscope::http::Options::default().history_interval(Duration::from_secs(1));
    /// # let _ = options;
    /// ```
    pub fn history_interval(mut self, interval: Duration) -> Options {
        self.history_interval = interval;
        self
    }

    pub(super) fn allow_remote_value(&self) -> bool {
        self.allow_remote
    }

    pub(super) fn token_value(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub(super) fn max_seconds_value(&self) -> u64 {
        self.max_seconds
    }

    pub(super) fn top_sites_value(&self) -> usize {
        self.top_sites
    }

    pub(super) fn history_interval_value(&self) -> Duration {
        self.history_interval
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.max_seconds == 0 {
            return Err(Error::InvalidConfig(
                "max_seconds must be at least 1".to_string(),
            ));
        }
        if self.token.as_deref() == Some("") {
            return Err(Error::InvalidConfig(
                "the token must not be empty".to_string(),
            ));
        }
        if self.history_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "history_interval must be greater than zero".to_string(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token itself: options end up in logs.
        f.debug_struct("Options")
            .field("allow_remote", &self.allow_remote)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_seconds", &self.max_seconds)
            .field("top_sites", &self.top_sites)
            .field("history_interval", &self.history_interval)
            .finish()
    }
}
