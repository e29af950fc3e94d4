//! The topology every provider builds: the clusters (each a kubectl context of one kubeconfig) and
//! the one way to do something on each of them at once.

use anyhow::Result;

/// The clusters every provider creates, with their kubectl context names.
pub const CLUSTERS: [&str; 2] = ["infra", "apps"];

/// Runs `step` for every cluster at once (its index in [`CLUSTERS`] and its name), one thread
/// each, and returns every cluster's outcome in that order once every thread has ended (nothing is
/// left running behind the caller). A panicking step is that cluster's error.
pub(crate) fn per_cluster<T, F>(step: F) -> Vec<Result<T>>
where
    T: Send,
    F: Fn(usize, &'static str) -> Result<T> + Sync,
{
    std::thread::scope(|scope| {
        let step = &step;
        let threads: Vec<_> = CLUSTERS
            .iter()
            .enumerate()
            .map(|(i, cluster)| (*cluster, scope.spawn(move || step(i, cluster))))
            .collect();
        threads
            .into_iter()
            .map(|(cluster, thread)| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the {cluster} step panicked")))
            })
            .collect()
    })
}

/// [`per_cluster`] for steps without a value: the first cluster's error, after every thread ended.
pub(crate) fn each_cluster<F>(step: F) -> Result<()>
where
    F: Fn(&'static str) -> Result<()> + Sync,
{
    per_cluster(|_, cluster| step(cluster))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn each_cluster_runs_every_cluster_and_returns_the_failure() {
        let ran = Mutex::new(Vec::new());
        let result = each_cluster(|cluster| {
            ran.lock().unwrap().push(cluster);
            if cluster == "apps" {
                anyhow::bail!("apps failed");
            }
            Ok(())
        });
        assert_eq!(result.unwrap_err().to_string(), "apps failed");
        let mut ran = ran.into_inner().unwrap();
        ran.sort();
        assert_eq!(ran, ["apps", "infra"]);
    }
}
