//! The k8s-ops Taskfile integration harness: ephemeral `infra` and `apps` clusters with real Flux,
//! the gatus/odoo fixtures, a runner for the real `task flux:*` commands, and kube-rs assertions.

pub mod apply;
pub mod assertions;
pub mod bench;
pub mod diagnostics;
pub mod fixtures;
pub mod flux;
pub mod gitserver;
pub mod kwok;
pub mod process;
pub mod provider;
pub mod task_runner;
pub mod toolchain;

/// Root of this repository (where `Taskfile.yaml` lives), known at compile time.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ has a parent")
        .to_path_buf()
}
