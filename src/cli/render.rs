//! `scalectl render`: every config file of a topology, written into a directory.
//!
//! Layout: `DIR/<host>/` mirrors absolute paths on that host; `DIR/docker/`, `DIR/kubernetes/`,
//! `DIR/terraform/` and `DIR/ansible/` hold the bundles. The whole tree is written into a staging directory next
//! to DIR and swapped in at the end, so a failure never leaves a half-written tree behind.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{Failure, TopologyArg};
use crate::render::{self, Facts, RenderedFile, Templates};

/// Marks a directory as scalectl's output, so a re-render may replace it.
const MARKER: &str = ".scalectl-render";

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  scalectl render -f examples/three-hosts.yaml -o out/\n  \
out/lb-1/etc/nginx/conf.d/shop.conf, out/app-1/etc/systemd/system/scale-api@.service, ...\n  \
out/docker/compose.yaml, out/kubernetes/kustomization.yaml (kubectl apply -k), out/ansible/, out/terraform/\n\n\
`instances: max` resolves with each host's `cores:` from the topology, else --cores.")]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Output directory (replaced as a whole if it holds an earlier render)
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Directory of templates overriding the embedded ones by relative path (e.g. nginx/site.conf.j2)
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Cores assumed for `instances: max` on hosts that do not declare `cores:` [default: this machine's]
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Write nothing; exit 2 if DIR differs from what the topology renders (files added, removed or
    /// changed), 0 if it matches: for pipelines that commit rendered files
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let t = super::load(&a.topology.file, color)?;
    let templates = match &a.templates {
        Some(dir) => Templates::embedded().with_overrides(read_templates(dir)?),
        None => Templates::embedded(),
    };
    let cores = a.cores.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
    let mut files = render::render(&t, &Facts::with_default_cores(cores), &templates)
        .with_context(|| format!("cannot render {}", a.topology.file.display()))?;
    files.push(crate::plan::docker::compose_file(&t, cores, &templates).with_context(|| format!("cannot render {}", a.topology.file.display()))?);
    files.extend(crate::plan::docker::kubernetes_files(&t, cores, &templates).with_context(|| format!("cannot render {}", a.topology.file.display()))?);
    files.extend(bundle_scripts(&t));
    if a.check {
        return check(&a.out, &files);
    }
    write_tree(&a.out, &files)?;
    let hosts: std::collections::BTreeSet<&str> = files.iter().map(|f| f.host.as_str()).collect();
    println!("rendered {} files for {} into {}", files.len(), hosts.into_iter().collect::<Vec<_>>().join(", "), a.out.display());
    Ok(())
}

/// The scripts the Ansible playbook runs on a Redis host for a new password, the very ones apply
/// runs: the new passwords added to Redis' users live before the app hosts roll, and the users
/// settled (the old password refused) after them.
///
/// And the script that unpacks a program's release (`unpack-release.sh TAR DIR`), apply's own:
/// as an unprivileged user, refusing what is not a file, a directory or a link inside; the
/// Ansible role runs it, and the autoscaling group's cloud-init (terraform/files/).
pub fn bundle_scripts(t: &crate::topology::Topology) -> Vec<RenderedFile> {
    use crate::plan::CredentialsPhase::{Add, Settle};
    let script = |name: &str, body: String| RenderedFile {
        host: "ansible".into(),
        path: name.into(),
        mode: 0o755,
        content: format!("#!/bin/sh\n# Rendered by scalectl {} from topology \"{}\". Do not edit: change the topology.\n{body}\n", env!("CARGO_PKG_VERSION"), t.name),
        group: "root",
        on_change: render::OnChange::Nothing,
        sensitive: false,
    };
    let mut out = Vec::new();
    if t.app.program.is_some() && t.target == crate::topology::Target::Hosts {
        let unpack = script("unpack-release.sh", format!("set -e\n{}", crate::exec::commands::unpack_release("\"$1\"", "\"$2\"")));
        if t.autoscaling.is_some() {
            out.push(RenderedFile { host: "terraform".into(), path: "files/unpack-release.sh".into(), ..unpack.clone() });
        }
        out.push(unpack);
    }
    // An instance out of each load balancer before the playbook restarts it, and back once ready,
    // as apply does: `drain.sh SOCKET BACKEND SERVER` and `undrain.sh SOCKET BACKEND SERVER SHA256`,
    // the balancer's runtime API (the inventory names the first three); SHA256 is the balancer's
    // file the lb play installs after the app hosts: while the running one differs, the instance's
    // health check waits for that reload (commands::Checks).
    if t.target == crate::topology::Target::Hosts && t.hosts.iter().any(|h| h.has(crate::topology::Role::Lb)) {
        let wait = std::time::Duration::from_millis(t.app.drain_timeout_ms);
        let (socket, backend, server) = ("\"$1\"", "\"$2\"", "\"$3\"");
        out.push(script("drain.sh", crate::exec::commands::drain_words(socket, backend, server, wait)));
        let checks = crate::exec::commands::Checks::PauseUnlessFile { path: crate::topology::tiers::BALANCER_CONFIG, sha: "\"${4:-}\"" };
        out.push(script("undrain.sh", crate::exec::commands::undrain_words(socket, backend, server, wait, checks)));
    }
    // Each tier's live change of users (Redis'): `KIND-add.sh` and `KIND-settle.sh`.
    let live: Vec<crate::plan::LiveCredentials> = t.tiers_on_one_engine().iter().filter_map(|tier| tier.credentials).collect();
    for c in live {
        out.extend([(Add, "add"), (Settle, "settle")].into_iter().map(|(phase, name)| {
            let mut body = crate::exec::commands::credentials(c.kind, phase, c.port);
            if body.ends_with('\n') {
                body.pop();
            }
            script(&format!("{}-{name}.sh", c.kind.pending()), body)
        }));
    }
    out
}

/// Compare DIR with the render: every difference is listed, and any makes the exit code 2.
fn check(root: &Path, files: &[RenderedFile]) -> Result<(), Failure> {
    let mut expected: BTreeMap<PathBuf, &RenderedFile> = files.iter().map(|f| (local_path(root, f), f)).collect();
    let mut drift = Vec::new();
    let mut on_disk = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.is_dir() { walk(&p, out)? } else { out.push(p) }
        }
        Ok(())
    }
    walk(root, &mut on_disk).with_context(|| format!("cannot read {}", root.display()))?;
    on_disk.sort();
    for p in on_disk {
        if p.file_name().is_some_and(|n| n == MARKER) {
            continue;
        }
        match expected.remove(&p) {
            None => drift.push(format!("- {} (not rendered from the topology)", p.display())),
            Some(f) => {
                let now = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
                let mode = std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?.permissions().mode() & 0o777;
                if now != f.content.as_bytes() {
                    drift.push(format!("~ {} (content differs)", p.display()));
                } else if mode != f.mode {
                    drift.push(format!("~ {} (mode {mode:o}, rendered {:o})", p.display(), f.mode));
                }
            }
        }
    }
    for p in expected.keys() {
        drift.push(format!("+ {} (missing)", p.display()));
    }
    if drift.is_empty() {
        println!("{} matches the topology ({} files)", root.display(), files.len());
        return Ok(());
    }
    println!("{} drifted from the topology ({} differences):\n  {}", root.display(), drift.len(), drift.join("\n  "));
    Err(Failure::Changes)
}

