//! The GitOps repository an environment serves: `fixtures/gitops` by default, or an operator's own
//! checkout (`harness up --gitops DIR`, `HARNESS_GITOPS_DIR`) to reproduce a task bug with the
//! objects it happened on. Here: each cluster's entry path in it (given with `--cluster-path`, or
//! found in the layouts operators use), and the root Kustomization that points a cluster at it.
//!
//! The repository's own bootstrap objects (what `flux bootstrap` writes: `gotk-components.yaml`,
//! everything labelled `app.kubernetes.io/part-of=flux`, and `gotk-sync.yaml`'s GitRepository and
//! Kustomization `flux-system`) are left out of the render by the root Kustomization's patches:
//! the environment's own Flux and its `flux-system` objects, pointing at the served copy, take their
//! place, as if `flux bootstrap` had run against that copy.

pub(crate) mod gitserver;
pub mod render;
pub mod standins;

pub use gitserver::FixturesRepo;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::topology::CLUSTERS;

/// Where operators keep a cluster's entry path, in the order they are tried (`{cluster}` is the
/// cluster's name). The last one is the single-cluster layout of onedr0p's cluster-template.
pub const ENTRY_CANDIDATES: [&str; 6] = [
    "kubernetes/clusters/{cluster}",
    "clusters/{cluster}",
    "k8s/clusters/{cluster}",
    "cluster/{cluster}",
    "kubernetes/{cluster}/flux",
    "kubernetes/flux/cluster",
];

/// The name of the Secret with the SOPS age key (`--sops-age-key`), in `flux-system`, as Flux's
/// guide names it; Kustomizations decrypt with `decryption: {provider: sops, secretRef: {name: sops-age}}`.
pub const SOPS_SECRET: &str = "sops-age";

/// What to serve, as given (`harness up --gitops DIR --cluster-path infra=… --strict --sops-age-key F`).
#[derive(Debug, Clone, Default)]
pub struct GitopsOptions {
    /// The checkout to serve; `None`: `fixtures/gitops`.
    pub dir: Option<PathBuf>,
    /// Entry path per cluster, relative to `dir`; missing clusters are looked up.
    pub cluster_paths: BTreeMap<String, String>,
    /// Fail the start when something is not Ready, instead of listing it and staying up.
    pub strict: bool,
    /// The age key Flux decrypts SOPS secrets with.
    pub sops_age_key: Option<PathBuf>,
    /// `--standins`; `None`: `HARNESS_STANDINS`, else `auto`.
    pub offline_standins: Option<crate::gitops::standins::Mode>,
}

/// One cluster's entry path, and how it was chosen (said at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub chosen: String,
}

/// The repository an environment serves, with every cluster's entry path resolved.
#[derive(Debug, Clone)]
pub struct Served {
    pub dir: PathBuf,
    /// `fixtures/gitops`: every expected fixture must become Ready (the scenarios rely on it).
    pub is_fixtures: bool,
    pub entries: BTreeMap<String, Entry>,
    pub strict: bool,
    /// Contents of the age key file, when given.
    pub sops_age_key: Option<String>,
    /// Which sources get a stand-in ([`crate::gitops::standins`]).
    pub standins: crate::gitops::standins::Mode,
}

impl GitopsOptions {
    /// `dir` from `HARNESS_GITOPS_DIR` when set (what `harness up --gitops` overrides).
    pub fn from_env() -> Self {
        Self {
            dir: crate::config::get().gitops_dir.clone(),
            ..Self::default()
        }
    }

    /// Checks everything given and finds the entry paths, before anything starts: every problem is
    /// one line saying what to do.
    pub fn resolve(&self) -> Result<Served> {
        let fixtures = fixtures_dir();
        let dir = match &self.dir {
            Some(dir) => dir
                .canonicalize()
                .with_context(|| format!("--gitops {}: no such directory", dir.display()))?,
            None => fixtures.clone(),
        };
        anyhow::ensure!(
            dir.is_dir(),
            "--gitops {}: not a directory — give the root of your GitOps checkout",
            dir.display()
        );
        if let Some(unknown) = self
            .cluster_paths
            .keys()
            .find(|c| !CLUSTERS.contains(&c.as_str()))
        {
            bail!(
                "--cluster-path {unknown}=…: no cluster {unknown} — the clusters are {}",
                CLUSTERS.join(", ")
            );
        }
        let mut entries = BTreeMap::new();
        for cluster in CLUSTERS {
            let given = self.cluster_paths.get(cluster).map(String::as_str);
            entries.insert(cluster.to_string(), entry_path(&dir, cluster, given)?);
        }
        let sops_age_key = match &self.sops_age_key {
            Some(file) => {
                let key = std::fs::read_to_string(file).with_context(|| {
                    format!(
                        "--sops-age-key {}: cannot read it — give the age key file (age-keygen -o age.agekey)",
                        file.display()
                    )
                })?;
                anyhow::ensure!(
                    key.contains("AGE-SECRET-KEY-"),
                    "--sops-age-key {}: no AGE-SECRET-KEY- line in it — give the age identity file, not the public key",
                    file.display()
                );
                Some(key)
            }
            None => None,
        };
        let standins = match self.offline_standins {
            Some(mode) => mode,
            None => crate::gitops::standins::Mode::from_env()?,
        };
        Ok(Served {
            standins,
            is_fixtures: dir == fixtures.canonicalize().unwrap_or(fixtures),
            dir,
            entries,
            strict: self.strict,
            sops_age_key,
        })
    }
}

