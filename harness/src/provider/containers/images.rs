//! Every container image the kind provider runs, built on this machine from the pinned Go modules
//! and Debian's packages: no registry is needed (none is reachable where this project runs).
//!
//! - `k8s-ops.local/debian:<suite>`: `debootstrap --variant=minbase`, imported into Docker.
//! - `k8s-ops.local/{kube-apiserver,kube-controller-manager,kube-scheduler}:<kubernetes>`,
//!   `etcd:<etcd>`, `coredns:<coredns>`, `pause:<pause>` (static binaries on `scratch`) and
//!   `kube-proxy:<kubernetes>` (Debian + nftables): the images kubeadm runs, preloaded into the node.
//! - `k8s-ops.local/kind-node:<kubernetes>`: kind's own base files (`images/base` of the kind
//!   module) on Debian with Debian's containerd, runc and CNI plugins, kubelet/kubeadm/kubectl, a
//!   static bridge CNI (kind's kindnetd module is not served) and the images above imported into
//!   its containerd, as `kind build node-image` does.
//! - `k8s-ops.local/<flux controller>:<version>`: the pinned controllers, as Flux's own images run
//!   them (user 65534), with an install manifest made from the same kustomizations as Flux's
//!   release `install.yaml` ([`flux_install_manifest`]).
//! - `k8s-ops.local/fixture-app:1`: busybox serving HTTP, the container of every fixture chart.
//!
//! Each image carries a label with the hash of its inputs (Dockerfile, file names and sizes, which
//! name the pinned versions): an image whose label matches is reused, so images are rebuilt only
//! when a pin changes.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::provider::containers::engine::Engine;
use crate::sys::exec::run;
use crate::toolchain::{Tool, Toolchain};

/// The repository of every image built here: never confused with an upstream image.
pub const REPOSITORY: &str = "k8s-ops.local";
/// Label holding the hash of an image's inputs.
const INPUTS_LABEL: &str = "io.k8s-ops.harness.inputs";
/// The fixture charts' image (`fixtures/gitops/fixtures-charts/*/values.yaml` name it).
pub const FIXTURE_APP: &str = "k8s-ops.local/fixture-app:1";
/// The Flux controllers the install manifest runs.
pub use crate::flux::CONTROLLERS as FLUX_CONTROLLERS;

/// What the kind provider needs from this module.
#[derive(Debug, Clone)]
pub struct KindImages {
    /// The node image for `nodes[].image`.
    pub node: String,
    /// Images to `kind load` into every node (Flux controllers, fixture app).
    pub load: Vec<String>,
    /// Flux's install manifest, pointing at the controller images in `load`.
    pub flux_manifest: PathBuf,
    /// `kubeadmConfigPatches` that make kubeadm use the preloaded images.
    pub kubeadm_patches: Vec<String>,
}

/// Where the build contexts and generated manifests go: `<cache>/images`.
fn work_dir(toolchain: &Toolchain) -> PathBuf {
    toolchain.cache_root().join("images")
}

