//! Builds the upstream tools (Kubernetes, etcd, kwok, Flux, task) from their published Go modules.
//!
//! Versions live in `toolchain/versions.yaml` (the one pin file). Each tool is built through a small
//! wrapper module generated from the upstream `go.mod`: its non-local `replace` directives are copied,
//! and local ones whose requirement is the `v0.0.0` placeholder (Kubernetes' staging repos) point at the
//! published staging module of the same release. Outputs land in a machine-wide cache keyed by version
//! (`~/.cache/k8s-ops-harness/tools/<tool>-<version>/bin`), Go's own caches stay at their defaults, so a
//! fresh clone relinks in minutes instead of recompiling Kubernetes. A fresh machine imports the
//! built tools as one archive instead ([`archive`]: `harness toolchain --import`,
//! `HARNESS_TOOLS_ARCHIVE`), and builds only what the archive lacks.

mod archive;
pub mod prerequisites;

pub use archive::ImportReport;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The pin file, embedded so that the binary does not depend on the working directory.
const VERSIONS_YAML: &str = include_str!("../../../toolchain/versions.yaml");
/// The bound of one `go` command: the longest, a cold build of Kubernetes' binaries, takes about
/// 10 minutes on 2 cores; a build that runs for an hour is stuck (killed, with everything it
/// started).
const GO_RUN_BOUND: Duration = Duration::from_secs(60 * 60);

/// One upstream tool: where its module is and which binaries it yields (its row of [`Tool::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Task,
    Flux,
    Kwok,
    Etcd,
    Kubernetes,
    SourceController,
    KustomizeController,
    HelmController,
    NotificationController,
    /// The OCI registry (CNCF distribution) that serves stand-in charts for sources that cannot be
    /// fetched here (`harness up --standins`, [`crate::gitops::standins`]).
    Registry,
    /// Only for the kind provider (and validating kind-configs/ here).
    Kind,
    /// kind provider, node image built here: kubelet, kubeadm, kube-proxy of the `kubernetes` pin.
    KubeNode,
    /// kind provider, node image built here: the cluster DNS kubeadm deploys.
    Coredns,
    /// kind provider, node image built here: `crictl`, which `kind load` and `kind export logs` run.
    Crictl,
}

/// Which link-time version stamp a tool needs: `flux check` rejects an API server whose version
/// is not a release, and the flux CLI and kwok report their own version from a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    None,
    Kubernetes,
    FluxCli,
    Kwok,
}

/// How one tool is built.
#[derive(Debug)]
struct Spec {
    /// Its key in `toolchain/versions.yaml` (and the name of its cache directory).
    key: &'static str,
    /// The pin it is built at: its own key, except the Kubernetes node binaries (`kubernetes`).
    version_key: &'static str,
    module: &'static str,
    /// `(package below the module, binary name)` pairs.
    packages: &'static [(&'static str, &'static str)],
    stamp: Stamp,
    /// Requirements of `v0.0.0` stand for the staging modules at the pin's `v0.` version.
    staging: bool,
    /// The flux CLI embeds `cmd/flux/manifests/*.yaml`, which its module zip lacks: built from a
    /// writable copy of the module with a placeholder manifest (the harness never runs `flux install`).
    builds_from_copy: bool,
    /// The Flux controllers ship their CRDs in the module (`config/crd/bases`); the harness installs them.
    ships_crds: bool,
    /// Rough cold-build time on 2 cores, shown while building.
    cold_build_hint: &'static str,
    /// A cold build on this project's 2-core machine, Go's caches empty (measured, docs/harness.md):
    /// the expected total announced before a first build.
    cold_build_secs: u64,
}

const fn spec(key: &'static str, module: &'static str) -> Spec {
    Spec {
        key,
        version_key: key,
        module,
        packages: &[],
        stamp: Stamp::None,
        staging: false,
        builds_from_copy: false,
        ships_crds: false,
        cold_build_hint: "3-8 min",
        cold_build_secs: 150,
    }
}