/// `cluster`'s entry path in `dir`: the given one (which must be a directory there), else the one
/// candidate of [`ENTRY_CANDIDATES`] that exists. None or several: refused, listing what exists.
pub fn entry_path(dir: &Path, cluster: &str, given: Option<&str>) -> Result<Entry> {
    let existing: Vec<String> = ENTRY_CANDIDATES
        .iter()
        .map(|c| c.replace("{cluster}", cluster))
        .filter(|p| dir.join(p).is_dir())
        .collect();
    let listed = |paths: &[String]| {
        if paths.is_empty() {
            format!("none of {} exists", ENTRY_CANDIDATES.join(", "))
        } else {
            format!("candidates: {}", paths.join(", "))
        }
    };
    if let Some(given) = given {
        let path = given.trim_start_matches("./").trim_end_matches('/');
        let inside = !Path::new(path).is_absolute() && !path.split('/').any(|p| p == "..");
        anyhow::ensure!(
            inside && !path.is_empty() && dir.join(path).is_dir(),
            "--cluster-path {cluster}={given}: not a directory of {} — {}",
            dir.display(),
            listed(&existing)
        );
        return Ok(Entry {
            path: path.to_string(),
            chosen: "given with --cluster-path".to_string(),
        });
    }
    match existing.as_slice() {
        [one] => Ok(Entry {
            path: one.clone(),
            chosen: "found (the one known layout present)".to_string(),
        }),
        [] => bail!(
            "no entry path for cluster {cluster} in {}: {} — give it with --cluster-path {cluster}=<dir>",
            dir.display(),
            listed(&existing)
        ),
        several => bail!(
            "several entry paths for cluster {cluster} in {}: {} — pick one with --cluster-path {cluster}={}",
            dir.display(),
            several.join(", "),
            several[0]
        ),
    }
}

/// The names flux-operator's charts install Flux under, as a kustomize target (a regex, anchored).
const FLUX_OPERATOR_NAMES: &str = "flux-operator|flux-instance";

/// Whether `o` is part of a flux-operator installation of Flux: left out of the entry path as the
/// root Kustomization's patches leave it out.
pub fn is_flux_installation(o: &serde_json::Value) -> bool {
    let group = o["apiVersion"].as_str().unwrap_or_default();
    let named = matches!(
        o["metadata"]["name"].as_str(),
        Some("flux-operator" | "flux-instance")
    );
    match o["kind"].as_str() {
        Some("FluxInstance") => group.starts_with("fluxcd.controlplane.io/"),
        Some("HelmRelease") => named && group.starts_with("helm.toolkit.fluxcd.io/"),
        Some("OCIRepository") => named && group.starts_with("source.toolkit.fluxcd.io/"),
        _ => false,
    }
}

