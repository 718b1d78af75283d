//! How times are written.

use chrono::{DateTime, SecondsFormat, Utc};

/// A time as reports and the audit table write it: RFC 3339 in UTC, to the millisecond.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
