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

mod flux;
mod node;

pub use flux::flux_install_manifest;
use node::node_image;

/// The repository of every image built here: never confused with an upstream image.
pub const REPOSITORY: &str = "k8s-ops.local";
/// Label holding the hash of an image's inputs.
pub(super) const INPUTS_LABEL: &str = "io.k8s-ops.harness.inputs";
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

/// One image: a generated Dockerfile and the files it copies.
pub(super) struct Spec {
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
pub(super) fn build_lock(work: &Path, tag: &str) -> Result<crate::sys::lock::FileLock> {
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
pub(super) fn cached(tag: &str, inputs: &str) -> bool {
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