impl Served {
    /// The served repository's root: GitRepository `flux-system` (the served copy) and root
    /// Kustomization `flux-system` (the cluster's entry path, the repo's bootstrap objects left
    /// out, SOPS decryption when a key was given). Long intervals: a new commit reaches the
    /// cluster only when someone asks for a reconcile.
    pub fn root_manifests(&self, cluster: &str, url: &str) -> (String, String) {
        let ns = crate::flux::NAMESPACE;
        let source = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": ns},
            "spec": {"interval": "1h", "url": url, "ref": {"branch": "main"}},
        });
        // kustomize deletes every object the target selects.
        let delete = |target: Value, api_version: &str, kind: &str| {
            json!({
                "target": target,
                "patch": format!("$patch: delete\napiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: any\n"),
            })
        };
        // The repository's own bootstrap objects: the environment's Flux and flux-system replace
        // them; so does a flux-operator installation of Flux (its HelmReleases and their chart
        // sources, or a FluxInstance).
        let patches = [
            delete(
                json!({"labelSelector": "app.kubernetes.io/part-of=flux"}),
                "v1",
                "Any",
            ),
            delete(
                json!({"group": "source.toolkit.fluxcd.io", "kind": "GitRepository", "name": "flux-system", "namespace": ns}),
                "source.toolkit.fluxcd.io/v1",
                "GitRepository",
            ),
            delete(
                json!({"group": "kustomize.toolkit.fluxcd.io", "kind": "Kustomization", "name": "flux-system", "namespace": ns}),
                "kustomize.toolkit.fluxcd.io/v1",
                "Kustomization",
            ),
            delete(
                json!({"group": "helm.toolkit.fluxcd.io", "kind": "HelmRelease", "name": FLUX_OPERATOR_NAMES}),
                "helm.toolkit.fluxcd.io/v2",
                "HelmRelease",
            ),
            delete(
                json!({"group": "source.toolkit.fluxcd.io", "kind": "OCIRepository", "name": FLUX_OPERATOR_NAMES}),
                "source.toolkit.fluxcd.io/v1",
                "OCIRepository",
            ),
            delete(
                json!({"group": "fluxcd.controlplane.io", "kind": "FluxInstance"}),
                "fluxcd.controlplane.io/v1",
                "FluxInstance",
            ),
        ];
        let mut root = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "flux-system", "namespace": ns},
            "spec": {
                "interval": "1h",
                "path": format!("./{}", self.entries[cluster].path),
                "prune": true,
                "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                "patches": patches,
            },
        });
        if self.sops_age_key.is_some() {
            root["spec"]["decryption"] =
                json!({"provider": "sops", "secretRef": {"name": SOPS_SECRET}});
        }
        let yaml = |v: &Value| serde_norway::to_string(v).expect("a JSON value is YAML");
        (yaml(&source), yaml(&root))
    }

    /// The Secret Flux's kustomize-controller decrypts with (`--sops-age-key`).
    pub fn sops_secret(&self) -> Option<String> {
        self.sops_age_key.as_ref().map(|key| {
            let secret = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SOPS_SECRET, "namespace": crate::flux::NAMESPACE},
                "stringData": {"age.agekey": key},
            });
            serde_norway::to_string(&secret).expect("a JSON value is YAML")
        })
    }

    /// `cluster -> entry path`.
    pub fn entry_paths(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|(c, e)| (c.clone(), e.path.clone()))
            .collect()
    }

    /// One line per cluster: its entry path and how it was chosen.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(c, e)| format!("{c}: ./{} ({})", e.path, e.chosen))
            .collect()
    }
}