const fn controller(key: &'static str, module: &'static str) -> Spec {
    Spec {
        ships_crds: true,
        ..spec(key, module)
    }
}

impl Tool {
    /// Every tool, in the order of its variants.
    const EVERY: [Tool; 14] = [
        Tool::Task,
        Tool::Flux,
        Tool::Kwok,
        Tool::Etcd,
        Tool::Kubernetes,
        Tool::SourceController,
        Tool::KustomizeController,
        Tool::HelmController,
        Tool::NotificationController,
        Tool::Registry,
        Tool::Kind,
        Tool::KubeNode,
        Tool::Coredns,
        Tool::Crictl,
    ];

    /// How this tool is built (exhaustive: a new tool does not compile without its row).
    fn spec(self) -> &'static Spec {
        match self {
            Tool::Task => {
                &const {
                    Spec {
                        packages: &[("cmd/task", "task")],
                        cold_build_hint: "1-2 min",
                        cold_build_secs: 108,
                        ..spec("task", "github.com/go-task/task/v3")
                    }
                }
            }
            Tool::Flux => {
                &const {
                    Spec {
                        packages: &[("cmd/flux", "flux")],
                        stamp: Stamp::FluxCli,
                        builds_from_copy: true,
                        cold_build_secs: 275,
                        ..spec("flux", "github.com/fluxcd/flux2/v2")
                    }
                }
            }
            Tool::Kwok => {
                &const {
                    Spec {
                        packages: &[("cmd/kwok", "kwok"), ("cmd/kwokctl", "kwokctl")],
                        stamp: Stamp::Kwok,
                        cold_build_secs: 280,
                        ..spec("kwok", "sigs.k8s.io/kwok")
                    }
                }
            }
            Tool::Etcd => {
                &const {
                    Spec {
                        packages: &[("", "etcd")],
                        cold_build_hint: "2-3 min",
                        cold_build_secs: 99,
                        ..spec("etcd", "go.etcd.io/etcd/server/v3")
                    }
                }
            }
            Tool::Kubernetes => {
                &const {
                    Spec {
                        packages: &[
                            ("cmd/kube-apiserver", "kube-apiserver"),
                            ("cmd/kube-controller-manager", "kube-controller-manager"),
                            ("cmd/kube-scheduler", "kube-scheduler"),
                            ("cmd/kubectl", "kubectl"),
                        ],
                        stamp: Stamp::Kubernetes,
                        staging: true,
                        cold_build_hint: "10-20 min",
                        cold_build_secs: 644,
                        ..spec("kubernetes", "k8s.io/kubernetes")
                    }
                }
            }
            Tool::SourceController => {
                &const {
                    Spec {
                        packages: &[("", "source-controller")],
                        cold_build_secs: 550,
                        ..controller("source-controller", "github.com/fluxcd/source-controller")
                    }
                }
            }
            Tool::KustomizeController => {
                &const {
                    Spec {
                        packages: &[("", "kustomize-controller")],
                        cold_build_secs: 230,
                        ..controller(
                            "kustomize-controller",
                            "github.com/fluxcd/kustomize-controller",
                        )
                    }
                }
            }
            Tool::HelmController => {
                &const {
                    Spec {
                        packages: &[("", "helm-controller")],
                        cold_build_secs: 229,
                        ..controller("helm-controller", "github.com/fluxcd/helm-controller")
                    }
                }
            }
            Tool::NotificationController => {
                &const {
                    Spec {
                        packages: &[("", "notification-controller")],
                        cold_build_secs: 297,
                        ..controller(
                            "notification-controller",
                            "github.com/fluxcd/notification-controller",
                        )
                    }
                }
            }
            Tool::Registry => {
                &const {
                    Spec {
                        packages: &[("cmd/registry", "registry")],
                        cold_build_hint: "1-2 min",
                        cold_build_secs: 90,
                        ..spec("registry", "github.com/distribution/distribution/v3")
                    }
                }
            }
            Tool::Kind => {
                &const {
                    Spec {
                        packages: &[("", "kind")],
                        cold_build_hint: "1-2 min",
                        cold_build_secs: 15,
                        ..spec("kind", "sigs.k8s.io/kind")
                    }
                }
            }
            Tool::KubeNode => {
                &const {
                    Spec {
                        version_key: "kubernetes",
                        packages: &[
                            ("cmd/kubelet", "kubelet"),
                            ("cmd/kubeadm", "kubeadm"),
                            ("cmd/kube-proxy", "kube-proxy"),
                        ],
                        stamp: Stamp::Kubernetes,
                        staging: true,
                        cold_build_hint: "5-10 min",
                        cold_build_secs: 300,
                        ..spec("kube-node", "k8s.io/kubernetes")
                    }
                }
            }
            Tool::Coredns => {
                &const {
                    Spec {
                        packages: &[("", "coredns")],
                        cold_build_secs: 320,
                        ..spec("coredns", "github.com/coredns/coredns")
                    }
                }
            }
            Tool::Crictl => {
                &const {
                    Spec {
                        packages: &[("cmd/crictl", "crictl")],
                        cold_build_secs: 106,
                        ..spec("cri-tools", "sigs.k8s.io/cri-tools")
                    }
                }
            }
        }
    }
}

