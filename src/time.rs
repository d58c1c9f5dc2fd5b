//! Wall-clock times in the display forms the API guide uses.

use chrono::{DateTime, Utc};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    Utc::now().timestamp_micros().max(0) as u64
}

/// `2017/05/15 11:12:04` (UTC), the guide's form for version times.
pub fn now_display() -> String {
    Utc::now().format("%Y/%m/%d %H:%M:%S").to_string()
}

/// `2017/05/15 11:12:04` for a Unix-microseconds time.
pub fn micros_display(micros: u64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros as i64)
        .map(|t| t.format("%Y/%m/%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `05/15/2017 11:11:56` (UTC), the guide's form for directory entries.
pub fn entry_date(sec: i64) -> String {
    DateTime::<Utc>::from_timestamp(sec, 0).map(|t| t.format("%m/%d/%Y %H:%M:%S").to_string()).unwrap_or_default()
}
