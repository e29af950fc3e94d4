//! Flux as the harness knows it on any provider: its namespace, the controllers it runs, and the
//! API resources of its objects. How the local provider runs the controllers is
//! `provider::local::flux`.

use kube::api::GroupVersionKind;
use kube::discovery::ApiResource;

use crate::toolchain::Tool;

pub const NAMESPACE: &str = "flux-system";

/// The Flux controllers the harness runs, in start order.
pub const CONTROLLERS: [Tool; 4] = [
    Tool::SourceController,
    Tool::KustomizeController,
    Tool::HelmController,
    Tool::NotificationController,
];

pub fn kustomizations() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    )
}

pub fn helmreleases() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        "helmreleases",
    )
}

pub fn gitrepositories() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    )
}

pub fn helmrepositories() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "HelmRepository"),
        "helmrepositories",
    )
}

pub fn ocirepositories() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
        "ocirepositories",
    )
}

pub fn helmcharts() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "HelmChart"),
        "helmcharts",
    )
}
