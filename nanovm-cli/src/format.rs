//! `--format`: text for people, JSON for scripts.

/// How a store command prints its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table or a sentence, for people.
    Text,
    /// One JSON object on one line, of a documented shape, for scripts.
    Json,
}