/// Directory whose content becomes the first commit of the served fixtures repository.
pub fn fixtures_dir() -> PathBuf {
    crate::repo_root().join("fixtures").join("gitops")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn repo(dirs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in dirs {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        dir
    }

    #[rstest::rstest]
    #[case::fixtures_layout(&["kubernetes/clusters/infra"], None, Ok("kubernetes/clusters/infra"))]
    #[case::top_level_clusters(&["clusters/infra", "clusters/apps"], None, Ok("clusters/infra"))]
    #[case::cluster_template(&["kubernetes/flux/cluster"], None, Ok("kubernetes/flux/cluster"))]
    #[case::given(&["clusters/infra", "deploy/infra"], Some("./deploy/infra/"), Ok("deploy/infra"))]
    #[case::several(&["clusters/infra", "kubernetes/clusters/infra"], None, Err("several entry paths for cluster infra"))]
    #[case::none(&["apps"], None, Err("no entry path for cluster infra"))]
    #[case::wrong_given(&["clusters/infra"], Some("kubernetes/infra"), Err("--cluster-path infra=kubernetes/infra: not a directory of"))]
    #[case::outside(&["clusters/infra"], Some("../etc"), Err("candidates: clusters/infra"))]
    fn finds_the_entry_path_or_lists_the_candidates(
        #[case] dirs: &[&str],
        #[case] given: Option<&str>,
        #[case] want: std::result::Result<&str, &str>,
    ) {
        let dir = repo(dirs);
        match (entry_path(dir.path(), "infra", given), want) {
            (Ok(entry), Ok(path)) => assert_eq!(entry.path, path),
            (Err(e), Err(says)) => {
                let e = e.to_string();
                assert!(e.contains(says), "{e}");
                assert!(!e.contains('\n'), "one line: {e}");
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn the_fixtures_are_served_by_default_with_their_entry_paths() {
        let served = GitopsOptions::default().resolve().unwrap();
        assert!(served.is_fixtures);
        assert_eq!(served.entries["apps"].path, "kubernetes/clusters/apps");
        let (source, root) = served.root_manifests("apps", "http://127.0.0.1:1/git/fixtures.git");
        assert!(source.contains("url: http://127.0.0.1:1/git/fixtures.git"));
        assert!(root.contains("path: ./kubernetes/clusters/apps"));
        assert!(!root.contains("decryption"));
        let parsed: serde_norway::Value = serde_norway::from_str(&root).unwrap();
        let patches = parsed["spec"]["patches"].as_sequence().unwrap();
        assert_eq!(patches.len(), 6);
        for p in patches {
            assert!(p["patch"].as_str().unwrap().starts_with("$patch: delete\n"));
        }
        assert_eq!(
            patches[0]["target"]["labelSelector"].as_str(),
            Some("app.kubernetes.io/part-of=flux")
        );
        assert_eq!(patches[1]["target"]["kind"].as_str(), Some("GitRepository"));
        assert_eq!(patches[2]["target"]["name"].as_str(), Some("flux-system"));
        // flux-operator's installation of Flux: its two releases, their chart sources, a FluxInstance.
        for (patch, kind) in patches[3..].iter().zip(["HelmRelease", "OCIRepository"]) {
            assert_eq!(patch["target"]["kind"].as_str(), Some(kind));
            assert_eq!(
                patch["target"]["name"].as_str(),
                Some("flux-operator|flux-instance")
            );
        }
        assert_eq!(patches[5]["target"]["kind"].as_str(), Some("FluxInstance"));
    }

    #[test]
    fn a_sops_key_becomes_the_decryption_secret() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("age.agekey");
        fs::write(&key, "# public key: age1xyz\nAGE-SECRET-KEY-1ABC\n").unwrap();
        let served = GitopsOptions {
            sops_age_key: Some(key),
            ..GitopsOptions::default()
        }
        .resolve()
        .unwrap();
        let secret: serde_norway::Value =
            serde_norway::from_str(&served.sops_secret().unwrap()).unwrap();
        assert_eq!(
            secret["stringData"]["age.agekey"].as_str(),
            Some("# public key: age1xyz\nAGE-SECRET-KEY-1ABC\n")
        );
        let (_, root) = served.root_manifests("infra", "http://x");
        let root: serde_norway::Value = serde_norway::from_str(&root).unwrap();
        assert_eq!(
            root["spec"]["decryption"]["secretRef"]["name"].as_str(),
            Some(SOPS_SECRET)
        );
    }

    #[rstest::rstest]
    #[case::unknown_cluster(GitopsOptions { cluster_paths: [("prod".to_string(), "x".to_string())].into(), ..GitopsOptions::default() }, "no cluster prod")]
    #[case::missing_dir(GitopsOptions { dir: Some("/nonexistent/gitops".into()), ..GitopsOptions::default() }, "--gitops /nonexistent/gitops: no such directory")]
    #[case::public_key(GitopsOptions { sops_age_key: Some(crate::repo_root().join("README.md")), ..GitopsOptions::default() }, "no AGE-SECRET-KEY- line")]
    fn bad_options_are_refused_in_one_line(#[case] options: GitopsOptions, #[case] says: &str) {
        let e = options.resolve().unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[rstest::rstest]
    #[case::operator_release("helm.toolkit.fluxcd.io/v2", "HelmRelease", "flux-operator", true)]
    #[case::instance_release("helm.toolkit.fluxcd.io/v2", "HelmRelease", "flux-instance", true)]
    #[case::chart_source("source.toolkit.fluxcd.io/v1", "OCIRepository", "flux-operator", true)]
    #[case::flux_instance("fluxcd.controlplane.io/v1", "FluxInstance", "flux", true)]
    #[case::an_app_release("helm.toolkit.fluxcd.io/v2", "HelmRelease", "flux-operator-ui", false)]
    #[case::another_kind("v1", "ConfigMap", "flux-operator", false)]
    fn a_flux_operator_installation_is_recognised(
        #[case] api_version: &str,
        #[case] kind: &str,
        #[case] name: &str,
        #[case] left_out: bool,
    ) {
        let object = serde_json::json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": "flux-system"},
        });
        assert_eq!(is_flux_installation(&object), left_out);
    }
}
