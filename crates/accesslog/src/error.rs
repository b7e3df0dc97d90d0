//! The crate's error type.

/// Why a format string was refused.
///
/// The message names the command as written and its 1-based column in
/// characters, e.g. ``%FOO%` at column 12: unknown command``; for a JSON
/// format it starts with the key, e.g. ``key `status`: ...``. Opening a
/// [`Sink`](crate::Sink) fails with the operating system's
/// [`std::io::Error`] instead, which carries no format position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);
