//! The failures that callers and tests tell apart by kind rather than by their text. Each one is
//! still the one line an operator reads (its `Display`), carried inside an `anyhow::Error`
//! through any context added on the way: find it with `error.downcast_ref::<harness::Error>()`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A bounded run did not finish in time; it was killed with everything it started.
    #[error("{what} did not finish within {bound:?} (killed)")]
    Timeout { what: String, bound: Duration },
    /// A port of the environment's block on 127.0.0.1 is taken.
    #[error("port 127.0.0.1:{port} is already in use: {fix}")]
    PortTaken { port: u16, fix: String },
    /// A container provider found no Docker CLI, or no engine that answers.
    #[error("HARNESS_PROVIDER={provider} needs {needs}, but {why}: {fix}")]
    EngineMissing {
        provider: &'static str,
        needs: &'static str,
        why: String,
        fix: String,
    },
    /// Another process owns the state directory (it runs or reaps an environment there).
    #[error(
        "{shown} is in use by {owner}: stop that environment with `cargo run -p harness -- down --state-dir {shown}` (or let it finish), or give this run another --state-dir / HARNESS_STATE_DIR",
        shown = .dir.display()
    )]
    StateDirOwned {
        dir: std::path::PathBuf,
        owner: String,
    },
}

impl Error {
    /// `Self::Timeout` of `what` after `bound`.
    pub fn timeout(what: impl Into<String>, bound: Duration) -> Self {
        Self::Timeout {
            what: what.into(),
            bound,
        }
    }
}

/// The typed error inside `error`, if it carries one.
pub fn kind_of(error: &anyhow::Error) -> Option<&Error> {
    error.downcast_ref::<Error>()
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn the_kind_survives_context_and_the_text_stays_one_line() {
        let e = Err::<(), _>(Error::timeout(
            "kind create cluster",
            Duration::from_secs(10),
        ))
        .context("creating kind cluster infra")
        .unwrap_err();
        assert_eq!(
            kind_of(&e),
            Some(&Error::timeout(
                "kind create cluster",
                Duration::from_secs(10)
            ))
        );
        assert_eq!(
            format!("{e:#}"),
            "creating kind cluster infra: kind create cluster did not finish within 10s (killed)"
        );
        let port = Error::PortTaken {
            port: 20000,
            fix: "choose other ports".into(),
        };
        assert_eq!(
            port.to_string(),
            "port 127.0.0.1:20000 is already in use: choose other ports"
        );
        assert!(kind_of(&anyhow::anyhow!("plain")).is_none());
    }
}
