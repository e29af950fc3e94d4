//! Builds the upstream tools (Kubernetes, etcd, kwok, Flux, task) from their published Go modules.
//!
//! Versions live in `toolchain/versions.yaml` (the one pin file). Each tool is built through a small
//! wrapper module generated from the upstream `go.mod`: its non-local `replace` directives are copied,
//! and local ones whose requirement is the `v0.0.0` placeholder (Kubernetes' staging repos) point at the
//! published staging module of the same release. Outputs land in a machine-wide cache keyed by version
//! (`~/.cache/k8s-ops-harness/tools/<tool>-<version>/bin`), Go's own caches stay at their defaults, so a
//! fresh clone relinks in minutes instead of recompiling Kubernetes. A fresh machine imports the
//! built tools as one archive instead (`archive`: `harness toolchain --import`,
//! `HARNESS_TOOLS_ARCHIVE`), and builds only what the archive lacks.
//!
//! Here: [`Toolchain`] (the cache: where each tool is, what is missing, in which order it is made).
//! `tool`: the table of tools; `versions`: the pins and the tested range; `go`: one build
//! from a Go module; `archive`: the built tools as one archive; [`prerequisites`]: what must be
//! installed before any build.

mod archive;
mod go;
pub mod prerequisites;
mod tool;
mod versions;

pub use archive::ImportReport;
pub(crate) use go::writable_copy;
pub use tool::Tool;
pub use versions::{OVERRIDES, Versions};

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// The machine-wide cache of built tools.
#[derive(Debug, Clone)]
pub struct Toolchain {
    root: PathBuf,
    versions: Versions,
    /// Imported before the first build when a tool is missing (`HARNESS_TOOLS_ARCHIVE`).
    archive: Option<PathBuf>,
}

/// The archives this process has imported: one import per archive, whichever tool is missing.
static IMPORTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl Toolchain {
    /// A cache at `root` of the pinned versions, with no archive to import.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self {
            root: root.into(),
            versions: Versions::pinned()?,
            archive: None,
        })
    }

    /// `$HARNESS_CACHE`, else `$XDG_CACHE_HOME/k8s-ops-harness`, else `~/.cache/k8s-ops-harness`;
    /// `$HARNESS_TOOLS_ARCHIVE` is imported before anything missing is built.
    pub fn from_env() -> Result<Self> {
        let config = crate::config::get();
        let root = match &config.cache {
            Some(dir) => dir.clone(),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .context("neither HARNESS_CACHE, XDG_CACHE_HOME nor HOME is set: set HARNESS_CACHE=/some/dir")?;
                base.join("k8s-ops-harness")
            }
        };
        Ok(Self {
            root,
            versions: Versions::pinned()?.with_overrides(|name| config.tool_version(name))?,
            archive: config.tools_archive.clone(),
        })
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// The machine-wide cache directory (tools, locks, image build contexts).
    pub fn cache_root(&self) -> &Path {
        &self.root
    }

    fn tool_dir(&self, tool: Tool) -> PathBuf {
        self.root
            .join("tools")
            .join(format!("{}-{}", tool.key(), self.versions.get(tool)))
    }

    /// Directory holding the binaries of `tool` (built or not).
    pub fn bin_dir(&self, tool: Tool) -> PathBuf {
        self.tool_dir(tool).join("bin")
    }

    /// Path of one binary, e.g. `binary(Tool::Kubernetes, "kube-apiserver")`.
    pub fn binary(&self, tool: Tool, name: &str) -> PathBuf {
        self.bin_dir(tool).join(name)
    }

    /// The source of `tool`'s pinned module in Go's module cache (downloaded if needed).
    pub fn module_dir(&self, tool: Tool) -> Result<PathBuf> {
        go::go_mod_download(tool.module(), self.versions.get(tool), "Dir")
    }

    /// The CRDs of a Flux controller, copied from its module next to its binary.
    pub fn crd_dir(&self, tool: Tool) -> PathBuf {
        self.tool_dir(tool).join("crds")
    }

    pub fn is_built(&self, tool: Tool) -> bool {
        tool.packages()
            .iter()
            .all(|(_, bin)| self.binary(tool, bin).is_file())
            && (!tool.ships_crds() || self.crd_dir(tool).is_dir())
    }

    /// `PATH` with the operator tools (task, flux, kubectl) first, as the Taskfiles expect them.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![
            self.bin_dir(Tool::Task),
            self.bin_dir(Tool::Flux),
            self.bin_dir(Tool::Kubernetes),
        ];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).expect("toolchain paths contain no separator")
    }

    /// Builds every tool that is not in the cache yet.
    pub fn ensure_all(&self) -> Result<()> {
        self.ensure(&Tool::ALL)
    }

    /// Builds the given tools if they are not in the cache yet, after importing
    /// `HARNESS_TOOLS_ARCHIVE` (once per process). Safe to call from several processes at once: a
    /// per-tool lock file serialises the builds, and an import only adds absent directories.
    pub fn ensure(&self, tools: &[Tool]) -> Result<()> {
        let missing = |tc: &Self| -> Vec<Tool> {
            tools.iter().copied().filter(|t| !tc.is_built(*t)).collect()
        };
        if missing(self).is_empty() {
            return Ok(());
        }
        self.import_configured_archive()?;
        let missing = missing(self);
        if missing.is_empty() {
            return Ok(());
        }
        crate::toolchain::prerequisites::check()?;
        let total = missing.len();
        let secs: u64 = missing.iter().map(|t| t.cold_build_secs()).sum();
        let names: Vec<&str> = missing.iter().map(|t| t.key()).collect();
        eprintln!(
            "toolchain: building {total} tools ({}), about {} min on 2 cores with Go's caches empty (less when warm); an archive skips this: `harness toolchain --import FILE`",
            names.join(", "),
            secs.div_ceil(60)
        );
        for (i, tool) in missing.into_iter().enumerate() {
            self.build_locked(tool, (i + 1, total))?;
        }
        Ok(())
    }

    /// Imports `HARNESS_TOOLS_ARCHIVE` unless this process already has.
    fn import_configured_archive(&self) -> Result<()> {
        let Some(archive) = &self.archive else {
            return Ok(());
        };
        let mut imported = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
        if imported.contains(archive) {
            return Ok(());
        }
        let report = self
            .import(archive)
            .context("HARNESS_TOOLS_ARCHIVE: fix or unset it")?;
        eprintln!("toolchain: imported {}: {report}", archive.display());
        imported.push(archive.clone());
        Ok(())
    }
}
