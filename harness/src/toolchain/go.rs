//! Building a tool from its published Go module: a wrapper module mirroring the upstream
//! `replace`s (or a writable copy of the module where it must be patched), `go build` of each
//! package with the version stamps, the result moved into the cache under its lock.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Tool, Toolchain};

/// The bound of one `go` command: the longest, a cold build of Kubernetes' binaries, takes about
/// 10 minutes on 2 cores; a build that runs for an hour is stuck (killed, with everything it
/// started).
const GO_RUN_BOUND: Duration = Duration::from_secs(60 * 60);

impl Toolchain {
    pub(super) fn build_locked(&self, tool: Tool, (n, of): (usize, usize)) -> Result<()> {
        let lock_path = self.root.join("locks").join(format!("{}.lock", tool.key()));
        let _lock = crate::sys::lock::exclusive(&lock_path)?;
        if self.is_built(tool) {
            return Ok(()); // another process built it while we waited
        }
        let version = self.versions.get(tool);
        eprintln!(
            "toolchain: tool {n} of {of}: building {} {version} from its Go module (cold build ~{} on 2 cores; cached afterwards in {})",
            tool.key(),
            tool.cold_build_hint(),
            self.tool_dir(tool).display()
        );
        let started = Instant::now();
        self.build(tool, version)
            .with_context(|| format!("building {} {version} failed (see the go output above); fix and rerun, the cache stays consistent", tool.key()))?;
        eprintln!(
            "toolchain: built {} {version} in {:.0?}",
            tool.key(),
            started.elapsed()
        );
        Ok(())
    }

    fn build(&self, tool: Tool, version: &str) -> Result<()> {
        let work = self
            .root
            .join("src")
            .join(format!("{}-{version}", tool.key()));
        if work.exists() {
            fs::remove_dir_all(&work).or_else(|_| {
                duct::cmd!("chmod", "-R", "u+w", &work).run()?;
                fs::remove_dir_all(&work)
            })?;
        }
        fs::create_dir_all(&work)?;
        let staging_bin = work.join("bin");
        // No DWARF (`-s -w`: a third smaller, faster to link and to archive) and no build paths;
        // the version stamps stay.
        let ldflags = format!("-s -w {}", tool.ldflags(version));

        let (build_dir, targets): (PathBuf, Vec<String>) = if tool.builds_from_copy() {
            let module_dir = go_mod_download(tool.module(), version, "Dir")?;
            let copy = work.join("module");
            writable_copy(&module_dir, &copy)?;
            for (pkg, _) in tool.packages() {
                let manifests = copy.join(pkg).join("manifests");
                fs::create_dir_all(&manifests)?;
                fs::write(
                    manifests.join("placeholder.yaml"),
                    "# not used: the harness never runs `flux install`\n",
                )?;
            }
            let targets = tool
                .packages()
                .iter()
                .map(|(pkg, _)| format!("./{pkg}"))
                .collect();
            (copy, targets)
        } else {
            write_wrapper_module(&work, tool, version)?;
            let targets = tool
                .packages()
                .iter()
                .map(|(pkg, _)| package_path(tool.module(), pkg))
                .collect();
            (work.clone(), targets)
        };

        fs::create_dir_all(&staging_bin)?;
        for ((_, bin), target) in tool.packages().iter().zip(&targets) {
            go(&build_dir)
                .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
                .arg(staging_bin.join(bin))
                .arg(target)
                .status_ok()?;
        }
        let dest = self.tool_dir(tool);
        if dest.exists() {
            fs::remove_dir_all(&dest)?;
        }
        fs::create_dir_all(&dest)?;
        if tool.ships_crds() {
            let bases = go_mod_download(tool.module(), version, "Dir")?.join("config/crd/bases");
            fs::create_dir_all(dest.join("crds"))?;
            for entry in
                fs::read_dir(&bases).with_context(|| format!("{} has no CRDs", bases.display()))?
            {
                let entry = entry?;
                fs::copy(entry.path(), dest.join("crds").join(entry.file_name()))?;
            }
        }
        fs::rename(&staging_bin, dest.join("bin"))?;
        Ok(())
    }
}

fn package_path(module: &str, pkg: &str) -> String {
    if pkg.is_empty() {
        module.to_string()
    } else {
        format!("{module}/{pkg}")
    }
}

