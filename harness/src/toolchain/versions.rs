//! The pins: `toolchain/versions.yaml` (embedded), the tested range of the operator tools, and
//! the run's pick from it (`HARNESS_TASK_VERSION` / `HARNESS_FLUX_VERSION`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::Tool;

/// The pin file, embedded so that the binary does not depend on the working directory.
const VERSIONS_YAML: &str = include_str!("../../../toolchain/versions.yaml");
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

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