/// Where a rendered file goes under the output directory.
pub fn local_path(root: &Path, f: &RenderedFile) -> PathBuf {
    root.join(&f.host).join(f.path.trim_start_matches('/'))
}

fn read_templates(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read templates directory {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                let name = path.strip_prefix(base).unwrap_or(&path).to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read template {}", path.display()))?;
                out.insert(name, text);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Write every file into a staging directory, then swap it in for `out`.
pub fn write_tree(out: &Path, files: &[RenderedFile]) -> anyhow::Result<()> {
    if out.exists() {
        let empty = out.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !out.join(MARKER).exists() {
            bail!("{} exists and is not an earlier scalectl render; refusing to replace it (choose an empty or new directory)", out.display());
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".scalectl-render-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;
    for f in files {
        let path = local_path(staging.path(), f);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, &f.content).with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    std::fs::write(staging.path().join(MARKER), "written by scalectl render; the whole directory is replaced on each render\n")?;
    // Swap: the old tree moves aside, the new one takes its name, the old one is removed.
    let staging = staging.keep();
    let old = parent.join(format!(".scalectl-old-{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).with_context(|| format!("cannot move the earlier render {} aside", out.display()))?;
    }
    if let Err(e) = std::fs::rename(&staging, out) {
        if old.exists() {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e).with_context(|| format!("cannot move the new render into {}", out.display()));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove the earlier render at {}", old.display()))?;
    }
    Ok(())
}
