//! The upstream tools: where each one's Go module is, which binaries it yields and how it is
//! stamped and built ([`Tool::spec`], one exhaustive table).

/// One upstream tool: where its module is and which binaries it yields (its row of [`Tool::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Task,
    Flux,
    Kwok,
    Etcd,
    Kubernetes,
    SourceController,
    KustomizeController,
    HelmController,
    NotificationController,
    /// The OCI registry (CNCF distribution) that serves stand-in charts for sources that cannot be
    /// fetched here (`harness up --standins`, [`crate::gitops::standins`]).
    Registry,
    /// Only for the kind provider (and validating kind-configs/ here).
    Kind,
    /// kind provider, node image built here: kubelet, kubeadm, kube-proxy of the `kubernetes` pin.
    KubeNode,
    /// kind provider, node image built here: the cluster DNS kubeadm deploys.
    Coredns,
    /// kind provider, node image built here: `crictl`, which `kind load` and `kind export logs` run.
    Crictl,
}

/// Which link-time version stamp a tool needs: `flux check` rejects an API server whose version
/// is not a release, and the flux CLI and kwok report their own version from a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    None,
    Kubernetes,
    FluxCli,
    Kwok,
}

/// How one tool is built.
#[derive(Debug)]
struct Spec {
    /// Its key in `toolchain/versions.yaml` (and the name of its cache directory).
    key: &'static str,
    /// The pin it is built at: its own key, except the Kubernetes node binaries (`kubernetes`).
    version_key: &'static str,
    module: &'static str,
    /// `(package below the module, binary name)` pairs.
    packages: &'static [(&'static str, &'static str)],
    stamp: Stamp,
    /// Requirements of `v0.0.0` stand for the staging modules at the pin's `v0.` version.
    staging: bool,
    /// The flux CLI embeds `cmd/flux/manifests/*.yaml`, which its module zip lacks: built from a
    /// writable copy of the module with a placeholder manifest (the harness never runs `flux install`).
    builds_from_copy: bool,
    /// The Flux controllers ship their CRDs in the module (`config/crd/bases`); the harness installs them.
    ships_crds: bool,
    /// Rough cold-build time on 2 cores, shown while building.
    cold_build_hint: &'static str,
    /// A cold build on this project's 2-core machine, Go's caches empty (measured, docs/harness.md):
    /// the expected total announced before a first build.
    cold_build_secs: u64,
}

const fn spec(key: &'static str, module: &'static str) -> Spec {
    Spec {
        key,
        version_key: key,
        module,
        packages: &[],
        stamp: Stamp::None,
        staging: false,
        builds_from_copy: false,
        ships_crds: false,
        cold_build_hint: "3-8 min",
        cold_build_secs: 150,
    }
}

const fn controller(key: &'static str, module: &'static str) -> Spec {
    Spec {
        ships_crds: true,
        ..spec(key, module)
    }
}

impl Tool {
    /// Every tool, in the order of its variants.
    pub(super) const EVERY: [Tool; 14] = [
        Tool::Task,
        Tool::Flux,
        Tool::Kwok,
        Tool::Etcd,
        Tool::Kubernetes,
        Tool::SourceController,
        Tool::KustomizeController,
        Tool::HelmController,
        Tool::NotificationController,
        Tool::Registry,
        Tool::Kind,
        Tool::KubeNode,
        Tool::Coredns,
        Tool::Crictl,
    ];

    /// How this tool is built (exhaustive: a new tool does not compile without its row).
    fn spec(self) -> &'static Spec {
        match self {
            Tool::Task => &TASK,
            Tool::Flux => &FLUX,
            Tool::Kwok => &KWOK,
            Tool::Etcd => &ETCD,
            Tool::Kubernetes => &KUBERNETES,
            Tool::SourceController => &SOURCE_CONTROLLER,
            Tool::KustomizeController => &KUSTOMIZE_CONTROLLER,
            Tool::HelmController => &HELM_CONTROLLER,
            Tool::NotificationController => &NOTIFICATION_CONTROLLER,
            Tool::Registry => &REGISTRY,
            Tool::Kind => &KIND,
            Tool::KubeNode => &KUBE_NODE,
            Tool::Coredns => &COREDNS,
            Tool::Crictl => &CRICTL,
        }
    }
}

