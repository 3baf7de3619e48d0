//! What the SQL stores and vaults share, below both: the databases ([`sqlite`], [`postgres`])
//! and the conversions of their columns.

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::time::{SystemTime, UNIX_EPOCH};

/// The store's wall clock, for `created_ms` / `updated_ms`.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `u64` to a signed 64-bit database integer. Saturates: milliseconds past `i64::MAX` are
/// 292 million years away, and counts never get there.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    expect(dead_code, reason = "only the SQL stores and vaults convert integers")
)]
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
