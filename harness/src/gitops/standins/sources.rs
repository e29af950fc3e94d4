//! The remote sources of a render (OCIRepository, HelmRepository, GitRepository) and what their
//! consumers ask of them; whether each answers here; and the served copy's rewrite that points a
//! source at its stand-in.

use super::*;

/// One remote source of the render and what its consumers need from it.
#[derive(Debug, Clone, Default)]
pub(super) struct SourcePlan {
    pub(super) clusters: BTreeSet<String>,
    pub(super) kind: String,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) url: String,
    pub(super) spec: Value,
    /// Charts asked for: `(chart name, version constraint)`.
    pub(super) charts: BTreeSet<(String, String)>,
    /// Paths Kustomizations read from it.
    pub(super) paths: BTreeSet<String>,
}

/// A source's identity: (kind, namespace, name).
type SourceKey = (String, String, String);

/// Every source object of the renders that is not the served repository, with its consumers.
pub(super) fn plan_sources(renders: &BTreeMap<String, Render>) -> Vec<SourcePlan> {
    let mut plans = sources_of(renders);
    for o in renders.values().flat_map(|r| &r.objects) {
        let ns = o.namespace().unwrap_or("default");
        for (source, ask) in asks(o) {
            let key = (
                source["kind"].as_str().unwrap_or_default().to_string(),
                source["namespace"].as_str().unwrap_or(ns).to_string(),
                source["name"].as_str().unwrap_or_default().to_string(),
            );
            if let Some(plan) = plans.get_mut(&key) {
                ask.add_to(plan);
            }
        }
    }
    plans
        .into_values()
        .filter(|p| {
            !(p.kind == "GitRepository"
                && p.namespace == crate::flux::NAMESPACE
                && p.name == "flux-system")
        })
        .collect()
}

/// The source objects of every render, each once, with the clusters it is on.
fn sources_of(renders: &BTreeMap<String, Render>) -> BTreeMap<SourceKey, SourcePlan> {
    let mut plans: BTreeMap<SourceKey, SourcePlan> = BTreeMap::new();
    for (cluster, render) in renders {
        for o in &render.objects {
            let (group, _) = o.group_version();
            if group != "source.toolkit.fluxcd.io"
                || !matches!(
                    o.kind(),
                    "OCIRepository" | "HelmRepository" | "GitRepository" | "Bucket"
                )
            {
                continue;
            }
            let url = o.value["spec"]["url"]
                .as_str()
                .or(o.value["spec"]["endpoint"].as_str())
                .unwrap_or_default()
                .to_string();
            let namespace = o.namespace().unwrap_or("default").to_string();
            let key = (
                o.kind().to_string(),
                namespace.clone(),
                o.name().to_string(),
            );
            let plan = plans.entry(key).or_insert_with(|| SourcePlan {
                kind: o.kind().to_string(),
                namespace,
                name: o.name().to_string(),
                url,
                spec: o.value["spec"].clone(),
                ..SourcePlan::default()
            });
            plan.clusters.insert(cluster.clone());
        }
    }
    plans
}

/// What a consumer asks of a source.
enum Ask {
    /// The chart an OCIRepository holds (a HelmRelease's `chartRef`): named after its URL.
    ChartOfUrl,
    /// A chart by name and version constraint (a HelmRelease's `chart.spec`, a HelmChart).
    Chart(String, String),
    /// A path (a Kustomization's `spec.path`).
    Path(String),
}

impl Ask {
    fn add_to(self, plan: &mut SourcePlan) {
        match self {
            Self::ChartOfUrl => {
                let chart = plan.url.rsplit('/').next().unwrap_or("chart").to_string();
                plan.charts.insert((chart, String::new()));
            }
            Self::Chart(name, version) => {
                plan.charts.insert((name, version));
            }
            Self::Path(path) => {
                plan.paths.insert(path);
            }
        }
    }
}

/// The source references of `o` and what it asks of each.
fn asks(o: &Object) -> Vec<(&Value, Ask)> {
    let spec = &o.value["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match (o.group_version().0, o.kind()) {
        ("helm.toolkit.fluxcd.io", "HelmRelease") => {
            let mut asks = Vec::new();
            if spec["chartRef"].is_object() {
                asks.push((&spec["chartRef"], Ask::ChartOfUrl));
            }
            let chart = &spec["chart"]["spec"];
            if chart.is_object() {
                let ask = Ask::Chart(text(&chart["chart"]), text(&chart["version"]));
                asks.push((&chart["sourceRef"], ask));
            }
            asks
        }
        ("source.toolkit.fluxcd.io", "HelmChart") => {
            let ask = Ask::Chart(text(&spec["chart"]), text(&spec["version"]));
            vec![(&spec["sourceRef"], ask)]
        }
        ("kustomize.toolkit.fluxcd.io", "Kustomization") => {
            let path = spec["path"].as_str().unwrap_or("./").to_string();
            vec![(&spec["sourceRef"], Ask::Path(path))]
        }
        _ => Vec::new(),
    }
}

