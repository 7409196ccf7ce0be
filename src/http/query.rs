//! The query parameters the pprof routes read, checked as Go checks them.

use super::response::Response;

/// What `?seconds=N&debug=D&gc=G` asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ProfileQuery {
    /// `seconds=N`: a delta over the next N seconds.
    pub(super) seconds: Option<u64>,
    /// `debug=D`, D != 0: the text report.
    pub(super) debug: bool,
}

/// Parses and checks the query of a profile route: a bad or non-positive
/// `seconds`, `seconds` over `max_seconds`, or `seconds` with `debug` is a
/// 400 with Go's one-line reason. `gc` is accepted and ignored (a tracker
/// has nothing to collect); unknown parameters are ignored, as Go does.
pub(super) fn profile_query(query: &str, max_seconds: u64) -> Result<ProfileQuery, Response> {
    let mut seconds = None;
    let mut debug = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            // The first value wins, as Go's `FormValue`.
            "seconds" if seconds.is_none() => seconds = Some(value.into_owned()),
            "debug" if debug.is_none() => debug = Some(value.into_owned()),
            _ => {}
        }
    }
    let debug = match debug.as_deref() {
        None | Some("") => false,
        Some(d) => match d.parse::<i64>() {
            Ok(d) => d != 0,
            Err(_) => {
                return Err(Response::go_error(
                    400,
                    r#"invalid value for "debug" - must be an integer"#,
                ));
            }
        },
    };
    let seconds = match seconds.as_deref() {
        None | Some("") => None,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            _ => {
                return Err(Response::go_error(
                    400,
                    r#"invalid value for "seconds" - must be a positive integer"#,
                ));
            }
        },
    };
    if let Some(n) = seconds {
        if n > max_seconds {
            return Err(Response::go_error(
                400,
                &format!("profile duration exceeds the server's maximum of {max_seconds} seconds"),
            ));
        }
        if debug {
            return Err(Response::go_error(
                400,
                "seconds and debug params are incompatible",
            ));
        }
    }
    Ok(ProfileQuery { seconds, debug })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(q: &str) -> u16 {
        profile_query(q, 300).map_or_else(|r| r.status(), |_| 200)
    }

    #[test]
    fn go_rules() {
        assert_eq!(profile_query("", 300).unwrap(), ProfileQuery::default());
        assert_eq!(
            profile_query("seconds=5&gc=1", 300).unwrap().seconds,
            Some(5)
        );
        assert!(profile_query("debug=1", 300).unwrap().debug);
        assert!(!profile_query("debug=0", 300).unwrap().debug);
        for bad in [
            "seconds=0",
            "seconds=-1",
            "seconds=abc",
            "seconds=1.5",
            "seconds=301",
            "seconds=99999999999999999999",
            "seconds=1&debug=1",
            "debug=x",
        ] {
            assert_eq!(status(bad), 400, "{bad}");
        }
        assert_eq!(status("seconds=300"), 200);
        assert_eq!(status("seconds=%31"), 200); // percent-decoded
    }
}
