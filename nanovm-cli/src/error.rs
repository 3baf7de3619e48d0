//! The one error type of the CLI: everything that is not a finding about the user's files
//! (those are diagnostics, broken entries or divergences, and exit 1) ends here and exits 2.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::escape::escape;

/// A usage or I/O error. Printed as `error: {self}` on stderr; the process exits 2.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing `path` failed.
    Io {
        /// The file (or `<stdout>`).
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The arguments make no sense together (e.g. several programs and no `--program`).
    Usage(String),
    /// An input the command needs intact is not (`diff` of a trace that fails verification):
    /// one message per broken input.
    Broken(Vec<String>),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: &Path, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A failed write to standard output.
    pub fn stdout(source: io::Error) -> Self {
        Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        }
    }

    /// A failed write to standard error.
    pub fn stderr(source: io::Error) -> Self {
        Error::Io {
            path: PathBuf::from("<stderr>"),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(f, "{}: no such file", escape(&path.display().to_string()))
            }
            Error::Io { path, source } => write!(
                f,
                "{}: {}",
                escape(&path.display().to_string()),
                escape(&source.to_string())
            ),
            // Messages quote run ids, names and paths from the command line and the store.
            Error::Usage(msg) => f.write_str(&escape(msg)),
            Error::Broken(msgs) => {
                let msgs: Vec<_> = msgs.iter().map(|m| escape(m)).collect();
                f.write_str(&msgs.join("\nerror: "))
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Usage(_) | Error::Broken(_) => None,
        }
    }
}

/// How a command that ran to the end went: its exit code is 0 or 1 ([`Error`] is 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Nothing to report: exit 0.
    Clean,
    /// The command found what it looks for (compile errors, a broken entry, a divergence): exit 1.
    Failed,
}