impl SourcePlan {
    /// The source's URL, as a repository path of the local registry: `<host>/<path>`, lowercase.
    pub(super) fn registry_path(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.trim_end_matches('/')
            .to_lowercase()
            .replace(':', "-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "./_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }

    pub(super) fn git_repo_name(&self) -> String {
        format!("standin-{}-{}", self.namespace, self.name)
    }

    pub(super) fn standin_url(&self, registry_port: u16, repo: &FixturesRepo) -> String {
        match self.kind.as_str() {
            "GitRepository" => repo.sibling_url(&self.git_repo_name()),
            _ => format!("oci://127.0.0.1:{registry_port}/{}", self.registry_path()),
        }
    }

    /// The tag an OCIRepository is pointed at: its `ref.tag`, a version its `ref.semver` accepts,
    /// else `latest`.
    pub(super) fn oci_tag(&self) -> String {
        let r = &self.spec["ref"];
        if let Some(tag) = r["tag"].as_str() {
            return tag.to_string();
        }
        if let Some(semver) = r["semver"].as_str() {
            return pick_version(semver);
        }
        "latest".to_string()
    }

    /// What the stand-in serves: per chart a Helm chart (HelmRepository), or the one artifact of
    /// an OCIRepository (a chart when a HelmRelease uses it, else the Kustomizations' paths).
    pub(super) fn artifacts(&self) -> Vec<Artifact> {
        let origin = &self.url;
        match self.kind.as_str() {
            "HelmRepository" => self
                .charts
                .iter()
                .map(|(chart, constraint)| {
                    let version = pick_version(constraint);
                    chart_artifact(
                        format!("{}/{}", self.registry_path(), chart),
                        version.replace('+', "_"),
                        chart,
                        &version,
                        HELM_CHART,
                        origin,
                    )
                })
                .collect(),
            _ => {
                let tag = self.oci_tag();
                let selected = self.spec["layerSelector"]["mediaType"].as_str();
                if let Some((chart, _)) = self.charts.iter().next() {
                    let version = semver_of(&tag).unwrap_or_else(|| "0.0.0-standin".to_string());
                    vec![chart_artifact(
                        self.registry_path(),
                        tag,
                        chart,
                        &version,
                        selected.unwrap_or(HELM_CHART),
                        origin,
                    )]
                } else {
                    let files: Vec<(String, String)> = self
                        .paths
                        .iter()
                        .map(|p| {
                            let p = p.trim_start_matches("./").trim_end_matches('/');
                            let file = if p.is_empty() {
                                "kustomization.yaml".to_string()
                            } else {
                                format!("{p}/kustomization.yaml")
                            };
                            (file, empty_kustomization(origin))
                        })
                        .collect();
                    vec![Artifact {
                        repository: self.registry_path(),
                        tag,
                        config_type: FLUX_CONFIG,
                        config: b"{}".to_vec(),
                        layer_type: selected.unwrap_or(FLUX_CONTENT).to_string(),
                        layer: tgz(&files),
                    }]
                }
            }
        }
    }
}

/// Whether URLs answer: a TCP connection to their host and port within 3 s (names resolved within
/// 5 s). Remembered per host and port.
#[derive(Default)]
pub(super) struct Probe(BTreeMap<(String, u16), Result<(), String>>);

impl Probe {
    pub(super) fn answers(&mut self, url: &str) -> Result<(), String> {
        let Some((host, port)) = host_port(url) else {
            return Err(format!("cannot tell the host of {url}"));
        };
        self.0
            .entry((host.clone(), port))
            .or_insert_with(|| connect(&host, port))
            .clone()
    }
}

/// Host and port of a source URL: `oci://`, `https://`, `http://`, `ssh://`, or scp-like `git@host:path`.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => {
            // scp-like: user@host:path
            let (_, after) = url.split_once('@')?;
            let (host, _) = after.split_once(':')?;
            return Some((host.to_string(), 22));
        }
    };
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = match scheme {
        "http" => 80,
        "ssh" => 22,
        _ => 443,
    };
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        _ if !authority.is_empty() => Some((authority.to_string(), default)),
        _ => None,
    }
}