impl Tool {
    /// Every tool the `local` provider and the Taskfiles need (built by `harness toolchain`).
    pub const ALL: [Tool; 9] = [
        Tool::Task,
        Tool::Flux,
        Tool::Kwok,
        Tool::Etcd,
        Tool::Kubernetes,
        Tool::SourceController,
        Tool::KustomizeController,
        Tool::HelmController,
        Tool::NotificationController,
    ];

    /// What the kind provider builds its images from, besides the Flux controllers.
    pub const KIND_IMAGES: [Tool; 6] = [
        Tool::Kind,
        Tool::Kubernetes,
        Tool::KubeNode,
        Tool::Etcd,
        Tool::Coredns,
        Tool::Crictl,
    ];

    /// The key of this tool in `toolchain/versions.yaml`.
    pub fn key(self) -> &'static str {
        self.spec().key
    }

    pub(super) fn version_key(self) -> &'static str {
        self.spec().version_key
    }

    pub(super) fn module(self) -> &'static str {
        self.spec().module
    }

    pub(super) fn packages(self) -> &'static [(&'static str, &'static str)] {
        self.spec().packages
    }

    pub(super) fn ldflags(self, version: &str) -> String {
        match self.spec().stamp {
            Stamp::Kubernetes => {
                let v = "k8s.io/component-base/version";
                let minor = version.split('.').nth(1).unwrap_or("0");
                format!(
                    "-X {v}.gitVersion={version} -X {v}.gitMajor=1 -X {v}.gitMinor={minor} \
                     -X {v}.gitTreeState=clean -X {v}.buildDate=1970-01-01T00:00:00Z"
                )
            }
            Stamp::FluxCli => format!("-X main.VERSION={}", version.trim_start_matches('v')),
            Stamp::Kwok => format!("-X sigs.k8s.io/kwok/pkg/consts.Version={version}"),
            Stamp::None => String::new(),
        }
    }

    /// Version of the staging modules that stand in for `v0.0.0` requirements (Kubernetes only).
    pub(super) fn staging_version(self, version: &str) -> Option<String> {
        self.spec()
            .staging
            .then(|| version.replacen("v1.", "v0.", 1))
    }

    pub(super) fn builds_from_copy(self) -> bool {
        self.spec().builds_from_copy
    }

    pub(super) fn ships_crds(self) -> bool {
        self.spec().ships_crds
    }

    pub(super) fn cold_build_hint(self) -> &'static str {
        self.spec().cold_build_hint
    }

    /// About how long a cold build of it takes on 2 cores, in seconds.
    pub(super) fn cold_build_secs(self) -> u64 {
        self.spec().cold_build_secs
    }
}

/// The rows of [`Tool::spec`].
const TASK: Spec = Spec {
    packages: &[("cmd/task", "task")],
    cold_build_hint: "1-2 min",
    cold_build_secs: 108,
    ..spec("task", "github.com/go-task/task/v3")
};

const FLUX: Spec = Spec {
    packages: &[("cmd/flux", "flux")],
    stamp: Stamp::FluxCli,
    builds_from_copy: true,
    cold_build_secs: 275,
    ..spec("flux", "github.com/fluxcd/flux2/v2")
};

const KWOK: Spec = Spec {
    packages: &[("cmd/kwok", "kwok"), ("cmd/kwokctl", "kwokctl")],
    stamp: Stamp::Kwok,
    cold_build_secs: 280,
    ..spec("kwok", "sigs.k8s.io/kwok")
};

const ETCD: Spec = Spec {
    packages: &[("", "etcd")],
    cold_build_hint: "2-3 min",
    cold_build_secs: 99,
    ..spec("etcd", "go.etcd.io/etcd/server/v3")
};

