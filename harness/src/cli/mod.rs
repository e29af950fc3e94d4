//! The handlers of `harness`'s subcommands, one file per concern; `main.rs` only parses the
//! command line and calls them. Everything they do goes through the harness library.
//!
//! - [`up`]: start an environment and serve it until SIGTERM/Ctrl-C (or one of its processes dies)
//! - [`state`]: `down` and `status` of a state directory, and who serves it
//! - [`tools`]: `images` and `toolchain`, which need no environment

pub mod state;
pub mod tools;
pub mod up;
