//! Exclusive advisory file locks (`flock`): held while the returned guard lives, released by the
//! kernel when the process dies in any way, so a crash never leaves a lock behind.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// A held lock; dropping it releases the lock.
pub type FileLock = Flock<fs::File>;

/// Opens (creating it and its directory) `path` without truncating it: a lock file may carry what
/// its holder wrote (an owner's pid), which someone who fails to take the lock wants to read.
fn open(path: &Path) -> Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))
}

/// Waits until this process holds the exclusive lock of `path`.
pub fn exclusive(path: &Path) -> Result<FileLock> {
    Flock::lock(open(path)?, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

/// The exclusive lock of `path` when nobody holds it; `None` when another holder does.
pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
    match Flock::lock(open(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_to_a_second_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/one.lock");
        let first = try_exclusive(&path).unwrap().expect("free at first");
        assert!(try_exclusive(&path).unwrap().is_none(), "taken twice");
        drop(first);
        let again = exclusive(&path).unwrap();
        assert!(try_exclusive(&path).unwrap().is_none());
        drop(again);
    }
}