/// Writes `go.mod` of a wrapper module that requires `tool`'s module and mirrors its replaces.
fn write_wrapper_module(dir: &Path, tool: Tool, version: &str) -> Result<()> {
    go(dir)
        .args(["mod", "init", &format!("harness-tools/{}", tool.key())])
        .quiet_ok()?;
    let upstream_mod = go_mod_download(tool.module(), version, "GoMod")?;
    let parsed: serde_json::Value = serde_json::from_str(
        &go(dir)
            .args(["mod", "edit", "-json"])
            .arg(&upstream_mod)
            .output_string()?,
    )?;
    let required: BTreeMap<&str, &str> = parsed["Require"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["Path"].as_str()?, r["Version"].as_str()?)))
        .collect();
    for replace in parsed["Replace"].as_array().into_iter().flatten() {
        let old = replace["Old"]["Path"].as_str().unwrap_or_default();
        let new_path = replace["New"]["Path"].as_str().unwrap_or_default();
        let directive = match replace["New"]["Version"].as_str() {
            // A replace by another published module version: keep it (e.g. go-digest in source-controller).
            Some(new_version) => Some(format!("{old}={new_path}@{new_version}")),
            // A local directory: only placeholder requirements need a published stand-in.
            None => match (required.get(old), tool.staging_version(version)) {
                (Some(&"v0.0.0"), Some(staging)) => Some(format!("{old}={old}@{staging}")),
                _ => None,
            },
        };
        if let Some(directive) = directive {
            go(dir)
                .args(["mod", "edit", &format!("-replace={directive}")])
                .quiet_ok()?;
        }
    }
    for (pkg, _) in tool.packages() {
        // `@version` pins the module: a bare `go get -tool` would upgrade it and its dependencies.
        go(dir)
            .args([
                "get",
                "-tool",
                &format!("{}@{version}", package_path(tool.module(), pkg)),
            ])
            .quiet_ok()?;
    }
    Ok(())
}

/// `go mod download -json module@version` and one field of its answer (`Dir` or `GoMod`).
pub(super) fn go_mod_download(module: &str, version: &str, field: &str) -> Result<PathBuf> {
    let out = go(Path::new("/"))
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .output_string_any()?;
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("go mod download answered: {out}"))?;
    if let Some(err) = json["Error"].as_str() {
        bail!(
            "the Go module proxy does not serve {module}@{version}: {err}; pin a served version in toolchain/versions.yaml"
        );
    }
    json[field]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("go mod download gave no {field} for {module}@{version}"))
}

/// A `go` invocation in `dir`, with CGO off (static binaries) and Go's caches at their defaults.
fn go(dir: &Path) -> GoCmd {
    GoCmd {
        dir: dir.to_path_buf(),
        args: Vec::new(),
    }
}

struct GoCmd {
    dir: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl GoCmd {
    fn args<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn arg(mut self, arg: impl Into<std::ffi::OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn expr(&self) -> duct::Expression {
        duct::cmd("go", &self.args)
            .dir(&self.dir)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-buildvcs=false")
            .env("GOTOOLCHAIN", "local")
    }

    /// The arguments as one line, for messages.
    fn shown(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs with go's output (compile errors) shown and a heartbeat line every minute, so a long
    /// cold build visibly progresses; fails on a non-zero exit or after [`GO_RUN_BOUND`].
    fn status_ok(self) -> Result<()> {
        let shown = self.shown();
        let mut next_beat = Duration::from_secs(60);
        let beat = |elapsed: Duration| {
            if elapsed >= next_beat {
                eprintln!(
                    "toolchain: … still running `go {}` ({:.0?})",
                    shown.chars().take(80).collect::<String>(),
                    elapsed
                );
                next_beat += Duration::from_secs(60);
            }
        };
        let Some(output) =
            crate::sys::exec::bounded(self.expr().stdout_to_stderr(), GO_RUN_BOUND, beat)?
        else {
            return Err(crate::Error::timeout(
                format!("`go {shown}` in {}", self.dir.display()),
                GO_RUN_BOUND,
            )
            .into());
        };
        if !output.status.success() {
            bail!(
                "`go {shown}` failed in {} ({})",
                self.dir.display(),
                output.status
            );
        }
        Ok(())
    }

    /// Runs quietly (module resolution chatter), showing go's output only when it fails.
    fn quiet_ok(self) -> Result<()> {
        let shown = self.shown();
        let Some(out) = crate::sys::exec::bounded(
            self.expr().stderr_to_stdout().stdout_capture(),
            GO_RUN_BOUND,
            |_| {},
        )?
        else {
            return Err(crate::Error::timeout(format!("`go {shown}`"), GO_RUN_BOUND).into());
        };
        if !out.status.success() {
            bail!(
                "`go {shown}` failed in {}:\n{}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    }

    fn output_string(self) -> Result<String> {
        let shown = format!("go {}", self.shown());
        crate::sys::exec::run(&shown, self.expr(), GO_RUN_BOUND)
    }

    /// stdout even when go exits non-zero (`go mod download -json` reports errors in its JSON).
    fn output_string_any(self) -> Result<String> {
        let shown = self.shown();
        let Some(out) =
            crate::sys::exec::bounded(self.expr().stdout_capture(), GO_RUN_BOUND, |_| {})?
        else {
            return Err(crate::Error::timeout(format!("`go {shown}`"), GO_RUN_BOUND).into());
        };
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A writable copy of `from` (a read-only module directory in Go's cache) at `to`, replacing
/// whatever was there.
pub(crate) fn writable_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to)?;
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    crate::sys::exec::copy_tree(from, to, &[])
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
