//! Opening a run store for the commands that read or act on one (`runs`, `trace`, `deliver`,
//! `cancel`, `reconcile`, `stats`): `--db FILE` is a SQLite store, `--db postgres://...` (or
//! `postgresql://...`) a PostgreSQL one.
//!
//! The store API is async; these commands are one-shot, so each runs on a small
//! current-thread runtime made here.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanovm_runtime::store::{JournalStore, PostgresStore, SqliteStore};
use nanovm_runtime::vault::Vault;

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

/// A `--db` argument: a SQLite file or a PostgreSQL URL.
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl Db {
    /// Reads a `--db` argument (clap's value parser).
    pub fn parse(s: &str) -> Result<Db, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Db::Postgres(s.to_string()))
        } else if s.contains("://") {
            Err(format!(
                "`{}` is neither a file nor a postgres:// URL",
                redact(s)
            ))
        } else {
            Ok(Db::Sqlite(PathBuf::from(s)))
        }
    }

    /// How messages name the store: the file, or the URL without its password.
    pub fn name(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(url) => redact(url),
        }
    }

    /// A store error about this database (exit 2).
    pub fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Usage(format!("{}: {e}", self.name()))
    }

    /// Opens the store. A SQLite file must exist and hold a nanovm store; read-only unless
    /// `write` (the acts), and never created. PostgreSQL: connects (the store creates its
    /// tables if they are missing, as every process that opens it does).
    pub async fn open(&self, write: bool) -> Result<Arc<dyn JournalStore>, Error> {
        match self {
            Db::Sqlite(path) if !write => Ok(Arc::new(open(path).await?)),
            Db::Sqlite(path) => {
                if !path.is_file() {
                    return Err(Error::io(path, io::Error::from(io::ErrorKind::NotFound)));
                }
                // A file that is not a nanovm store is refused before anything is written.
                open(path).await?;
                let store = SqliteStore::open(path).await.map_err(|e| self.error(e))?;
                Ok(Arc::new(store))
            }
            Db::Postgres(url) => {
                let store = PostgresStore::connect(url)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(Arc::new(store))
            }
        }
    }
}

impl Db {
    /// Opens the store for writing with the vault in the same database (`nanovm erase`).
    pub async fn open_with_vault(&self) -> Result<(Arc<dyn JournalStore>, Arc<dyn Vault>), Error> {
        match self {
            Db::Sqlite(path) => {
                if !path.is_file() {
                    return Err(Error::io(path, io::Error::from(io::ErrorKind::NotFound)));
                }
                open(path).await?;
                let store = SqliteStore::open(path).await.map_err(|e| self.error(e))?;
                let vault = store.vault();
                Ok((Arc::new(store), Arc::new(vault)))
            }
            Db::Postgres(url) => {
                let store = PostgresStore::connect(url)
                    .await
                    .map_err(|e| self.error(e))?;
                let vault = store.vault();
                Ok((Arc::new(store), Arc::new(vault)))
            }
        }
    }
}

/// `url` without the password of its user-info part (`postgres://u:***@host/db`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Db, redact};

    #[test]
    fn urls_are_named_without_their_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/nanovm"),
            "postgres://app:***@db:5432/nanovm"
        );
        assert_eq!(redact("postgres://db/nanovm"), "postgres://db/nanovm");
        assert!(matches!(Db::parse("runs.db"), Ok(Db::Sqlite(_))));
        assert!(matches!(
            Db::parse("postgresql://u@h/d"),
            Ok(Db::Postgres(_))
        ));
        assert!(
            Db::parse("mysql://u:pw@h/d")
                .unwrap_err()
                .contains("u:***@h")
        );
    }
}
