//! Opening a run store for the commands that read one (`runs`, `trace`).
//!
//! The store API is async; these commands are one-shot reads, so each runs on a small
//! current-thread runtime made here.

use std::future::Future;
use std::io;
use std::path::Path;

use nanovm_runtime::store::SqliteStore;

use crate::error::Error;

/// Runs `f` on a current-thread tokio runtime.
pub fn block_on<F: Future>(f: F) -> Result<F::Output, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// Opens the SQLite store at `path` read-only: it must exist and hold a nanovm store.
/// Inspection never creates a file or writes a schema into one (an empty file stays empty).
pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
    if !path.is_file() {
        return Err(Error::io(path, io::Error::from(io::ErrorKind::NotFound)));
    }
    SqliteStore::open_read_only(path)
        .await
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}