/// The fixture app image only (both image sources need it); returns its name.
pub fn ensure_fixture_app(toolchain: &Toolchain) -> Result<String> {
    crate::provider::containers::packages::ensure_packages(&[("busybox", "busybox-static")])?;
    let busybox = crate::sys::path::which("busybox").context("busybox")?;
    let script = crate::repo_root().join("harness/scripts/fixture-app.sh");
    Spec::scratch(FIXTURE_APP)
        .file(&busybox, "/bin/busybox")
        .file(&script, "/fixture-app")
        .line(r#"RUN ["/bin/busybox", "--install", "-s", "/bin"]"#)
        .line(r#"ENTRYPOINT ["/fixture-app"]"#)
        .build(&work_dir(toolchain))?;
    Ok(FIXTURE_APP.to_string())
}

/// Builds (or finds cached) every image of the local image source; `engine` is proven able to run
/// privileged containers first (restarted with the runc wrapper where needed).
pub fn ensure_kind_images(toolchain: &Toolchain, engine: &Engine) -> Result<KindImages> {
    let started = Instant::now();
    crate::provider::containers::packages::ensure_packages(&[
        ("debootstrap", "debootstrap"),
        ("cc", "gcc"),
    ])?;
    let fixture_app = ensure_fixture_app(toolchain)?;
    engine.ensure_privileged(&fixture_app)?;
    let mut tools = Tool::KIND_IMAGES.to_vec();
    tools.extend(FLUX_CONTROLLERS);
    toolchain.ensure(&tools)?;

    let versions = toolchain.versions();
    let work = work_dir(toolchain);
    let base = debian_base(&work, versions.pin("debian")?)?;
    let preload = kubeadm_images(toolchain, &work, &base)?;
    let node = node_image(toolchain, &work, &base, &preload)?;
    let mut load = vec![fixture_app];
    for controller in FLUX_CONTROLLERS {
        let name = controller.key();
        load.push(
            Spec::scratch(&format!("{REPOSITORY}/{name}:{}", versions.get(controller)))
                .file(
                    &toolchain.binary(controller, name),
                    &format!("/usr/local/bin/{name}"),
                )
                .line("USER 65534:65534")
                .line(&format!(r#"ENTRYPOINT ["/usr/local/bin/{name}"]"#))
                .build(&work)?,
        );
    }
    let flux_manifest = flux_install_manifest(toolchain, &work)?;
    eprintln!(
        "harness: kind images ready in {:.0?} (node {node})",
        started.elapsed()
    );
    Ok(KindImages {
        node,
        load,
        flux_manifest,
        kubeadm_patches: vec![format!(
            "kind: ClusterConfiguration\nimageRepository: {REPOSITORY}\netcd:\n  local:\n    imageTag: {}\ndns:\n  imageTag: {}\n",
            versions.get(Tool::Etcd),
            versions.get(Tool::Coredns)
        )],
    })
}

/// The images `kubeadm config images list` names for the kubeadm patch of [`KindImages`]: the
/// control plane, etcd, CoreDNS and pause on `scratch`, kube-proxy on Debian with nftables.
fn kubeadm_images(toolchain: &Toolchain, work: &Path, base: &str) -> Result<Vec<String>> {
    let versions = toolchain.versions();
    let kubernetes = versions.get(Tool::Kubernetes);
    let mut images = Vec::new();
    for name in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        images.push(
            Spec::scratch(&format!("{REPOSITORY}/{name}:{kubernetes}"))
                .file(
                    &toolchain.binary(Tool::Kubernetes, name),
                    &format!("/usr/local/bin/{name}"),
                )
                .build(work)?,
        );
    }
    images.push(
        Spec::scratch(&format!("{REPOSITORY}/etcd:{}", versions.get(Tool::Etcd)))
            .file(&toolchain.binary(Tool::Etcd, "etcd"), "/usr/local/bin/etcd")
            .build(work)?,
    );
    images.push(
        Spec::scratch(&format!(
            "{REPOSITORY}/coredns:{}",
            versions.get(Tool::Coredns)
        ))
        .file(&toolchain.binary(Tool::Coredns, "coredns"), "/coredns")
        .line(r#"ENTRYPOINT ["/coredns"]"#)
        .build(work)?,
    );
    let pause_tag = versions.pin("pause")?;
    let pause = build_pause(toolchain, work, pause_tag)?;
    images.push(
        Spec::scratch(&format!("{REPOSITORY}/pause:{pause_tag}"))
            .file(&pause, "/pause")
            .line(r#"ENTRYPOINT ["/pause"]"#)
            .build(work)?,
    );
    images.push(
        Spec::from(base, &format!("{REPOSITORY}/kube-proxy:{kubernetes}"))
            .line(APT_INSTALL_NFTABLES)
            .file(
                &toolchain.binary(Tool::KubeNode, "kube-proxy"),
                "/usr/local/bin/kube-proxy",
            )
            .build(work)?,
    );
    Ok(images)
}

const APT_INSTALL_NFTABLES: &str = "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nftables iptables conntrack && apt-get clean && rm -rf /var/lib/apt/lists/*";

/// What the node image installs from Debian: kind's base list (images/base/Dockerfile) with
/// Debian's containerd, runc and CNI plugins in place of kind's own builds.
const NODE_PACKAGES: &str = "systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2 pigz bash ca-certificates curl jq procps containerd runc containernetworking-plugins";

/// One image: a generated Dockerfile and the files it copies.
struct Spec {
    tag: String,
    dockerfile: String,
    files: Vec<(PathBuf, String)>,
}

impl Spec {
    fn scratch(tag: &str) -> Self {
        Self::from("scratch", tag)
    }

    fn from(base: &str, tag: &str) -> Self {
        Self {
            tag: tag.to_string(),
            dockerfile: format!("FROM {base}\n"),
            files: Vec::new(),
        }
    }

    /// `COPY` of a file or directory to `dest` in the image.
    fn file(mut self, source: &Path, dest: &str) -> Self {
        let name = format!("f{}", self.files.len());
        writeln!(self.dockerfile, "COPY {name} {dest}").expect("string");
        self.files.push((source.to_path_buf(), name));
        self
    }

    fn line(mut self, line: &str) -> Self {
        self.dockerfile.push_str(line);
        self.dockerfile.push('\n');
        self
    }

    /// Hash of the Dockerfile and of every copied file's path and size.
    fn inputs(&self) -> Result<String> {
        let mut hash = Sha256::new();
        hash.update(&self.dockerfile);
        for (source, _) in &self.files {
            for (path, len) in tree_sizes(source)? {
                hash.update(format!("{}:{len}\n", path.display()));
            }
        }
        Ok(hex::encode(&hash.finalize()[..12]))
    }

    /// Builds the image unless one with the same inputs exists; returns its tag.
    fn build(self, work: &Path) -> Result<String> {
        let inputs = self.inputs()?;
        let _lock = build_lock(work, &self.tag)?;
        if cached(&self.tag, &inputs) {
            return Ok(self.tag);
        }
        let started = Instant::now();
        let context = work.join(self.tag.replace(['/', ':'], "_"));
        if context.exists() {
            fs::remove_dir_all(&context)?;
        }
        fs::create_dir_all(&context)?;
        for (source, name) in &self.files {
            crate::sys::exec::copy_tree(source, &context.join(name), &[])
                .with_context(|| format!("copying {} into the build context", source.display()))?;
        }
        fs::write(context.join("Dockerfile"), &self.dockerfile)?;
        let log = work.join(format!("{}.build.log", self.tag.replace(['/', ':'], "_")));
        let built = run(
            &format!("docker build {}", self.tag),
            duct::cmd!(
                "docker",
                "build",
                "--label",
                format!("{INPUTS_LABEL}={inputs}"),
                "--tag",
                &self.tag,
                &context
            )
            .env("DOCKER_BUILDKIT", "0")
            .stderr_to_stdout()
            .stdout_file(fs::File::create(&log)?),
            Duration::from_secs(900),
        );
        if let Err(e) = built {
            let last = crate::sys::process::tail(&log, 1);
            bail!(
                "building image {} failed ({}; last line: {}); full output in {}: fix the cause and rerun",
                self.tag,
                e.to_string().lines().next().unwrap_or_default(),
                last.trim(),
                log.display()
            );
        }
        fs::remove_dir_all(&context)?;
        eprintln!(
            "harness: built image {} in {:.0?}",
            self.tag,
            started.elapsed()
        );
        Ok(self.tag)
    }
}

/// Serialises the builds of one image across processes (two test binaries, `harness images`):
/// held while it builds, so the second finds the first one's image.
fn build_lock(work: &Path, tag: &str) -> Result<crate::sys::lock::FileLock> {
    let name = format!("{}.lock", tag.replace(['/', ':'], "_"));
    crate::sys::lock::exclusive(&work.join("locks").join(name))
}

/// `(path, size)` of a file, or of every file below a directory.
fn tree_sizes(path: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let meta = fs::metadata(path).with_context(|| format!("{} is missing", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), meta.len())]);
    }
    let mut all = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(path)?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for entry in entries {
        all.extend(tree_sizes(&entry)?);
    }
    Ok(all)
}

/// True when `tag` exists with `inputs` as its inputs label.
fn cached(tag: &str, inputs: &str) -> bool {
    let format = format!("{{{{index .Config.Labels \"{INPUTS_LABEL}\"}}}}");
    run(
        &format!("docker image inspect {tag}"),
        duct::cmd!("docker", "image", "inspect", "--format", format, tag),
        Duration::from_secs(30),
    )
    .is_ok_and(|label| label == inputs)
}

/// `k8s-ops.local/debian:<suite>` from `debootstrap --variant=minbase` (Debian's mirror, as apt
/// is configured on this machine).
fn debian_base(work: &Path, suite: &str) -> Result<String> {
    let tag = format!("{REPOSITORY}/debian:{suite}");
    let mirror = debian_mirror();
    let inputs = hex::encode(&Sha256::digest(format!("minbase {suite} {mirror}"))[..12]);
    let _lock = build_lock(work, &tag)?;
    if cached(&tag, &inputs) {
        return Ok(tag);
    }
    let started = Instant::now();
    let rootfs = work.join(format!("debian-{suite}-rootfs"));
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)?;
    }
    fs::create_dir_all(work)?;
    let log = work.join(format!("debootstrap-{suite}.log"));
    run(
        &format!("debootstrap {suite} (log {})", log.display()),
        duct::cmd!("debootstrap", "--variant=minbase", suite, &rootfs, &mirror)
            .stderr_to_stdout()
            .stdout_file(fs::File::create(&log)?),
        Duration::from_secs(900),
    )?;
    // `tar c . | docker import -`: the rootfs as one layer.
    run(
        &format!("docker import {tag}"),
        duct::cmd!("tar", "-C", &rootfs, "-c", ".").pipe(duct::cmd!(
            "docker",
            "import",
            "--change",
            format!("LABEL {INPUTS_LABEL}={inputs}"),
            "-",
            &tag
        )),
        Duration::from_secs(600),
    )?;
    fs::remove_dir_all(&rootfs)?;
    eprintln!("harness: built image {tag} in {:.0?}", started.elapsed());
    Ok(tag)
}

