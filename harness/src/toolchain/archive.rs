//! The built toolchain as one archive, so that a fresh machine (a CI runner, a teammate's laptop, a
//! host without a Go proxy) gets every pinned tool in minutes instead of a 30-45 min cold build.
//!
//! The archive is a zstd-compressed tar in the cache's own layout (`tools/<tool>-<version>/bin/…`,
//! `…/crds/…`) whose first entry, `tools/MANIFEST.sha256`, has one `sha256sum` line per file.
//! It is compressed with a 2 GiB window (long-distance matching, `zstd --long=31`): the Kubernetes
//! binaries share most of their code, and the archive shrinks by a fifth. `zstd -dc --long=31 FILE
//! | tar -x` reads it too (that is what `../shared/toolseed/unpack` does).
//!
//! An import verifies every file before it touches the cache, then moves each absent tool directory
//! in with one rename from a staging directory on the same filesystem: a refused archive leaves
//! the cache exactly as it was, and a reader never sees half a tool.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{OVERRIDES, Tool, Toolchain, Versions};

/// The manifest's path inside the archive (and inside the unpacked `tools/`).
const MANIFEST: &str = "tools/MANIFEST.sha256";
/// zstd's window for long-distance matching: 2^31 bytes, as `zstd --long=31`.
const WINDOW_LOG: u32 = 31;
/// Measured on the pinned tools (1.3 GiB) on 2 cores: level 6 gives 258 MB in 9 s, 12 gives 245 MB
/// in 21 s, 19 gives 191 MB in 5 min (docs/harness.md).
const LEVEL: i32 = 12;

/// What an import did with each tool directory of the archive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Moved into the cache.
    pub added: Vec<String>,
    /// Already in the cache: left as it was.
    pub present: Vec<String>,
    /// Of a version that toolchain/versions.yaml does not pin: not imported.
    pub ignored: Vec<String>,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |dirs: &[String]| match dirs {
            [] => String::new(),
            dirs => format!(": {}", dirs.join(" ")),
        };
        write!(f, "added {}{}", self.added.len(), list(&self.added))?;
        write!(
            f,
            "; already present, left as they were {}",
            self.present.len()
        )?;
        if !self.ignored.is_empty() {
            write!(
                f,
                "; not pinned, ignored {}{}",
                self.ignored.len(),
                list(&self.ignored)
            )?;
        }
        Ok(())
    }
}

impl Toolchain {
    /// The tool directories (`<key>-<version>`) of every pinned version: each tool at its pin and
    /// the operator tools at both ends of their tested range, whatever this run overrides.
    pub fn pinned_dirs(&self) -> Result<BTreeSet<String>> {
        let pinned = Versions::pinned()?;
        let mut dirs = BTreeSet::new();
        for versions in [&pinned, &self.versions] {
            for tool in Tool::EVERY {
                dirs.insert(format!("{}-{}", tool.key(), versions.get(tool)));
            }
        }
        for (tool, _) in OVERRIDES {
            for version in pinned.range(tool)? {
                dirs.insert(format!("{}-{version}", tool.key()));
            }
        }
        Ok(dirs)
    }

    /// Writes every built tool directory of a pinned version in the cache to `file` (replaced
    /// only once the archive is complete) and returns the directories it holds.
    pub fn export(&self, file: &Path) -> Result<Vec<String>> {
        let tools = self.root.join("tools");
        let dirs: Vec<String> = self
            .pinned_dirs()?
            .into_iter()
            .filter(|dir| tools.join(dir).join("bin").is_dir())
            .collect();
        if dirs.is_empty() {
            bail!(
                "{} holds no built tool of a pinned version: run `harness toolchain` first",
                tools.display()
            );
        }
        let mut files = Vec::new();
        for dir in &dirs {
            list_files(&tools, Path::new(dir), &mut files)?;
        }
        let mut manifest = String::new();
        for relative in &files {
            let hash = sha256_of(&tools.join(relative))?;
            manifest.push_str(&format!("{hash}  tools/{}\n", relative.display()));
        }
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
        let partial = tempfile::NamedTempFile::new_in(parent.unwrap_or(Path::new(".")))
            .with_context(|| format!("cannot write beside {}", file.display()))?;
        write_archive(partial.as_file(), &tools, &files, &manifest)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(partial.path(), fs::Permissions::from_mode(0o644))?;
        partial
            .persist(file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(dirs)
    }

    /// Adds each tool directory of a pinned version that the cache lacks from an archive of
    /// [`Toolchain::export`]. Every file is checked against the manifest first: a missing file, a
    /// checksum mismatch, a truncated archive or a path outside `tools/` is refused, naming the
    /// file, with the cache as it was.
    pub fn import(&self, file: &Path) -> Result<ImportReport> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create the tool cache {}", self.root.display()))?;
        // Beside the cache's tools: each directory then moves in with one rename.
        let staging = tempfile::Builder::new()
            .prefix(".import-")
            .tempdir_in(&self.root)?;
        let refused = |e: anyhow::Error| e.context(format!("{} refused", file.display()));
        unpack(file, staging.path()).map_err(refused)?;
        verify(staging.path()).map_err(refused)?;
        self.move_in(&staging.path().join("tools"))
    }

