//! What several of this crate's test binaries share.

use std::path::Path;
use std::time::SystemTime;

/// Gives the file at `path` the modification time `at`, as a write the index never
/// recorded (another writer's, or one a power loss kept without its counters) leaves it.
pub fn set_modified(path: &Path, at: SystemTime) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(at).unwrap();
}