impl Tool {
    /// Every tool the `local` provider and the Taskfiles need (built by `harness toolchain`).
    pub const ALL: [Tool; 9] = [
        Tool::Task,
        Tool::Flux,
        Tool::Kwok,
        Tool::Etcd,
        Tool::Kubernetes,
        Tool::SourceController,
        Tool::KustomizeController,
        Tool::HelmController,
        Tool::NotificationController,
    ];

    /// What the kind provider builds its images from, besides the Flux controllers.
    pub const KIND_IMAGES: [Tool; 6] = [
        Tool::Kind,
        Tool::Kubernetes,
        Tool::KubeNode,
        Tool::Etcd,
        Tool::Coredns,
        Tool::Crictl,
    ];

    /// The key of this tool in `toolchain/versions.yaml`.
    pub fn key(self) -> &'static str {
        self.spec().key
    }

    fn version_key(self) -> &'static str {
        self.spec().version_key
    }

    fn module(self) -> &'static str {
        self.spec().module
    }

    fn packages(self) -> &'static [(&'static str, &'static str)] {
        self.spec().packages
    }

    fn ldflags(self, version: &str) -> String {
        match self.spec().stamp {
            Stamp::Kubernetes => {
                let v = "k8s.io/component-base/version";
                let minor = version.split('.').nth(1).unwrap_or("0");
                format!(
                    "-X {v}.gitVersion={version} -X {v}.gitMajor=1 -X {v}.gitMinor={minor} \
                     -X {v}.gitTreeState=clean -X {v}.buildDate=1970-01-01T00:00:00Z"
                )
            }
            Stamp::FluxCli => format!("-X main.VERSION={}", version.trim_start_matches('v')),
            Stamp::Kwok => format!("-X sigs.k8s.io/kwok/pkg/consts.Version={version}"),
            Stamp::None => String::new(),
        }
    }

    /// Version of the staging modules that stand in for `v0.0.0` requirements (Kubernetes only).
    fn staging_version(self, version: &str) -> Option<String> {
        self.spec()
            .staging
            .then(|| version.replacen("v1.", "v0.", 1))
    }

    fn builds_from_copy(self) -> bool {
        self.spec().builds_from_copy
    }

    fn ships_crds(self) -> bool {
        self.spec().ships_crds
    }

    fn cold_build_hint(self) -> &'static str {
        self.spec().cold_build_hint
    }
}

/// The operator tools whose version a run may pick from their tested range, and the variable for it.
pub const OVERRIDES: [(Tool, &str); 2] = [
    (Tool::Task, crate::config::TASK_VERSION),
    (Tool::Flux, crate::config::FLUX_VERSION),
];

