//! The process's one filter library: found, checked and loaded once.
//!
//! Go can neither unload its runtime nor run two in one process, so the
//! first library a config names is the process's for good. Loading:
//!
//! 1. read the file and find its ABI tag ([`ABI_TAG`](crate::abi::ABI_TAG)
//!    and a version) **before** loading it: a library for another ABI
//!    version is refused without starting its runtime, so the process can
//!    still load the right one;
//! 2. `dlopen` it (its runtime starts), resolve its exports, ask its
//!    version again (the handshake) and hand it the host table.
//!
//! A config naming another file later is refused (the old config keeps
//! serving); the same file, unchanged, is the same library; the same path
//! with a different file on disk is refused too (restart to run a new
//! build). Loads are serialized; once loaded, the library is read without
//! a lock.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::abi::{ABI_TAG, ABI_VERSION};
use crate::boundary::{Library, OpenError};
use crate::error::Error;

/// The file a library was loaded from, as it was then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: i64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity { device: meta.dev(), inode: meta.ino(), len: meta.len(), modified: meta.mtime() })
    }
}

/// What is loaded: the library, or, when its handshake failed after its
/// runtime started, why it cannot be used.
struct Loaded {
    path: PathBuf,
    identity: FileIdentity,
    library: Result<Library, String>,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// The loaded library, if one loaded and passed its handshake.
pub(crate) fn loaded() -> Option<Library> {
    LOADED.get().and_then(|l| l.library.as_ref().ok().copied())
}

/// The path of the loaded library, if any.
pub fn loaded_path() -> Option<&'static Path> {
    LOADED.get().map(|l| l.path.as_path())
}

/// The library at `path` (relative paths from the working directory),
/// loading it if no library is loaded yet. On the thread that loads the
/// config (main), never on a worker.
pub(crate) fn library(path: &Path) -> Result<Library, Error> {
    let canonical =
        std::fs::canonicalize(path).map_err(|e| Error::Read { path: path.to_owned(), reason: e.to_string() })?;
    if let Some(loaded) = LOADED.get() {
        return reuse(loaded, path, &canonical);
    }
    let _serial = LOADING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(loaded) = LOADED.get() {
        return reuse(loaded, path, &canonical);
    }
    let identity =
        FileIdentity::of(&canonical).map_err(|e| Error::Read { path: path.to_owned(), reason: e.to_string() })?;
    let bytes = std::fs::read(&canonical).map_err(|e| Error::Read { path: path.to_owned(), reason: e.to_string() })?;
    match tagged_version(&bytes) {
        None => return Err(Error::NotAFilterLibrary { path: path.to_owned() }),
        Some(version) if version != ABI_VERSION => {
            return Err(Error::AbiMismatch { path: path.to_owned(), found: version });
        }
        Some(_) => {}
    }
    drop(bytes);
    let library = match Library::open(&canonical) {
        Ok(library) => library,
        // Nothing was loaded (or nothing that started): another file may
        // still be tried.
        Err(OpenError::Open(reason)) => return Err(Error::Load { path: path.to_owned(), reason }),
        Err(OpenError::Symbol(symbol)) => {
            let error = Error::MissingSymbol { path: path.to_owned(), symbol };
            keep(canonical, identity, Err(error.to_string()));
            return Err(error);
        }
    };
    let handshake = match library.abi_version() {
        ABI_VERSION => match library.init() {
            0 => Ok(library),
            code => Err(Error::InitRefused { path: path.to_owned(), status: code }),
        },
        found => Err(Error::AbiMismatch { path: path.to_owned(), found }),
    };
    match handshake {
        Ok(library) => {
            tracing::info!(library = %canonical.display(), "loaded the filter library (ABI v{ABI_VERSION})");
            keep(canonical, identity, Ok(library));
            Ok(library)
        }
        Err(error) => {
            keep(canonical, identity, Err(error.to_string()));
            Err(error)
        }
    }
}

fn keep(path: PathBuf, identity: FileIdentity, library: Result<Library, String>) {
    let _ = LOADED.set(Loaded { path, identity, library });
}

fn reuse(loaded: &Loaded, path: &Path, canonical: &Path) -> Result<Library, Error> {
    if loaded.path != canonical {
        return Err(Error::AnotherLibrary { loaded: loaded.path.clone(), wanted: path.to_owned() });
    }
    match FileIdentity::of(canonical) {
        Ok(identity) if identity == loaded.identity => {}
        _ => return Err(Error::LibraryChanged { path: path.to_owned() }),
    }
    loaded.library.clone().map_err(|reason| Error::Unusable { path: path.to_owned(), reason })
}

/// The ABI version in a library file's tag: the decimal number after the
/// first [`ABI_TAG`] that is followed by one.
fn tagged_version(bytes: &[u8]) -> Option<u32> {
    let tag = ABI_TAG.as_bytes();
    let mut rest = bytes;
    while let Some(at) = rest.windows(tag.len()).position(|w| w == tag) {
        rest = &rest[at + tag.len()..];
        let digits: Vec<u8> = rest.iter().copied().take_while(u8::is_ascii_digit).take(9).collect();
        if let Some(version) = std::str::from_utf8(&digits).ok().and_then(|d| d.parse().ok()) {
            return Some(version);
        }
    }
    None
}

/// The library's live objects (for tests and operators): streams it
/// knows, calls waiting for an answer, goroutines its SDK started that
/// still run. `None` when no library is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryStats {
    /// Streams the library holds state for.
    pub streams: u64,
    /// Posted calls and HTTP calls waiting for their answer.
    pub calls: u64,
    /// Goroutines started through the SDK that have not returned.
    pub goroutines: u64,
}

/// The loaded library's live objects. Calls into the library: not from a
/// worker while it serves.
pub fn library_stats() -> Option<LibraryStats> {
    let bytes = loaded()?.stats();
    let mut words = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
    Some(LibraryStats {
        streams: words.next().unwrap_or(0),
        calls: words.next().unwrap_or(0),
        goroutines: words.next().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_gives_the_version() {
        assert_eq!(tagged_version(b"\0\0nuncio-filter-abi-version:1\0"), Some(1));
        assert_eq!(tagged_version(b"xxnuncio-filter-abi-version:12;"), Some(12));
        assert_eq!(tagged_version(b"nuncio-filter-abi-version:"), None);
        assert_eq!(tagged_version(b"nuncio-filter-abi-version:%d, nuncio-filter-abi-version:3"), Some(3));
        assert_eq!(tagged_version(b"no tag here"), None);
    }
}