pub(super) fn connect(host: &str, port: u16) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = format!("{host}:{port}");
    std::thread::spawn({
        let name = name.clone();
        move || {
            let _ = tx.send(name.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        }
    });
    let addrs = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        Ok(Ok(_)) | Ok(Err(_)) => return Err(format!("no answer: {host} does not resolve")),
        Err(_) => return Err(format!("no answer: resolving {host} took over 5 s")),
    };
    match TcpStream::connect_timeout(&addrs[0], Duration::from_secs(3)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("no answer from {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::standins::tests::object;
    #[rstest::rstest]
    #[case::oci("oci://ghcr.io/bjw-s-labs/helm/app-template", Some(("ghcr.io", 443)))]
    #[case::https_port("https://charts.example.com:8443/stable", Some(("charts.example.com", 8443)))]
    #[case::http("http://10.0.0.1/charts", Some(("10.0.0.1", 80)))]
    #[case::ssh("ssh://git@github.com/org/repo", Some(("github.com", 22)))]
    #[case::scp("git@github.com:org/repo.git", Some(("github.com", 22)))]
    #[case::nothing("charts", None)]
    fn host_and_port_of_a_source_url(#[case] url: &str, #[case] want: Option<(&str, u16)>) {
        assert_eq!(host_port(url), want.map(|(h, p)| (h.to_string(), p)));
    }

    #[test]
    fn a_closed_port_does_not_answer_and_a_listener_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let mut probe = Probe::default();
        assert_eq!(probe.answers(&format!("http://127.0.0.1:{open}/x")), Ok(()));
        drop(listener);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let why = probe
            .answers(&format!("oci://127.0.0.1:{closed}/x"))
            .unwrap_err();
        assert!(why.starts_with("no answer from 127.0.0.1:"), "{why}");
        let why = Probe::default()
            .answers("oci://no-such-host.invalid/charts")
            .unwrap_err();
        assert!(why.contains("does not resolve"), "{why}");
    }

    #[test]
    fn helm_releases_ask_their_sources_for_charts() {
        let objects = vec![
            object(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository", "metadata": {"name": "app-template", "namespace": "business"},
                          "spec": {"url": "oci://ghcr.io/bjw-s-labs/helm/app-template", "ref": {"tag": "4.2.0"}, "layerSelector": {"mediaType": HELM_CHART, "operation": "copy"}}}),
            ),
            object(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "odoo", "namespace": "business"},
                          "spec": {"chartRef": {"kind": "OCIRepository", "name": "app-template"}}}),
            ),
            object(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository", "metadata": {"name": "bitnami", "namespace": "flux-system"},
                          "spec": {"url": "https://charts.bitnami.com/bitnami"}}),
            ),
            object(
                json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "redis", "namespace": "db"},
                          "spec": {"chart": {"spec": {"chart": "redis", "version": "19.x", "sourceRef": {"kind": "HelmRepository", "name": "bitnami", "namespace": "flux-system"}}}}}),
            ),
        ];
        let renders = BTreeMap::from([(
            "apps".to_string(),
            Render {
                objects,
                ..Render::default()
            },
        )]);
        let plans = plan_sources(&renders);
        assert_eq!(plans.len(), 2);
        let helm = plans.iter().find(|p| p.kind == "HelmRepository").unwrap();
        assert_eq!(helm.registry_path(), "charts.bitnami.com/bitnami");
        let artifacts = helm.artifacts();
        assert_eq!(
            (artifacts[0].repository.as_str(), artifacts[0].tag.as_str()),
            ("charts.bitnami.com/bitnami/redis", "19.0.0")
        );
        let oci = plans.iter().find(|p| p.kind == "OCIRepository").unwrap();
        let artifacts = oci.artifacts();
        assert_eq!(
            (artifacts[0].repository.as_str(), artifacts[0].tag.as_str()),
            ("ghcr.io/bjw-s-labs/helm/app-template", "4.2.0")
        );
        assert_eq!(artifacts[0].layer_type, HELM_CHART);
        let config: Value = serde_json::from_slice(&artifacts[0].config).unwrap();
        assert_eq!(
            (config["name"].as_str(), config["version"].as_str()),
            (Some("app-template"), Some("4.2.0"))
        );
    }
}
