//! Noticing that certificate files changed on disk, the way the config
//! file is watched: by their metadata, polled by the caller.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The metadata of a set of files (modification time, length, inode and
/// device of each, following symlinks, so that a Kubernetes secret's
/// `..data` link swap counts): two fingerprints differ when any file was
/// written, replaced, created or removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(PathBuf, Option<Stamp>)>);

/// Modification time, length, inode and device.
type Stamp = (Option<SystemTime>, u64, u64, u64);

impl Fingerprint {
    /// The fingerprint of `paths` now (a file that cannot be read counts as
    /// absent).
    pub fn of<'p>(paths: impl IntoIterator<Item = &'p Path>) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        Fingerprint(
            paths
                .into_iter()
                .map(|p| {
                    let stamp = std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len(), m.ino(), m.dev()));
                    (p.to_owned(), stamp)
                })
                .collect(),
        )
    }

    /// Whether it watches no file.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
