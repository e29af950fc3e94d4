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
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::toolchain::Tool;

    /// Every file below `root` with its bytes and mode: what "the cache as it was" means.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        let mut files = Vec::new();
        if root.is_dir() {
            list_files(root, Path::new(""), &mut files).unwrap();
        }
        files
            .into_iter()
            .map(|f| {
                let path = root.join(&f);
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                (f, (fs::read(&path).unwrap(), mode))
            })
            .collect()
    }

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The directory name of `tool` at its pin.
    fn dir(toolchain: &Toolchain, tool: Tool) -> String {
        format!("{}-{}", tool.key(), toolchain.versions.get(tool))
    }

    /// A cache holding go-task and source-controller (with its CRDs) at their pins and a go-task
    /// of a version nobody pins; the binaries are stand-in bytes, the layout is the real one.
    fn built_cache(root: &Path) -> Toolchain {
        let toolchain = Toolchain::at(root).unwrap();
        let tools = root.join("tools");
        let task = dir(&toolchain, Tool::Task);
        write(&tools.join(&task).join("bin/task"), b"\x7fELF task", 0o755);
        let source = dir(&toolchain, Tool::SourceController);
        let bin = tools.join(&source).join("bin/source-controller");
        write(&bin, &[7u8; 300_000], 0o755);
        let crd = tools
            .join(&source)
            .join("crds/source.toolkit.fluxcd.io_gitrepositories.yaml");
        write(&crd, b"kind: CustomResourceDefinition\n", 0o644);
        write(&tools.join("task-v0.0.1/bin/task"), b"old", 0o755);
        toolchain
    }

    /// A cache that built go-task itself; returns it and that binary's path.
    fn cache_with_its_own_task(root: &Path) -> (Toolchain, PathBuf) {
        let to = Toolchain::at(root).unwrap();
        let mine = to
            .root
            .join("tools")
            .join(dir(&to, Tool::Task))
            .join("bin/task");
        write(&mine, b"built here", 0o755);
        (to, mine)
    }

    #[test]
    fn an_export_imports_into_an_empty_cache_as_it_was() {
        let scratch = tempfile::tempdir().unwrap();
        let from = built_cache(&scratch.path().join("from"));
        let archive = scratch.path().join("tools.tar.zst");
        let exported = from.export(&archive).unwrap();
        let expected = vec![dir(&from, Tool::SourceController), dir(&from, Tool::Task)];
        assert_eq!(exported, expected, "the pinned, built directories only");

        let to = Toolchain::at(scratch.path().join("to")).unwrap();
        let report = to.import(&archive).unwrap();
        assert_eq!(report.added, expected);
        let mut want = snapshot(&from.root.join("tools"));
        want.retain(|path, _| !path.starts_with("task-v0.0.1"));
        assert_eq!(snapshot(&to.root.join("tools")), want, "bytes and modes");
        assert!(to.is_built(Tool::Task) && to.is_built(Tool::SourceController));
        let leftovers: Vec<_> = fs::read_dir(&to.root).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no staging left: {leftovers:?}");

        let again = to.import(&archive).unwrap();
        assert_eq!((again.added.len(), again.present), (0, expected));
        assert_eq!(
            snapshot(&to.root.join("tools")),
            want,
            "a second import changes nothing"
        );
    }

    #[test]
    fn an_import_leaves_present_directories_and_ignores_unpinned_versions() {
        let scratch = tempfile::tempdir().unwrap();
        let from = built_cache(&scratch.path().join("from"));
        let archive = scratch.path().join("tools.tar.zst");
        let tools = from.root.join("tools");
        let mut files = Vec::new();
        for dir in ["task-v0.0.1", &dir(&from, Tool::Task)] {
            list_files(&tools, Path::new(dir), &mut files).unwrap();
        }
        write_archive(
            &fs::File::create(&archive).unwrap(),
            &tools,
            &files,
            &manifest(&tools, &files),
        )
        .unwrap();

        let (to, mine) = cache_with_its_own_task(&scratch.path().join("to"));
        let report = to.import(&archive).unwrap();
        assert_eq!(report.present, vec![dir(&to, Tool::Task)]);
        assert_eq!(report.ignored, vec!["task-v0.0.1".to_string()]);
        assert!(report.added.is_empty());
        assert_eq!(fs::read(&mine).unwrap(), b"built here");
        assert!(!to.root.join("tools/task-v0.0.1").exists());
    }

    fn manifest(tools: &Path, files: &[PathBuf]) -> String {
        files
            .iter()
            .map(|f| {
                format!(
                    "{}  tools/{}\n",
                    sha256_of(&tools.join(f)).unwrap(),
                    f.display()
                )
            })
            .collect()
    }

    /// Ways an archive can be broken, and the file the refusal names.
    enum Damage {
        /// A file's bytes differ from its manifest line.
        Checksum,
        /// The manifest lists a file the archive does not carry.
        MissingFile,
        /// The archive carries a file the manifest does not list.
        Unlisted,
        /// The archive is cut off halfway.
        Truncated,
        /// An entry lies outside `tools/`.
        Outside,
        /// No manifest at all.
        NoManifest,
    }

    fn damaged_archive(from: &Toolchain, archive: &Path, damage: &Damage) {
        let tools = from.root.join("tools");
        let mut files = Vec::new();
        list_files(
            &tools,
            Path::new(&dir(from, Tool::SourceController)),
            &mut files,
        )
        .unwrap();
        let mut text = manifest(&tools, &files);
        let out = fs::File::create(archive).unwrap();
        match damage {
            Damage::Checksum => text = text.replacen(&text[..8], "00000000", 1),
            Damage::MissingFile => {
                text.push_str(&format!("{}  tools/extra/bin/x\n", "0".repeat(64)))
            }
            Damage::Unlisted => text = text.lines().skip(1).map(|l| format!("{l}\n")).collect(),
            Damage::Truncated => {}
            Damage::Outside | Damage::NoManifest => {
                let mut encoder = zstd::stream::write::Encoder::new(&out, 3).unwrap();
                let mut tar = tar::Builder::new(&mut encoder);
                let mut header = tar::Header::new_gnu();
                header.set_size(3);
                header.set_mode(0o644);
                let name = if matches!(damage, Damage::Outside) {
                    "etc/passwd"
                } else {
                    "tools/x"
                };
                tar.append_data(&mut header, name, &b"abc"[..]).unwrap();
                tar.into_inner().unwrap();
                encoder.finish().unwrap();
                return;
            }
        }
        write_archive(&out, &tools, &files, &text).unwrap();
        if matches!(damage, Damage::Truncated) {
            out.set_len(out.metadata().unwrap().len() / 2).unwrap();
        }
    }

    #[rstest::rstest]
    #[case::checksum(Damage::Checksum, "bin/source-controller does not match its checksum")]
    #[case::missing_file(
        Damage::MissingFile,
        "tools/extra/bin/x is in the manifest but not in the archive"
    )]
    #[case::unlisted(Damage::Unlisted, "is in the archive but not in the manifest")]
    #[case::truncated(Damage::Truncated, "truncated or corrupt archive")]
    #[case::outside(Damage::Outside, "etc/passwd is outside tools/")]
    #[case::no_manifest(Damage::NoManifest, "tools/MANIFEST.sha256 is missing")]
    fn a_damaged_archive_is_refused_in_one_line_and_the_cache_stays_as_it_was(
        #[case] damage: Damage,
        #[case] names: &str,
    ) {
        let scratch = tempfile::tempdir().unwrap();
        let from = built_cache(&scratch.path().join("from"));
        let archive = scratch.path().join("damaged.tar.zst");
        damaged_archive(&from, &archive, &damage);
        let (to, _) = cache_with_its_own_task(&scratch.path().join("to"));
        let before = snapshot(&to.root);

        let error = format!("{:#}", to.import(&archive).unwrap_err());
        assert!(error.contains(names), "{error}");
        assert!(error.contains("damaged.tar.zst refused"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
        assert_eq!(snapshot(&to.root), before, "the cache changed");
        let entries: Vec<_> = fs::read_dir(&to.root).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1, "staging left behind: {entries:?}");
    }
}
