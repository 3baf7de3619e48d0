//! Peer services the tests can use. The tests that need one are `#[ignore]`d with the service
//! named (`cargo test` counts them as ignored, never as passed); `cargo test -- --ignored` runs
//! them, and there a missing service fails the test.

/// The reason on every test that needs PostgreSQL.
pub const NEEDS_POSTGRES: &str = "needs PostgreSQL (DATABASE_URL)";

/// `DATABASE_URL`; fails the test when it is not set.
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{NEEDS_POSTGRES}: DATABASE_URL is not set; start one with `eval \"$(.ci/postgres.sh)\"`"
        ),
    }
}