/// The first Debian mirror apt uses here (`URIs:` of deb822 sources, else `deb` lines).
fn debian_mirror() -> String {
    let mut texts = Vec::new();
    for file in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        texts.push(fs::read_to_string(file).unwrap_or_default());
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or_default().to_string())
                .or_else(|| {
                    l.strip_prefix("deb ")
                        .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
                        .map(str::to_string)
                })
        })
        .filter(|u| !u.is_empty() && !u.contains("security"))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// The pause binary, compiled statically from the kubernetes module's `build/pause/linux/pause.c`.
fn build_pause(toolchain: &Toolchain, work: &Path, tag: &str) -> Result<PathBuf> {
    let source = toolchain
        .module_dir(Tool::Kubernetes)?
        .join("build/pause/linux/pause.c");
    let out = work.join(format!("pause-{tag}"));
    let _lock = build_lock(work, "pause")?;
    if !out.is_file() {
        fs::create_dir_all(work)?;
        run(
            "cc pause.c",
            duct::cmd!(
                "cc",
                "-Os",
                "-Wall",
                "-Werror",
                "-static",
                format!("-DVERSION=v{tag}-k8s-ops"),
                "-o",
                &out,
                &source
            ),
            Duration::from_secs(120),
        )
        .context("compiling pause.c needs a C compiler with static glibc (apt-get install gcc libc6-dev)")?;
    }
    Ok(out)
}

