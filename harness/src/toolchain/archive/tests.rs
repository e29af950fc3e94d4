//! Tests of `archive`.

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
        Damage::MissingFile => text.push_str(&format!("{}  tools/extra/bin/x\n", "0".repeat(64))),
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