/// Pinned versions, from `toolchain/versions.yaml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Versions(BTreeMap<String, String>);

impl Versions {
    pub fn pinned() -> Result<Self> {
        serde_norway::from_str(VERSIONS_YAML)
            .context("toolchain/versions.yaml is not a map of tool: version")
    }

    pub fn get(&self, tool: Tool) -> &str {
        self.0
            .get(tool.version_key())
            .map(String::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "toolchain/versions.yaml has no `{}` pin",
                    tool.version_key()
                )
            })
    }

    /// The tested range of an operator tool (`task`, `flux`): its pin and its `<key>-newest` pin.
    pub fn range(&self, tool: Tool) -> Result<[&str; 2]> {
        let newest = format!("{}-newest", tool.version_key());
        Ok([self.get(tool), self.pin(&newest)?])
    }

    /// Runs the operator tools at another version of their tested range: `HARNESS_TASK_VERSION`,
    /// `HARNESS_FLUX_VERSION` (read through `var`): a version of the range, `oldest` or `newest`.
    /// Anything outside the range is refused, so what runs is always a version
    /// toolchain/versions.yaml names.
    pub fn with_overrides(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        for (tool, name) in OVERRIDES {
            let Some(wanted) = var(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let range = self.range(tool)?;
            let version = match wanted.as_str() {
                "oldest" => range[0],
                "newest" => range[1],
                v if range.contains(&v) => v,
                _ => bail!(
                    "{name}={wanted} is outside the tested range in toolchain/versions.yaml: use {}, {}, oldest or newest",
                    range[0],
                    range[1]
                ),
            }
            .to_string();
            self.0.insert(tool.version_key().to_string(), version);
        }
        Ok(self)
    }

    /// A pin that is not a built tool (e.g. `k3s`, an image tag); fails naming the missing key.
    pub fn pin(&self, key: &str) -> Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("toolchain/versions.yaml has no `{key}` pin: add one"))
    }
}

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
        go_mod_download(tool.module(), self.versions.get(tool), "Dir")
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
        let secs: u64 = missing.iter().map(|t| t.spec().cold_build_secs).sum();
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

    fn build_locked(&self, tool: Tool, (n, of): (usize, usize)) -> Result<()> {
        let lock_path = self.root.join("locks").join(format!("{}.lock", tool.key()));
        let _lock = crate::sys::lock::exclusive(&lock_path)?;
        if self.is_built(tool) {
            return Ok(()); // another process built it while we waited
        }
        let version = self.versions.get(tool);
        eprintln!(
            "toolchain: tool {n} of {of}: building {} {version} from its Go module (cold build ~{} on 2 cores; cached afterwards in {})",
            tool.key(),
            tool.cold_build_hint(),
            self.tool_dir(tool).display()
        );
        let started = Instant::now();
        self.build(tool, version)
            .with_context(|| format!("building {} {version} failed (see the go output above); fix and rerun, the cache stays consistent", tool.key()))?;
        eprintln!(
            "toolchain: built {} {version} in {:.0?}",
            tool.key(),
            started.elapsed()
        );
        Ok(())
    }

    fn build(&self, tool: Tool, version: &str) -> Result<()> {
        let work = self
            .root
            .join("src")
            .join(format!("{}-{version}", tool.key()));
        if work.exists() {
            fs::remove_dir_all(&work).or_else(|_| {
                duct::cmd!("chmod", "-R", "u+w", &work).run()?;
                fs::remove_dir_all(&work)
            })?;
        }
        fs::create_dir_all(&work)?;
        let staging_bin = work.join("bin");
        // No DWARF (`-s -w`: a third smaller, faster to link and to archive) and no build paths;
        // the version stamps stay.
        let ldflags = format!("-s -w {}", tool.ldflags(version));

        let (build_dir, targets): (PathBuf, Vec<String>) = if tool.builds_from_copy() {
            let module_dir = go_mod_download(tool.module(), version, "Dir")?;
            let copy = work.join("module");
            writable_copy(&module_dir, &copy)?;
            for (pkg, _) in tool.packages() {
                let manifests = copy.join(pkg).join("manifests");
                fs::create_dir_all(&manifests)?;
                fs::write(
                    manifests.join("placeholder.yaml"),
                    "# not used: the harness never runs `flux install`\n",
                )?;
            }
            let targets = tool
                .packages()
                .iter()
                .map(|(pkg, _)| format!("./{pkg}"))
                .collect();
            (copy, targets)
        } else {
            write_wrapper_module(&work, tool, version)?;
            let targets = tool
                .packages()
                .iter()
                .map(|(pkg, _)| package_path(tool.module(), pkg))
                .collect();
            (work.clone(), targets)
        };

        fs::create_dir_all(&staging_bin)?;
        for ((_, bin), target) in tool.packages().iter().zip(&targets) {
            go(&build_dir)
                .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
                .arg(staging_bin.join(bin))
                .arg(target)
                .status_ok()?;
        }
        let dest = self.tool_dir(tool);
        if dest.exists() {
            fs::remove_dir_all(&dest)?;
        }
        fs::create_dir_all(&dest)?;
        if tool.ships_crds() {
            let bases = go_mod_download(tool.module(), version, "Dir")?.join("config/crd/bases");
            fs::create_dir_all(dest.join("crds"))?;
            for entry in
                fs::read_dir(&bases).with_context(|| format!("{} has no CRDs", bases.display()))?
            {
                let entry = entry?;
                fs::copy(entry.path(), dest.join("crds").join(entry.file_name()))?;
            }
        }
        fs::rename(&staging_bin, dest.join("bin"))?;
        Ok(())
    }
}

