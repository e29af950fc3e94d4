//! Every `HARNESS_*` variable, named here and read once per process (at first use): one file lists
//! what an operator or CI can set. Each module parses the raw value it owns, so its error names the
//! variable and the fix where the value is used. `harness`'s flags take the same names
//! (`#[arg(env = config::STATE_DIR)]`): a flag wins over its variable.
//!
//! Empty values count as unset, as a shell's `HARNESS_X= cargo test` means.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `local` (default), `kind`, `k3s` or `existing` ([`crate::provider::ProviderKind`]).
pub const PROVIDER: &str = "HARNESS_PROVIDER";
/// Where an environment keeps its state, logs and kubeconfig.
pub const STATE_DIR: &str = "HARNESS_STATE_DIR";
/// First port of the local provider's block of loopback ports.
pub const PORT_BASE: &str = "HARNESS_PORT_BASE";
/// `1`/`true`: keep the environment when its owner ends (the reaper leaves it).
pub const RETAIN: &str = "HARNESS_RETAIN";
/// The GitOps checkout to serve instead of the fixtures (`harness up --gitops`).
pub const GITOPS_DIR: &str = "HARNESS_GITOPS_DIR";
/// Which sources get a stand-in: `auto`, `always`, `never`.
pub const STANDINS: &str = "HARNESS_STANDINS";
/// Where the kind provider's images come from: `local` (built here) or `upstream`.
pub const KIND_IMAGES: &str = "HARNESS_KIND_IMAGES";
/// The kubeconfig of the `existing` provider (else `KUBECONFIG`).
pub const KUBECONFIG: &str = "HARNESS_KUBECONFIG";
/// The machine-wide tool cache (else `$XDG_CACHE_HOME/k8s-ops-harness`, `~/.cache/…`).
pub const CACHE: &str = "HARNESS_CACHE";
/// A tool archive (`harness toolchain --export`) imported before anything missing is built.
pub const TOOLS_ARCHIVE: &str = "HARNESS_TOOLS_ARCHIVE";
/// A local copy of Flux's `install.yaml` for the container providers (air-gapped runs).
pub const FLUX_INSTALL_MANIFEST: &str = "HARNESS_FLUX_INSTALL_MANIFEST";
/// The go-task version to test with: a version of the tested range, `oldest` or `newest`.
pub const TASK_VERSION: &str = "HARNESS_TASK_VERSION";
/// The flux CLI version to test with: a version of the tested range, `oldest` or `newest`.
pub const FLUX_VERSION: &str = "HARNESS_FLUX_VERSION";
/// `1`: scenarios that change fixtures may run on existing clusters.
pub const ALLOW_DESTRUCTIVE: &str = "HARNESS_ALLOW_DESTRUCTIVE";

/// The variables as this process found them; unset and empty are both `None`.
#[derive(Debug, Default, Clone)]
pub struct Config {
    pub provider: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub port_base: Option<String>,
    pub retain: bool,
    pub gitops_dir: Option<PathBuf>,
    pub standins: Option<String>,
    pub kind_images: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    pub tools_archive: Option<PathBuf>,
    pub flux_install_manifest: Option<PathBuf>,
    pub task_version: Option<String>,
    pub flux_version: Option<String>,
    pub allow_destructive: bool,
}

/// The process's configuration, read from the environment the first time it is asked for.
pub fn get() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::read(|name| std::env::var_os(name)))
}

impl Config {
    /// Reads every variable through `var` (the process environment, or a table in tests).
    pub fn read(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let os = |name: &str| var(name).filter(|v| !v.is_empty());
        let text = |name: &str| os(name).map(|v| v.to_string_lossy().into_owned());
        let path = |name: &str| os(name).map(PathBuf::from);
        Self {
            provider: text(PROVIDER),
            state_dir: path(STATE_DIR),
            port_base: text(PORT_BASE),
            retain: matches!(text(RETAIN).as_deref(), Some("1" | "true")),
            gitops_dir: path(GITOPS_DIR),
            standins: text(STANDINS),
            kind_images: text(KIND_IMAGES),
            kubeconfig: path(KUBECONFIG),
            cache: path(CACHE),
            tools_archive: path(TOOLS_ARCHIVE),
            flux_install_manifest: path(FLUX_INSTALL_MANIFEST),
            task_version: text(TASK_VERSION),
            flux_version: text(FLUX_VERSION),
            allow_destructive: text(ALLOW_DESTRUCTIVE).as_deref() == Some("1"),
        }
    }

    /// The value of a tool-version variable ([`TASK_VERSION`], [`FLUX_VERSION`]) by its name.
    pub fn tool_version(&self, name: &str) -> Option<String> {
        match name {
            TASK_VERSION => self.task_version.clone(),
            FLUX_VERSION => self.flux_version.clone(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::unset(None, false)]
    #[case::empty(Some(""), false)]
    #[case::one(Some("1"), true)]
    #[case::word(Some("true"), true)]
    #[case::other(Some("yes"), false)]
    fn retain_is_one_or_true(#[case] value: Option<&str>, #[case] retain: bool) {
        let config = Config::read(|name| (name == RETAIN).then_some(value?.into()));
        assert_eq!(config.retain, retain);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = Config::read(|_| Some(OsString::new()));
        assert_eq!(config.provider, None);
        assert_eq!(config.state_dir, None);
        assert_eq!(config.tool_version(TASK_VERSION), None);
        let config = Config::read(|name| (name == FLUX_VERSION).then(|| "newest".into()));
        assert_eq!(config.tool_version(FLUX_VERSION).as_deref(), Some("newest"));
    }
}
