//! Every `task flux:*` command proven on the real clusters — bulk and namespace-wide
//! writes, the read-only commands (logs, events, diff, status, check, tree, trace, alerts,
//! list-suspended), source reconciles, APP resolution failures, the bad-input matrix, cluster
//! isolation, idempotency and a release that fails after resume.
//!
//! One test binary (one environment) with a file per family of tasks, so that a task's scenarios
//! are found by file name; the helpers they share live in `scenarios/src/`.

mod bad_input;
mod bulk;
mod diff;
mod events;
mod isolation;
mod logs;
mod prelude;
mod reconcile;
mod status;
mod suspend_resume;
