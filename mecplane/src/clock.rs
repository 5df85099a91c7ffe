//! Wall-clock time in the two forms the records use: RFC 3339 strings and epoch seconds.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Now, in seconds since the epoch.
pub fn now_epoch() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
