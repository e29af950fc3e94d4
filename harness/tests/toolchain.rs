//! The build from source stays the path for whatever an archive lacks: the smallest tool, go-task,
//! built from its published Go module into an empty cache, without DWARF or build paths and with
//! its version. (Import and export are unit tests of `toolchain::archive`.)

use harness::toolchain::{Tool, Toolchain};

#[test]
fn go_task_builds_from_its_module_into_an_empty_cache() {
    let cache = tempfile::tempdir().unwrap();
    let toolchain = Toolchain::at(cache.path()).unwrap();
    assert!(!toolchain.is_built(Tool::Task));
    toolchain.ensure(&[Tool::Task]).unwrap();

    let task = toolchain.binary(Tool::Task, "task");
    let pinned = toolchain.versions().get(Tool::Task).trim_start_matches('v');
    let version = duct::cmd!(&task, "--version").read().unwrap();
    assert_eq!(version.trim(), pinned, "task --version");
    let build = duct::cmd!("go", "version", "-m", &task).read().unwrap();
    assert!(build.contains("build\t-trimpath=true"), "{build}");
    // Go records no -ldflags under -trimpath: the sections tell instead (-w: no DWARF, -s: no
    // symbol table). `go tool nm` lists the symbol table and refuses a binary without one.
    let bytes = std::fs::read(&task).unwrap();
    let has = |name: &[u8]| bytes.windows(name.len()).any(|w| w == name);
    assert!(!has(b".debug_info"), "DWARF linked into {}", task.display());
    let nm = duct::cmd!("go", "tool", "nm", &task)
        .unchecked()
        .stderr_to_stdout()
        .read()
        .unwrap();
    assert!(
        nm.contains("no symbol section"),
        "a symbol table: {}",
        &nm[..nm.len().min(200)]
    );
}
