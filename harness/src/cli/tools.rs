//! `harness images` and `harness toolchain`: they need no environment and never touch one.

use anyhow::Result;
use harness::toolchain::{Tool, Toolchain};
use std::path::PathBuf;

/// Builds the kind images. Needs no environment: an engine it starts keeps its state in the tool
/// cache, never in an environment's state directory, so it runs beside a running environment
/// without touching it.
pub fn images() -> Result<()> {
    harness::toolchain::prerequisites::check()?;
    let toolchain = Toolchain::from_env()?;
    let images = harness::provider::kind_images(&toolchain)?;
    println!("node image   {}", images.node);
    for image in &images.load {
        println!("kind load    {image}");
    }
    println!("flux install {}", images.flux_manifest.display());
    Ok(())
}

pub fn toolchain(export: Option<PathBuf>, import: Option<PathBuf>) -> Result<()> {
    let toolchain = Toolchain::from_env()?;
    if let Some(file) = export {
        let dirs = toolchain.export(&file)?;
        println!(
            "exported {} tool directories to {}: {}",
            dirs.len(),
            file.display(),
            dirs.join(" ")
        );
        return Ok(());
    }
    if let Some(file) = import.filter(|f| !f.as_os_str().is_empty()) {
        let report = toolchain.import(&file)?;
        println!("imported {}: {report}", file.display());
    }
    toolchain.ensure_all()?;
    for tool in Tool::ALL {
        println!(
            "{:<24} {:<10} {}",
            tool.key(),
            toolchain.versions().get(tool),
            toolchain.bin_dir(tool).display()
        );
    }
    Ok(())
}
