//! The wall clock, in the one unit the decision core takes: whole seconds since the epoch. The core
//! never reads a clock itself; the edges call [`unix_now`] and pass the value in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch (0 before 1970, saturating far in the future).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 3339 with whole seconds, as `/-/ready` and the token realm print times.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
