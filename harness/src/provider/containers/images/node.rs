//! The kind node image, as `kind build node-image` makes it: kind's base files and units on Debian
//! with Debian's containerd, runc and CNI plugins, the node binaries, a static bridge CNI, and the
//! kubeadm images imported into its containerd.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{INPUTS_LABEL, REPOSITORY, Spec, build_lock, cached};
use crate::sys::exec::run;
use crate::toolchain::{Tool, Toolchain};

/// What the node image installs from Debian: kind's base list (images/base/Dockerfile) with
/// Debian's containerd, runc and CNI plugins in place of kind's own builds.
const NODE_PACKAGES: &str = "systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2 pigz bash ca-certificates curl jq procps containerd runc containernetworking-plugins";

/// The node image: kind's base files and units, Debian's runtime, the node binaries, a static
/// CNI, and `preload` imported into its containerd.
pub(super) fn node_image(
    toolchain: &Toolchain,
    work: &Path,
    base: &str,
    preload: &[String],
) -> Result<String> {
    let kubernetes = toolchain.versions().get(Tool::Kubernetes);
    let tag = format!("{REPOSITORY}/kind-node:{kubernetes}");
    let unloaded = unloaded_node(toolchain, work, base, &tag)?;

    // The preloaded images: imported into the node's containerd as `kind build node-image` does.
    let mut hash = Sha256::new();
    hash.update(image_id(&unloaded)?);
    for image in preload {
        hash.update(image_id(image)?);
    }
    let inputs = hex::encode(&hash.finalize()[..12]);
    let _lock = build_lock(work, &tag)?;
    if cached(&tag, &inputs) {
        return Ok(tag);
    }
    let started = Instant::now();
    let container = format!("k8s-ops-node-build-{}", std::process::id());
    run(
        "starting the node build container",
        duct::cmd!(
            "docker",
            "run",
            "-d",
            "--privileged",
            "--name",
            &container,
            "--entrypoint",
            "sleep",
            &unloaded,
            "infinity"
        ),
        Duration::from_secs(120),
    )?;
    let result = preload_into(&container, preload).and_then(|()| {
        run(
            &format!("docker commit {tag}"),
            duct::cmd!(
                "docker",
                "commit",
                "--change",
                r#"ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]"#,
                "--change",
                format!("LABEL {INPUTS_LABEL}={inputs}"),
                &container,
                &tag
            ),
            Duration::from_secs(600),
        )
    });
    let _ = run(
        "removing the node build container",
        duct::cmd!("docker", "rm", "-f", &container),
        Duration::from_secs(120),
    );
    result.with_context(|| format!("building the node image {tag}"))?;
    eprintln!("harness: built image {tag} in {:.0?}", started.elapsed());
    Ok(tag)
}

