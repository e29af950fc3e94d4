//! What a stand-in source serves: a minimal Helm chart of the name and version asked for, or an
//! empty Flux artifact, packed and pushed to the local registry with the `oci-client` crate.

use super::*;

pub(super) const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub(super) const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub(super) const FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
pub(super) const FLUX_CONTENT: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";

/// One artifact to push: repository, tag, config and layer.
#[derive(Debug, Clone)]
pub(super) struct Artifact {
    pub(super) repository: String,
    pub(super) tag: String,
    pub(super) config_type: &'static str,
    pub(super) config: Vec<u8>,
    pub(super) layer_type: String,
    pub(super) layer: Vec<u8>,
}

pub(super) fn empty_kustomization(origin: &str) -> String {
    format!(
        "# k8s-ops harness stand-in for {origin}: its content cannot be fetched here\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"
    )
}

pub(super) fn chart_artifact(
    repository: String,
    tag: String,
    chart: &str,
    version: &str,
    layer_type: &str,
    origin: &str,
) -> Artifact {
    let description = format!("k8s-ops harness stand-in for {chart} {version} of {origin}");
    let chart_yaml = format!(
        "apiVersion: v2\nname: {chart}\nversion: {version}\ndescription: {}\ntype: application\nannotations:\n  {STANDIN_FOR}: {}\n",
        render_json(&description),
        render_json(origin)
    );
    let template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-standin\n  namespace: {{{{ .Release.Namespace }}}}\n  labels:\n    {STANDIN_LABEL}: \"true\"\ndata:\n  standInFor: {}\n",
        render_json(&format!("{origin} {chart} {version}"))
    );
    let files = vec![
        (format!("{chart}/Chart.yaml"), chart_yaml),
        (format!("{chart}/values.yaml"), "{}\n".to_string()),
        (format!("{chart}/templates/standin.yaml"), template),
    ];
    Artifact {
        repository,
        tag,
        config_type: HELM_CONFIG,
        config: serde_json::to_vec(&json!({"apiVersion": "v2", "name": chart, "version": version, "description": description, "type": "application"})).expect("json"),
        layer_type: layer_type.to_string(),
        layer: tgz(&files),
    }
}

pub(super) fn render_json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A gzipped tar of `(path, content)` files, reproducible (fixed mtime and mode).
pub(super) fn tgz(files: &[(String, String)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(encoder);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, content.as_bytes())
            .expect("writing to memory");
    }
    tar.into_inner()
        .and_then(|mut gz| {
            gz.flush()?;
            gz.finish()
        })
        .expect("writing to memory")
}

/// `tag` as a chart version: a SemVer, `v` prefix dropped.
pub(super) fn semver_of(tag: &str) -> Option<String> {
    let t = tag.trim_start_matches('v').replace('_', "+");
    semver::Version::parse(&t).ok().map(|v| v.to_string())
}

/// A version that the Helm (Masterminds) constraint `constraint` accepts: the exact version, else
/// the first of the bounds it names (and their neighbours) that it matches, else `1.0.0`.
pub fn pick_version(constraint: &str) -> String {
    let c = constraint.trim();
    if c.is_empty() || c == "*" {
        return "1.0.0".to_string();
    }
    if let Some(v) = semver_of(c) {
        return v;
    }
    let first = c.split("||").next().unwrap_or(c).trim();
    // Masterminds ANDs with spaces or commas; the semver crate with commas.
    let mut normalized = String::new();
    for part in first.split([',', ' ']).filter(|p| !p.is_empty()) {
        if !normalized.is_empty()
            && !part
                .starts_with(|ch: char| ch.is_ascii_digit() || ch == 'v' || ch == 'x' || ch == '*')
        {
            normalized.push_str(", ");
        } else if !normalized.is_empty() && normalized.ends_with(|ch: char| "<>=~^".contains(ch)) {
            // `>= 1.0`: the operator and its version belong together.
        } else if !normalized.is_empty() {
            normalized.push_str(", ");
        }
        normalized.push_str(part.trim_start_matches('v'));
    }
    let req = semver::VersionReq::parse(&normalized).ok();
    let mut candidates = Vec::new();
    for bound in first
        .split(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .filter(|s| !s.is_empty())
    {
        let n: Vec<u64> = bound.split('.').filter_map(|p| p.parse().ok()).collect();
        let (a, b, z) = (
            n.first().copied().unwrap_or(0),
            n.get(1).copied().unwrap_or(0),
            n.get(2).copied().unwrap_or(0),
        );
        for (x, y, w) in [(a, b, z), (a, b, z + 1), (a, b + 1, 0), (a + 1, 0, 0)] {
            candidates.push(semver::Version::new(x, y, w));
        }
        if a > 0 && b == 0 && z == 0 {
            candidates.push(semver::Version::new(a - 1, 99, 0));
        }
    }
    candidates.push(semver::Version::new(1, 0, 0));
    candidates
        .into_iter()
        .find(|v| req.as_ref().is_none_or(|r| r.matches(v)))
        .map(|v| v.to_string())
        .unwrap_or_else(|| "1.0.0".to_string())
}

/// Pushes one artifact to the local registry (plain HTTP, 127.0.0.1).
pub(super) async fn push(port: u16, artifact: &Artifact) -> Result<()> {
    // reqwest, under the OCI client, needs a TLS provider even for plain HTTP: kube's ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference =
        format!("127.0.0.1:{port}/{}:{}", artifact.repository, artifact.tag)
            .parse()
            .with_context(|| {
                format!(
                    "{}:{} is no OCI reference",
                    artifact.repository, artifact.tag
                )
            })?;
    let layer = oci_client::client::ImageLayer::new(
        artifact.layer.clone(),
        artifact.layer_type.clone(),
        None,
    );
    let config = oci_client::client::Config::new(
        artifact.config.clone(),
        artifact.config_type.to_string(),
        None,
    );
    let auth = oci_client::secrets::RegistryAuth::Anonymous;
    let layers = [layer];
    let push = client.push(&reference, &layers, config, &auth, None);
    crate::sys::exec::within(
        Duration::from_secs(60),
        format!("pushing {reference}"),
        push,
    )
    .await
    .with_context(|| format!("pushing {reference} to the local registry"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[rstest::rstest]
    #[case::exact("1.2.3", "1.2.3")]
    #[case::v_prefix("v4.0.1", "4.0.1")]
    #[case::empty("", "1.0.0")]
    #[case::wildcard("1.x", "1.0.0")]
    #[case::caret("^2.1", "2.1.0")]
    #[case::range(">=1.0.0 <2.0.0", "1.0.0")]
    #[case::range_comma(">=3.1, <4", "3.1.0")]
    #[case::exclusive_lower(">1.5.0", "1.5.1")]
    #[case::or("~1.2.0 || ^3", "1.2.0")]
    fn a_version_the_constraint_accepts(#[case] constraint: &str, #[case] want: &str) {
        assert_eq!(pick_version(constraint), want);
    }
}
