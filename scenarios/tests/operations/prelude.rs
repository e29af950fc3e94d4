//! What every family's file uses.
pub use std::io::{BufRead, BufReader};
pub use std::path::PathBuf;
pub use std::process::{Child, Stdio};
pub use std::sync::mpsc;
pub use std::time::{Duration, Instant};

pub use anyhow::Context;
pub use harness::TaskOutput;
pub use harness::assertions::{
    self, flux_fingerprint, is_ready, is_suspended, last_handled_reconcile_at,
};
pub use harness::fixtures::{Kind, Role};
pub use harness::processes as exec;
pub use harness::provider::Environment;
pub use nix::sys::signal::Signal;
pub use rstest::rstest;
pub use scenarios::cleanup::Created;
pub use scenarios::flux_state::{Settled, ks_and_hr, ns_name, same_fingerprint};
pub use scenarios::output::{ensure_contains, one_error};
pub use scenarios::{SETTLE, alone, exclusive, layout, ok, scenario, writing};
