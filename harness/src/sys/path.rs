//! Finding programs: the one PATH lookup of the crate. An executable file counts (a directory or a
//! file without an execute bit does not), as a shell would run it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The first executable `name` in a directory of `path` (a `PATH`-style list).
pub fn find_in(path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The first executable `name` in a directory of this process' `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    find_in(&std::env::var_os("PATH")?, name)
}

/// [`on_path`], else `/usr/sbin` or `/sbin`: Debian installs daemons such as dockerd there, off
/// a user's PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    on_path(name).or_else(|| find_in(OsStr::new("/usr/sbin:/sbin"), name))
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_the_first_executable_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(a.join("tool")).unwrap(); // a directory named like it
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("plain"), "").unwrap();
        std::fs::write(b.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_in(&path, "tool"), Some(b.join("tool")));
        assert_eq!(find_in(&path, "plain"), None);
        assert_eq!(find_in(&path, "missing"), None);
    }
}
