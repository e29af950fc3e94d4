//! One owner per state directory. Whoever starts or reaps an environment's processes holds the
//! exclusive lock of `<state dir>/owner.lock` for as long as it does (a `harness up`, a scenario
//! binary, `harness down` while it reaps, `harness images` for its engine's directory), so that
//! two commands on one directory can no longer stop each other's processes: the second one is
//! refused in one line naming the owner's pid and the way out. The kernel drops the lock when its
//! holder dies, however it dies, so a crash leaves nothing to clean up but the processes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::sys::lock::{self, FileLock};

/// The held lock of one state directory and the watcher that reaps it should this process die
/// ([`super::reaper`]); released when dropped.
#[derive(Debug)]
pub struct Owner {
    // Dropped in this order: the lock first, so that the watcher can take the directory, then the
    // watcher's pipe (its drop waits until the watcher is gone).
    _lock: FileLock,
    _reaper: super::reaper::Reaper,
    dir: PathBuf,
}

impl Owner {
    /// Takes `state_dir` (created if needed) for this process; fails naming the owner when
    /// another process holds it.
    pub fn claim(state_dir: &Path) -> Result<Self> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
        let path = state_dir.join("owner.lock");
        let Some(mut held) = lock::try_exclusive(&path)? else {
            let owner = fs::read_to_string(&path).unwrap_or_default();
            let owner = owner.trim();
            return Err(crate::Error::StateDirOwned {
                dir: state_dir.to_path_buf(),
                owner: if owner.is_empty() {
                    "another process".to_string()
                } else {
                    owner.to_string()
                },
            }
            .into());
        };
        held.set_len(0)?;
        let command: Vec<String> = std::env::args().take(4).collect();
        write!(held, "pid {} ({})", std::process::id(), command.join(" "))?;
        Ok(Self {
            _lock: held,
            _reaper: super::reaper::Reaper::spawn(state_dir)?,
            dir: state_dir.to_path_buf(),
        })
    }

    /// The directory this owner holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_owner_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let first = Owner::claim(dir.path()).unwrap();
        let error = Owner::claim(dir.path()).unwrap_err();
        assert!(
            matches!(
                crate::error::kind_of(&error),
                Some(crate::Error::StateDirOwned { .. })
            ),
            "{error:#}"
        );
        let text = format!("{error:#}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(
            text.contains("harness -- down") && text.contains("--state-dir"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        drop(first);
        assert_eq!(Owner::claim(dir.path()).unwrap().dir(), dir.path());
    }
}