/// The node image: kind's base files and units, Debian's runtime, the node binaries, a static
/// CNI, and `preload` imported into its containerd.
fn node_image(
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
    crate::sys::process::wait_for(
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

/// Flux's install manifest for the pinned controllers and local images: flux2's own
/// `manifests/install` kustomization (same objects as the release `install.yaml`: namespace,
/// CRDs, RBAC, network policies, Deployments with the release's flags), with each controller's
/// release assets (`<controller>.crds.yaml`, `<controller>.deployment.yaml`) rendered from its
/// module's `config/crd` and `config/manager`, as its release does, and the image controllers
/// left out as `flux install` does by default.
pub fn flux_install_manifest(toolchain: &Toolchain, work: &Path) -> Result<PathBuf> {
    let versions = toolchain.versions();
    let out = work.join(format!(
        "flux-install-{}-{}.yaml",
        versions.get(Tool::Flux),
        FLUX_CONTROLLERS
            .iter()
            .map(|c| versions.get(*c))
            .collect::<Vec<_>>()
            .join("-")
    ));
    let _lock = build_lock(work, "flux-install")?;
    if out.is_file() {
        return Ok(out);
    }
    let kubectl = toolchain.binary(Tool::Kubernetes, "kubectl");
    let render = work.join("flux-manifests");
    let manifests = toolchain.module_dir(Tool::Flux)?.join("manifests");
    crate::toolchain::writable_copy(&manifests, &render)?;
    let kustomize = |dir: &Path| -> Result<String> {
        run(
            &format!("kubectl kustomize {}", dir.display()),
            duct::cmd!(&kubectl, "kustomize", dir),
            Duration::from_secs(120),
        )
    };
    for controller in FLUX_CONTROLLERS {
        release_assets(
            toolchain,
            controller,
            &render.join("bases").join(controller.key()),
            &kustomize,
        )?;
    }
    let file = render.join("install/kustomization.yaml");
    let mut install: serde_norway::Value = serde_norway::from_str(&fs::read_to_string(&file)?)?;
    let wanted: Vec<String> = FLUX_CONTROLLERS
        .iter()
        .map(|c| format!("../bases/{}", c.key()))
        .collect();
    if let Some(resources) = install["resources"].as_sequence_mut() {
        resources.retain(|r| {
            r.as_str()
                .is_some_and(|r| !r.starts_with("../bases/") || wanted.iter().any(|w| w == r))
        });
    }
    install["images"] = serde_norway::to_value(
        FLUX_CONTROLLERS
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": format!("fluxcd/{}", c.key()),
                    "newName": format!("{REPOSITORY}/{}", c.key()),
                    "newTag": versions.get(*c),
                })
            })
            .collect::<Vec<_>>(),
    )?;
    fs::write(&file, serde_norway::to_string(&install)?)?;
    let rendered = kustomize(&render.join("install"))?;
    for controller in FLUX_CONTROLLERS {
        let image = format!(
            "image: {REPOSITORY}/{}:{}",
            controller.key(),
            versions.get(controller)
        );
        if !rendered.contains(&image) {
            bail!(
                "the rendered Flux install manifest lacks `{image}`: flux2's manifests changed shape; update harness/src/provider/containers/images.rs"
            );
        }
    }
    fs::write(&out, rendered)?;
    fs::remove_dir_all(&render)?;
    Ok(out)
}

/// The two release assets of `controller` in flux2's `base` directory, rendered from its module
/// (`config/crd`, `config/manager`) as its release does; the base's kustomization then names the
/// local files instead of the release URLs.
fn release_assets(
    toolchain: &Toolchain,
    controller: Tool,
    base: &Path,
    kustomize: &dyn Fn(&Path) -> Result<String>,
) -> Result<()> {
    let name = controller.key();
    let module = toolchain.module_dir(controller)?;
    fs::write(
        base.join(format!("{name}.crds.yaml")),
        kustomize(&module.join("config/crd"))?,
    )?;
    fs::write(
        base.join(format!("{name}.deployment.yaml")),
        kustomize(&module.join("config/manager"))?,
    )?;
    let file = base.join("kustomization.yaml");
    let text = fs::read_to_string(&file)?;
    let local: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("- https://") {
            Some(url) => format!("- {}", url.rsplit('/').next().unwrap_or(url)),
            None => l.to_string(),
        })
        .collect();
    fs::write(&file, local.join("\n") + "\n")?;
    Ok(())
}