    fn move_in(&self, unpacked: &Path) -> Result<ImportReport> {
        let pinned = self.pinned_dirs()?;
        let tools = self.root.join("tools");
        fs::create_dir_all(&tools)?;
        let mut report = ImportReport::default();
        let mut entries: Vec<_> = fs::read_dir(unpacked)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.iter().filter(|e| e.path().is_dir()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !pinned.contains(&name) {
                report.ignored.push(name);
            } else if tools.join(&name).exists()
                // Built or imported by another process meanwhile: theirs stays.
                || fs::rename(entry.path(), tools.join(&name)).is_err()
            {
                report.present.push(name);
            } else {
                report.added.push(name);
            }
        }
        Ok(report)
    }
}

/// Every regular file below `root/dir`, relative to `root`, in a stable order.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(dir))
        .with_context(|| format!("cannot read {}", root.join(dir).display()))?
        .collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let relative = dir.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_files(root, &relative, out)?;
        } else if kind.is_file() {
            out.push(relative);
        } else {
            bail!(
                "{} is neither a file nor a directory: a tool directory holds only those",
                root.join(relative).display()
            );
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The tar stream, manifest first, with fixed owner and times (the same cache gives the same tar).
fn write_archive(out: &fs::File, tools: &Path, files: &[PathBuf], manifest: &str) -> Result<()> {
    let mut encoder = zstd::stream::write::Encoder::new(io::BufWriter::new(out), LEVEL)?;
    encoder.long_distance_matching(true)?;
    encoder.window_log(WINDOW_LOG)?;
    encoder.multithread(2)?;
    let mut tar = tar::Builder::new(encoder);
    let header = |size: u64, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    };
    let mut first = header(manifest.len() as u64, 0o644);
    tar.append_data(&mut first, MANIFEST, manifest.as_bytes())?;
    for relative in files {
        let path = tools.join(relative);
        let file = fs::File::open(&path)?;
        let meta = file.metadata()?;
        use std::os::unix::fs::PermissionsExt;
        let mut entry = header(meta.len(), meta.permissions().mode() & 0o777);
        tar.append_data(&mut entry, Path::new("tools").join(relative), file)
            .with_context(|| format!("cannot archive {}", path.display()))?;
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}

/// Unpacks the archive into `staging`, refusing anything but files and directories below `tools/`.
fn unpack(file: &Path, staging: &Path) -> Result<()> {
    let input = fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut decoder = zstd::stream::read::Decoder::new(input)?;
    decoder.window_log_max(WINDOW_LOG)?;
    let mut archive = tar::Archive::new(decoder);
    let corrupt = |e: io::Error| anyhow::anyhow!("truncated or corrupt archive: {e}");
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let inside = path.components().all(|c| matches!(c, Component::Normal(_)))
            && path.starts_with("tools");
        if !inside {
            bail!("{} is outside tools/", path.display());
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "{} is a {kind:?}, not a file or a directory",
                path.display()
            );
        }
        entry.unpack_in(staging).map_err(corrupt)?;
    }
    // The tar's end may fall on a block boundary before the compressed stream ends: read the
    // stream to its end so that a cut-off frame is found.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

/// Checks every unpacked file against the manifest, and that the manifest lists every file.
fn verify(staging: &Path) -> Result<()> {
    let text = fs::read_to_string(staging.join(MANIFEST)).map_err(|_| {
        anyhow::anyhow!("{MANIFEST} is missing (not an archive of `harness toolchain --export`)")
    })?;
    let mut listed = BTreeMap::new();
    for line in text.lines() {
        let Some((hash, path)) = line.split_once("  ") else {
            bail!("{MANIFEST} has a line that is not `<sha256>  <path>`: {line}");
        };
        listed.insert(PathBuf::from(path), hash.to_string());
    }
    for (path, hash) in &listed {
        let file = staging.join(path);
        if !file.is_file() {
            bail!(
                "{} is in the manifest but not in the archive",
                path.display()
            );
        }
        if sha256_of(&file)? != *hash {
            bail!(
                "{} does not match its checksum in the manifest",
                path.display()
            );
        }
    }
    let mut present = Vec::new();
    list_files(staging, Path::new("tools"), &mut present)?;
    if let Some(extra) = present
        .iter()
        .find(|p| p.as_path() != Path::new(MANIFEST) && !listed.contains_key(*p))
    {
        bail!(
            "{} is in the archive but not in the manifest",
            extra.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