fn package_path(module: &str, pkg: &str) -> String {
    if pkg.is_empty() {
        module.to_string()
    } else {
        format!("{module}/{pkg}")
    }
}

/// Writes `go.mod` of a wrapper module that requires `tool`'s module and mirrors its replaces.
fn write_wrapper_module(dir: &Path, tool: Tool, version: &str) -> Result<()> {
    go(dir)
        .args(["mod", "init", &format!("harness-tools/{}", tool.key())])
        .quiet_ok()?;
    let upstream_mod = go_mod_download(tool.module(), version, "GoMod")?;
    let parsed: serde_json::Value = serde_json::from_str(
        &go(dir)
            .args(["mod", "edit", "-json"])
            .arg(&upstream_mod)
            .output_string()?,
    )?;
    let required: BTreeMap<&str, &str> = parsed["Require"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["Path"].as_str()?, r["Version"].as_str()?)))
        .collect();
    for replace in parsed["Replace"].as_array().into_iter().flatten() {
        let old = replace["Old"]["Path"].as_str().unwrap_or_default();
        let new_path = replace["New"]["Path"].as_str().unwrap_or_default();
        let directive = match replace["New"]["Version"].as_str() {
            // A replace by another published module version: keep it (e.g. go-digest in source-controller).
            Some(new_version) => Some(format!("{old}={new_path}@{new_version}")),
            // A local directory: only placeholder requirements need a published stand-in.
            None => match (required.get(old), tool.staging_version(version)) {
                (Some(&"v0.0.0"), Some(staging)) => Some(format!("{old}={old}@{staging}")),
                _ => None,
            },
        };
        if let Some(directive) = directive {
            go(dir)
                .args(["mod", "edit", &format!("-replace={directive}")])
                .quiet_ok()?;
        }
    }
    for (pkg, _) in tool.packages() {
        // `@version` pins the module: a bare `go get -tool` would upgrade it and its dependencies.
        go(dir)
            .args([
                "get",
                "-tool",
                &format!("{}@{version}", package_path(tool.module(), pkg)),
            ])
            .quiet_ok()?;
    }
    Ok(())
}