const KUBERNETES: Spec = Spec {
    packages: &[
        ("cmd/kube-apiserver", "kube-apiserver"),
        ("cmd/kube-controller-manager", "kube-controller-manager"),
        ("cmd/kube-scheduler", "kube-scheduler"),
        ("cmd/kubectl", "kubectl"),
    ],
    stamp: Stamp::Kubernetes,
    staging: true,
    cold_build_hint: "10-20 min",
    cold_build_secs: 644,
    ..spec("kubernetes", "k8s.io/kubernetes")
};

const SOURCE_CONTROLLER: Spec = Spec {
    packages: &[("", "source-controller")],
    cold_build_secs: 550,
    ..controller("source-controller", "github.com/fluxcd/source-controller")
};

const KUSTOMIZE_CONTROLLER: Spec = Spec {
    packages: &[("", "kustomize-controller")],
    cold_build_secs: 230,
    ..controller(
        "kustomize-controller",
        "github.com/fluxcd/kustomize-controller",
    )
};

const HELM_CONTROLLER: Spec = Spec {
    packages: &[("", "helm-controller")],
    cold_build_secs: 229,
    ..controller("helm-controller", "github.com/fluxcd/helm-controller")
};

const NOTIFICATION_CONTROLLER: Spec = Spec {
    packages: &[("", "notification-controller")],
    cold_build_secs: 297,
    ..controller(
        "notification-controller",
        "github.com/fluxcd/notification-controller",
    )
};

const REGISTRY: Spec = Spec {
    packages: &[("cmd/registry", "registry")],
    cold_build_hint: "1-2 min",
    cold_build_secs: 90,
    ..spec("registry", "github.com/distribution/distribution/v3")
};

const KIND: Spec = Spec {
    packages: &[("", "kind")],
    cold_build_hint: "1-2 min",
    cold_build_secs: 15,
    ..spec("kind", "sigs.k8s.io/kind")
};

const KUBE_NODE: Spec = Spec {
    version_key: "kubernetes",
    packages: &[
        ("cmd/kubelet", "kubelet"),
        ("cmd/kubeadm", "kubeadm"),
        ("cmd/kube-proxy", "kube-proxy"),
    ],
    stamp: Stamp::Kubernetes,
    staging: true,
    cold_build_hint: "5-10 min",
    cold_build_secs: 300,
    ..spec("kube-node", "k8s.io/kubernetes")
};

const COREDNS: Spec = Spec {
    packages: &[("", "coredns")],
    cold_build_secs: 320,
    ..spec("coredns", "github.com/coredns/coredns")
};

const CRICTL: Spec = Spec {
    packages: &[("cmd/crictl", "crictl")],
    cold_build_secs: 106,
    ..spec("cri-tools", "sigs.k8s.io/cri-tools")
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn every_tool_builds_something_and_is_listed_once() {
        for (i, tool) in Tool::EVERY.iter().enumerate() {
            assert_eq!(*tool as usize, i, "{tool:?} is listed at {i}");
            assert!(!tool.spec().packages.is_empty(), "{tool:?} builds nothing");
        }
        assert_eq!(Tool::EVERY.len(), Tool::Crictl as usize + 1);
    }

    #[test]
    pub(super) fn kubernetes_stamps_its_release_and_maps_staging_modules() {
        assert!(
            Tool::Kubernetes
                .ldflags("v1.35.4")
                .contains("gitVersion=v1.35.4")
        );
        assert!(Tool::Kubernetes.ldflags("v1.35.4").contains("gitMinor=35"));
        assert_eq!(
            Tool::Kubernetes.staging_version("v1.35.4").as_deref(),
            Some("v0.35.4")
        );
        assert_eq!(Tool::Etcd.staging_version("v3.6.16"), None);
        assert_eq!(Tool::Flux.ldflags("v2.7.5"), "-X main.VERSION=2.7.5");
    }
}
