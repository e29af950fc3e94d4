//! Flux's install manifest for the pinned controllers and the locally built images.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::{FLUX_CONTROLLERS, REPOSITORY, build_lock};
use crate::sys::exec::run;
use crate::toolchain::{Tool, Toolchain};

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