/// The node image before the preload: Debian's runtime packages, kind's base files, the node
/// binaries and kind's base image steps.
fn unloaded_node(toolchain: &Toolchain, work: &Path, base: &str, tag: &str) -> Result<String> {
    let files = node_files(toolchain, work)?;
    let mut spec = Spec::from(base, &format!("{tag}-unloaded"))
        .line(&format!(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {NODE_PACKAGES} && apt-get clean && rm -rf /var/lib/apt/lists/*"
        ))
        .file(&files, "/");
    for bin in ["kubelet", "kubeadm"] {
        spec = spec.file(
            &toolchain.binary(Tool::KubeNode, bin),
            &format!("/usr/bin/{bin}"),
        );
    }
    spec.file(
        &toolchain.binary(Tool::Kubernetes, "kubectl"),
        "/usr/bin/kubectl",
    )
    .file(
        &toolchain.binary(Tool::Crictl, "crictl"),
        "/usr/local/bin/crictl",
    )
    .line(NODE_SETUP)
    .line("ENV container=docker")
    .line("STOPSIGNAL SIGRTMIN+3")
    .line(r#"ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]"#)
    .build(work)
}

/// Starts containerd in the build container, imports `images` (one `docker save` stream), stops it.
fn preload_into(container: &str, images: &[String]) -> Result<()> {
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", container];
        all.extend(args);
        duct::cmd("docker", all)
    };
    run(
        "starting containerd in the node build container",
        exec(&[
            "sh",
            "-c",
            "containerd >/var/log/containerd-build.log 2>&1 &",
        ]),
        Duration::from_secs(30),
    )?;
    crate::sys::poll::wait_for(
        "containerd in the node build container",
        Duration::from_secs(60),
        || {
            Ok(run(
                "ctr version",
                exec(&["ctr", "version"]),
                Duration::from_secs(10),
            )
            .ok())
        },
    )?;
    let mut save = vec!["save".to_string()];
    save.extend(images.iter().cloned());
    run(
        "importing the kubeadm images into the node's containerd",
        duct::cmd("docker", save).pipe(duct::cmd!(
            "docker",
            "exec",
            "-i",
            container,
            "ctr",
            "--namespace=k8s.io",
            "images",
            "import",
            "--label=io.cri-containerd.pinned=pinned",
            "--all-platforms",
            "--no-unpack",
            "--digests",
            "-"
        )),
        Duration::from_secs(600),
    )?;
    let listed = run(
        "ctr images list",
        exec(&["ctr", "--namespace=k8s.io", "images", "list", "-q"]),
        Duration::from_secs(30),
    )?;
    if let Some(missing) = images.iter().find(|i| !listed.lines().any(|l| l == *i)) {
        bail!("{missing} is not in the node's containerd after the import (it holds: {listed})");
    }
    run(
        "stopping containerd in the node build container",
        exec(&["pkill", "containerd"]),
        Duration::from_secs(30),
    )
    .map(drop)
}

/// The image id of `tag` (for the node's inputs: a rebuilt component image rebuilds the node).
fn image_id(tag: &str) -> Result<String> {
    run(
        &format!("docker image inspect {tag}"),
        duct::cmd!("docker", "image", "inspect", "--format", "{{.Id}}", tag),
        Duration::from_secs(30),
    )
}

/// Run once in the node image: kind's base image steps (images/base/Dockerfile) for Debian's
/// packages, the CNI plugins where the kubelet looks for them, and containerd's base OCI spec.
const NODE_SETUP: &str = r#"RUN chmod 0755 /usr/local/bin/* /kind/bin/* /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl \
 && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
 && ln -sf /lib/systemd/systemd /sbin/init \
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
 && systemctl mask systemd-binfmt.service \
 && mkdir -p /etc/kubernetes/manifests /opt/cni/bin \
 && for p in bridge host-local loopback portmap ptp; do ln -sf /usr/lib/cni/$p /opt/cni/bin/$p; done \
 && ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json"#;

/// The files copied onto the node: kind's `images/base/files` from the pinned kind module, with
/// the containerd unit and config adjusted to Debian's containerd and the local images, plus
/// `/kind/version`, the CNI config and kind's two manifests.
fn node_files(toolchain: &Toolchain, work: &Path) -> Result<PathBuf> {
    let kind_files = toolchain.module_dir(Tool::Kind)?.join("images/base/files");
    let dir = work.join(format!(
        "node-files-kind-{}",
        toolchain.versions().get(Tool::Kind)
    ));
    crate::toolchain::writable_copy(&kind_files, &dir)?;
    let unit = dir.join("etc/systemd/system/containerd.service");
    let text = fs::read_to_string(&unit)?;
    fs::write(
        &unit,
        text.replace(
            "ExecStart=/usr/local/bin/containerd",
            "ExecStart=/usr/bin/containerd",
        ),
    )?;
    let pause = toolchain.versions().pin("pause")?;
    fs::write(
        dir.join("etc/containerd/config.toml"),
        CONTAINERD_CONFIG.replace("{pause}", &format!("{REPOSITORY}/pause:{pause}")),
    )?;
    fs::write(
        dir.join("kind/version"),
        toolchain.versions().get(Tool::Kubernetes),
    )?;
    fs::create_dir_all(dir.join("kind/manifests"))?;
    fs::write(dir.join("kind/manifests/default-cni.yaml"), DEFAULT_CNI)?;
    fs::write(
        dir.join("kind/manifests/default-storage.yaml"),
        DEFAULT_STORAGE,
    )?;
    fs::create_dir_all(dir.join("etc/cni/net.d"))?;
    fs::write(dir.join("etc/cni/net.d/10-bridge.conflist"), CNI_CONFLIST)?;
    Ok(dir)
}

/// kind's containerd config (images/base/files/etc/containerd/config.toml) for containerd 1.6,
/// without the fuse-overlayfs proxy (rootless only), with the locally built pause image, and with
/// `restrict_oom_score_adj`: a node without `CAP_SYS_RESOURCE` (hosts whose root lacks it) cannot
/// lower a process' OOM score, so pod sandboxes asking for -998 fail in runc ("can't get final
/// child's PID from pipe") unless containerd clamps the score to its own, as for rootless.
const CONTAINERD_CONFIG: &str = r#"version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = true
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "/etc/containerd/cri-base.json"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  tolerate_missing_hugepages_controller = true
  restrict_oom_score_adj = true
"#;

/// One node per cluster: a bridge with host-local addresses from kind's default pod subnet and
/// masquerading for traffic leaving the node (the fixtures git server on the network gateway).
const CNI_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "k8s-ops-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.244.0.0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
"#;

/// What kind applies as its default CNI: the CNI is the static config in the image, so this only
/// records that (kindnetd's module is not served, so it cannot be built here).
const DEFAULT_CNI: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: k8s-ops-cni
  namespace: kube-system
data:
  cni: "static bridge + host-local, /etc/cni/net.d/10-bridge.conflist in the k8s-ops.local/kind-node image (one node per cluster)"
"#;

/// What kind applies as its default storage: a default StorageClass without a provisioner pod
/// (the fixtures claim no volumes; local-path-provisioner's image is not built here).
const DEFAULT_STORAGE: &str = r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
"#;
