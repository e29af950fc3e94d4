//! The processes of an environment as the CLI and the lifecycle scenarios see them: what a state
//! directory recorded, whether a pid still runs, stopping what a dead owner left, what of an
//! environment outlived its owner (the reaper's proofs), a free block of
//! loopback ports. The one public door to the crate's operating-system plumbing (`sys`,
//! private), so that callers depend on these few functions, not on how they are made.

pub use crate::provider::reaper::{kind_left, left_after};
pub use crate::sys::exec::{alive, copy_tree, descendants, runtime, signal_group};
pub use crate::sys::path::which;
pub use crate::sys::poll::wait_for;
pub use crate::sys::process::{reap_stale, recorded_pids};

/// The first port of a free block of `len` loopback ports at or above `from` (released again:
/// whoever starts on it reserves it).
pub fn free_port_base(from: u16, len: u16) -> anyhow::Result<u16> {
    Ok(crate::sys::process::PortBlock::first_free(from, len)?.base)
}
