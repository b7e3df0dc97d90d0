//! The crate's one error type: why a filter library cannot be used. Each
//! message tells an operator what to fix.

use std::path::PathBuf;

/// Why a filter library cannot be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read the filter library {}: {reason}", path.display())]
    Read {
        /// The path as configured.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The file carries no ABI tag: not a library built with the SDK.
    #[error(
        "{} is not a nuncio filter library (it carries no ABI version): build it with \
         `go build -buildmode=c-shared` from a main package that imports sdk/go",
        path.display()
    )]
    NotAFilterLibrary {
        /// The path as configured.
        path: PathBuf,
    },
    /// Built for another ABI version.
    #[error(
        "library {} was built for ABI v{found}, this nuncio speaks v{}: rebuild it against sdk/go of this nuncio",
        path.display(),
        crate::abi::ABI_VERSION
    )]
    AbiMismatch {
        /// The path as configured.
        path: PathBuf,
        /// The version it was built for.
        found: u32,
    },
    /// `dlopen` failed.
    #[error("cannot load the filter library {}: {reason}", path.display())]
    Load {
        /// The path as configured.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// An export of the ABI is missing.
    #[error(
        "the filter library {} lacks `{symbol}`: it was not built with sdk/go of this nuncio (rebuild it, \
         then restart nuncio: its runtime is loaded already)",
        path.display()
    )]
    MissingSymbol {
        /// The path as configured.
        path: PathBuf,
        /// The export missing.
        symbol: &'static str,
    },
    /// The library refused the host table.
    #[error("the filter library {} refused nuncio's host functions (status {status}): rebuild it against sdk/go of this nuncio", path.display())]
    InitRefused {
        /// The path as configured.
        path: PathBuf,
        /// The status it answered.
        status: i32,
    },
    /// The process runs another library already.
    #[error(
        "nuncio already runs the filter library {}; a process loads one library, once (Go can neither unload \
         its runtime nor run two): restart nuncio to use {}",
        loaded.display(),
        wanted.display()
    )]
    AnotherLibrary {
        /// The library loaded.
        loaded: PathBuf,
        /// The one the config names.
        wanted: PathBuf,
    },
    /// The file changed since it was loaded.
    #[error(
        "the filter library {} changed on disk since nuncio loaded it; a loaded library cannot be replaced: \
         restart nuncio to run the new build",
        path.display()
    )]
    LibraryChanged {
        /// The path as configured.
        path: PathBuf,
    },
    /// The library loaded but failed its handshake earlier.
    #[error("the filter library {} was loaded but cannot be used ({reason}): restart nuncio", path.display())]
    Unusable {
        /// The path as configured.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
