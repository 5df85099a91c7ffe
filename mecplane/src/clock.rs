//! Wall-clock time in the two forms the records use: RFC 3339 strings and epoch seconds.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The epoch seconds of an RFC 3339 time, if it is one.
pub fn epoch_of(rfc3339: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// RFC 3339 UTC of epoch seconds.
pub fn rfc3339_of(epoch: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| epoch.to_string())
}

/// Now, in seconds since the epoch.
pub fn now_epoch() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
