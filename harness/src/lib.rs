//! The k8s-ops Taskfile integration harness: ephemeral `infra` and `apps` clusters with real Flux,
//! the gatus/odoo fixtures, a runner for the real `task flux:*` commands, and kube-rs assertions.
//!
//! What scenarios and the `harness` binary use: an [`Environment`] started by a [`ProviderKind`]
//! with [`ProviderOptions`] ([`Faults`] where the provider owns the processes), the real `task`
//! through [`TaskRunner`], objects applied with [`apply_yaml`] and read with [`assertions`], the
//! typed failures ([`Error`], [`kind_of`]); the modules below for fixtures, Flux objects, the
//! served repository, the tools and, through [`processes`] only, the environment's processes. The
//! plumbing (`sys`, the apply and task runners' internals) is private.

pub(crate) mod apply;
pub mod assertions;
pub mod bench;
pub mod config;
pub mod environment;
pub(crate) mod error;
pub mod fixtures;
pub mod flux;
pub mod gitops;
pub mod processes;
pub mod provider;
pub(crate) mod sys;
pub(crate) mod task_runner;
pub mod toolchain;
pub(crate) mod topology;

pub use apply::apply_yaml;
pub use environment::Environment;
pub use error::{Error, kind_of};
pub use provider::{Faults, ProviderKind, ProviderOptions};
pub use task_runner::{TaskOutput, TaskRunner};

/// Root of this checkout (where `Taskfile.yaml` lives): the nearest directory at or above the
/// current one that holds `Taskfile.yaml` and `harness/Cargo.toml` (cargo runs tests in the
/// package directory, `cargo run` where it is called), else the checkout this crate was compiled
/// from. Found at run time because one `CARGO_TARGET_DIR` may serve several checkouts (`.ci/run`
/// shares one machine-wide): cargo judges freshness by file times, so a checkout can run a binary
/// built from another one, whose compile-time path names that other checkout.
pub fn repo_root() -> std::path::PathBuf {
    static ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let is_root = |d: &std::path::Path| {
            d.join("Taskfile.yaml").is_file() && d.join("harness/Cargo.toml").is_file()
        };
        std::env::current_dir()
            .ok()
            .and_then(|cwd| {
                cwd.ancestors()
                    .find(|d| is_root(d))
                    .map(|d| d.to_path_buf())
            })
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("harness/ has a parent")
                    .to_path_buf()
            })
    })
    .clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_repo_root_is_this_checkout() {
        let root = super::repo_root();
        assert!(root.join("Taskfile.yaml").is_file(), "{}", root.display());
        assert!(
            root.join("harness/Cargo.toml").is_file(),
            "{}",
            root.display()
        );
        let here = std::env::current_dir().unwrap();
        assert!(
            here.starts_with(&root),
            "{} not under {}",
            here.display(),
            root.display()
        );
    }
}
