//! The Flux objects of the clusters as a scenario sees them: every Kustomization and
//! HelmRelease, and their fingerprints (what a command can write: generation, labels,
//! annotations) to prove that a command changed nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::assertions::flux_fingerprint;
use harness::fixtures::Kind;
use harness::provider::Environment;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};

pub type Fingerprint = BTreeMap<String, String>;

/// Fingerprints of every Flux object on both clusters once they stopped changing: the "before" of
/// a scenario that must change nothing.
pub struct Settled {
    infra: Fingerprint,
    apps: Fingerprint,
}

impl Settled {
    /// Reads both clusters until two reads 1 s apart agree (a Kustomization of a previous scenario
    /// may still be applying its objects), for at most 60 s.
    pub async fn read(env: &Environment) -> anyhow::Result<Self> {
        let infra = env.client("infra").await?;
        let apps = env.client("apps").await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (
            flux_fingerprint(&infra, None).await?,
            flux_fingerprint(&apps, None).await?,
        );
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = (
                flux_fingerprint(&infra, None).await?,
                flux_fingerprint(&apps, None).await?,
            );
            if now == last {
                return Ok(Self {
                    infra: now.0,
                    apps: now.1,
                });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "Flux objects kept changing for 60 s, no stable fingerprint"
            );
            last = now;
        }
    }

    /// Fails naming every Flux object of `cluster` that differs from the settled state now.
    pub async fn unchanged_on(&self, env: &Environment, cluster: &str) -> anyhow::Result<()> {
        let before = match cluster {
            "infra" => &self.infra,
            "apps" => &self.apps,
            other => anyhow::bail!("no settled fingerprint of cluster {other}"),
        };
        let client = env.client(cluster).await?;
        same_fingerprint(cluster, before, &flux_fingerprint(&client, None).await?)
    }

    /// [`Settled::unchanged_on`] both clusters.
    pub async fn unchanged(&self, env: &Environment) -> anyhow::Result<()> {
        self.unchanged_on(env, "infra").await?;
        self.unchanged_on(env, "apps").await
    }
}

/// Fails naming every object whose fingerprint differs (or that appeared/disappeared).
pub fn same_fingerprint(
    cluster: &str,
    before: &Fingerprint,
    after: &Fingerprint,
) -> anyhow::Result<()> {
    let mut changed = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            Some(w) if w == v => {}
            Some(w) => changed.push(format!("{k}: {v} → {w}")),
            None => changed.push(format!("{k}: deleted")),
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        changed.push(format!("{k}: created"));
    }
    anyhow::ensure!(
        changed.is_empty(),
        "Flux objects on {cluster} changed: {}",
        changed.join(", ")
    );
    Ok(())
}

/// Every Kustomization and HelmRelease of a cluster.
pub async fn ks_and_hr(client: &Client) -> anyhow::Result<Vec<(Kind, DynamicObject)>> {
    let mut out = Vec::new();
    for kind in [Kind::Kustomization, Kind::HelmRelease] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
        out.extend(
            api.list(&ListParams::default())
                .await?
                .into_iter()
                .map(|o| (kind, o)),
        );
    }
    Ok(out)
}

pub fn ns_name(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}