/// `go mod download -json module@version` and one field of its answer (`Dir` or `GoMod`).
fn go_mod_download(module: &str, version: &str, field: &str) -> Result<PathBuf> {
    let out = go(Path::new("/"))
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .output_string_any()?;
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("go mod download answered: {out}"))?;
    if let Some(err) = json["Error"].as_str() {
        bail!(
            "the Go module proxy does not serve {module}@{version}: {err}; pin a served version in toolchain/versions.yaml"
        );
    }
    json[field]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("go mod download gave no {field} for {module}@{version}"))
}

/// A `go` invocation in `dir`, with CGO off (static binaries) and Go's caches at their defaults.
fn go(dir: &Path) -> GoCmd {
    GoCmd {
        dir: dir.to_path_buf(),
        args: Vec::new(),
    }
}

struct GoCmd {
    dir: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl GoCmd {
    fn args<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn arg(mut self, arg: impl Into<std::ffi::OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn expr(&self) -> duct::Expression {
        duct::cmd("go", &self.args)
            .dir(&self.dir)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-buildvcs=false")
            .env("GOTOOLCHAIN", "local")
    }

    /// The arguments as one line, for messages.
    fn shown(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs with go's output (compile errors) shown and a heartbeat line every minute, so a long
    /// cold build visibly progresses; fails on a non-zero exit or after [`GO_RUN_BOUND`].
    fn status_ok(self) -> Result<()> {
        let shown = self.shown();
        let mut next_beat = Duration::from_secs(60);
        let beat = |elapsed: Duration| {
            if elapsed >= next_beat {
                eprintln!(
                    "toolchain: … still running `go {}` ({:.0?})",
                    shown.chars().take(80).collect::<String>(),
                    elapsed
                );
                next_beat += Duration::from_secs(60);
            }
        };
        let Some(output) =
            crate::sys::exec::bounded(self.expr().stdout_to_stderr(), GO_RUN_BOUND, beat)?
        else {
            return Err(crate::Error::timeout(
                format!("`go {shown}` in {}", self.dir.display()),
                GO_RUN_BOUND,
            )
            .into());
        };
        if !output.status.success() {
            bail!(
                "`go {shown}` failed in {} ({})",
                self.dir.display(),
                output.status
            );
        }
        Ok(())
    }

    /// Runs quietly (module resolution chatter), showing go's output only when it fails.
    fn quiet_ok(self) -> Result<()> {
        let shown = self.shown();
        let Some(out) = crate::sys::exec::bounded(
            self.expr().stderr_to_stdout().stdout_capture(),
            GO_RUN_BOUND,
            |_| {},
        )?
        else {
            return Err(crate::Error::timeout(format!("`go {shown}`"), GO_RUN_BOUND).into());
        };
        if !out.status.success() {
            bail!(
                "`go {shown}` failed in {}:\n{}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    }

    fn output_string(self) -> Result<String> {
        let shown = format!("go {}", self.shown());
        crate::sys::exec::run(&shown, self.expr(), GO_RUN_BOUND)
    }

    /// stdout even when go exits non-zero (`go mod download -json` reports errors in its JSON).
    fn output_string_any(self) -> Result<String> {
        let shown = self.shown();
        let Some(out) =
            crate::sys::exec::bounded(self.expr().stdout_capture(), GO_RUN_BOUND, |_| {})?
        else {
            return Err(crate::Error::timeout(format!("`go {shown}`"), GO_RUN_BOUND).into());
        };
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A writable copy of `from` (a read-only module directory in Go's cache) at `to`, replacing
/// whatever was there.
pub(crate) fn writable_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to)?;
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    crate::sys::exec::copy_tree(from, to, &[])
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_builds_something_and_is_listed_once() {
        for (i, tool) in Tool::EVERY.iter().enumerate() {
            assert_eq!(*tool as usize, i, "{tool:?} is listed at {i}");
            assert!(!tool.spec().packages.is_empty(), "{tool:?} builds nothing");
        }
        assert_eq!(Tool::EVERY.len(), Tool::Crictl as usize + 1);
    }

    #[test]
    fn every_tool_is_pinned() {
        let versions = Versions::pinned().unwrap();
        for tool in Tool::ALL.iter().chain(&Tool::KIND_IMAGES).copied() {
            assert!(
                versions.get(tool).starts_with('v'),
                "{} pin must be a module version",
                tool.key()
            );
        }
    }

    #[test]
    fn kubernetes_stamps_its_release_and_maps_staging_modules() {
        assert!(
            Tool::Kubernetes
                .ldflags("v1.35.4")
                .contains("gitVersion=v1.35.4")
        );
        assert!(Tool::Kubernetes.ldflags("v1.35.4").contains("gitMinor=35"));
        assert_eq!(
            Tool::Kubernetes.staging_version("v1.35.4").as_deref(),
            Some("v0.35.4")
        );
        assert_eq!(Tool::Etcd.staging_version("v3.6.16"), None);
        assert_eq!(Tool::Flux.ldflags("v2.7.5"), "-X main.VERSION=2.7.5");
    }

    /// The README and the task reference state the tested range exactly as it is pinned.
    #[rstest::rstest]
    #[case::readme("README.md")]
    #[case::task_reference("docs/taskfiles.md")]
    fn the_docs_state_the_pinned_range(#[case] doc: &str) {
        let text = fs::read_to_string(crate::repo_root().join(doc)).unwrap();
        let pinned = Versions::pinned().unwrap();
        for (tool, name) in [(Tool::Task, "go-task"), (Tool::Flux, "flux CLI")] {
            let [oldest, newest] = pinned.range(tool).unwrap();
            let line = format!("{name} {oldest} – {newest}");
            assert!(text.contains(&line), "{doc} does not say `{line}`");
        }
    }

    #[rstest::rstest]
    #[case::pinned("HARNESS_TASK_VERSION", None, None)]
    #[case::newest_task("HARNESS_TASK_VERSION", Some("newest"), None)]
    #[case::newest_flux("HARNESS_FLUX_VERSION", Some("newest"), None)]
    #[case::oldest_by_word("HARNESS_FLUX_VERSION", Some("oldest"), None)]
    #[case::newest_by_word("HARNESS_TASK_VERSION", Some("newest-word"), None)]
    #[case::outside(
        "HARNESS_FLUX_VERSION",
        Some("v2.0.0"),
        Some("HARNESS_FLUX_VERSION=v2.0.0 is outside the tested range")
    )]
    fn a_run_picks_an_operator_tool_from_its_tested_range(
        #[case] var: &str,
        #[case] value: Option<&str>,
        #[case] refused: Option<&str>,
    ) {
        let pinned = Versions::pinned().unwrap();
        let tool = OVERRIDES.iter().find(|(_, v)| *v == var).unwrap().0;
        let [oldest, newest] = pinned.range(tool).unwrap();
        assert_ne!(oldest, newest, "the range of {var} is one version");
        // "newest": the pinned version spelled out; "newest-word"/"oldest": the words themselves.
        let (given, want) = match value {
            None => (None, oldest),
            Some("newest") => (Some(newest), newest),
            Some("newest-word") => (Some("newest"), newest),
            Some("oldest") => (Some("oldest"), oldest),
            Some(v) => (Some(v), v),
        };
        let result = pinned
            .clone()
            .with_overrides(|name| (name == var).then(|| given.map(String::from)).flatten());
        match refused {
            None => assert_eq!(result.unwrap().get(tool), want, "{var}={given:?}"),
            Some(message) => {
                let error = result.unwrap_err().to_string();
                assert!(error.contains(message), "{error}");
                assert!(error.contains(oldest) && error.contains(newest), "{error}");
            }
        }
    }
}
