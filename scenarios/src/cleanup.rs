//! What a scenario creates on a cluster is recorded and deleted in reverse order when the
//! scenario's body ends — passed or failed — each delete bounded (chainsaw's cleanup model).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::wait::delete::delete_and_finalize;
use kube::{Api, Client};

/// How long one object may take to go (finalizers included).
const OBJECT_BOUND: Duration = Duration::from_secs(60);
/// How long a namespace may take to go (everything in it first).
const NAMESPACE_BOUND: Duration = Duration::from_secs(90);

enum Item {
    Object {
        resource: ApiResource,
        namespace: String,
        name: String,
    },
    Namespace(String),
}

/// The objects one scenario creates on one cluster.
pub struct Created {
    client: Client,
    items: Vec<Item>,
}

impl Created {
    pub fn on(client: &Client) -> Self {
        Self {
            client: client.clone(),
            items: Vec::new(),
        }
    }

    /// Records a namespaced object (also one a controller creates for the scenario's objects).
    pub fn object(mut self, resource: &ApiResource, namespace: &str, name: &str) -> Self {
        self.items.push(Item::Object {
            resource: resource.clone(),
            namespace: namespace.into(),
            name: name.into(),
        });
        self
    }

    /// Records a namespace (deleted after everything recorded later).
    pub fn namespace(mut self, name: &str) -> Self {
        self.items.push(Item::Namespace(name.into()));
        self
    }

    /// Runs `body`, then deletes what was recorded, newest first, each within its bound and
    /// whether `body` failed or not. Returns `body`'s error first, else the first failed delete.
    pub async fn around<T>(
        self,
        body: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let result = body.await;
        let mut cleanup = Ok(());
        for item in self.items.iter().rev() {
            if let Err(e) = self.delete(item).await
                && cleanup.is_ok()
            {
                cleanup = Err(e);
            }
        }
        let value = result?;
        cleanup?;
        Ok(value)
    }

    async fn delete(&self, item: &Item) -> anyhow::Result<()> {
        match item {
            Item::Object {
                resource,
                namespace,
                name,
            } => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, resource);
                gone(api, name, OBJECT_BOUND).await.map_err(|e| {
                    anyhow::anyhow!("deleting {} {namespace}/{name}: {e:#}", resource.kind)
                })
            }
            Item::Namespace(name) => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                gone(api, name, NAMESPACE_BOUND)
                    .await
                    .map_err(|e| anyhow::anyhow!("deleting namespace {name}: {e:#}"))
            }
        }
    }
}

/// Deletes `name` (if it is there) and waits until it is gone, at most `bound`.
async fn gone<K>(api: Api<K>, name: &str, bound: Duration) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    if api.get_opt(name).await?.is_none() {
        return Ok(());
    }
    tokio::time::timeout(
        bound,
        delete_and_finalize(api, name, &DeleteParams::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("still present {bound:?} after delete"))??;
    Ok(())
}
