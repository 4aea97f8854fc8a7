//! `scalectl apply`, `reload`, `rollback` and `destroy`: each plans its goal on the topology's
//! target and goes through the one run loop (`session::run_locked`): lock, plan, show, confirm,
//! execute exactly that plan, unlock.

use anyhow::Context;

use super::args::{ExecArgs, FleetArgs, ReleaseArg};
use super::session;
use super::Failure;
use crate::plan::saved::{self, SavedPlan};
use crate::plan::{PlanView, sha256_hex};
use crate::deploy::Goal;

#[derive(Debug, clap::Args)]
#[command(after_help = "With PLANFILE (from `scalectl plan --out PLANFILE`), apply makes the plan again from the same \
topology file, release and a fresh observation, and executes it only if it equals the saved one: a topology, release \
or host that changed since, or an edited file, is refused before anything changes.")]
pub struct ApplyArgs {
    /// A plan saved by `scalectl plan --out PLANFILE` (its topology file and release are used; naming
    /// another with -f or --release is refused)
    #[arg(value_name = "PLANFILE")]
    pub planfile: Option<std::path::PathBuf>,
    /// Whether -f was given on the command line (not its default): set by `Cli::parse_args`.
    #[arg(skip)]
    pub topology_given: bool,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub release: ReleaseArg,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
}

pub fn run_apply(mut a: ApplyArgs, color: bool) -> Result<(), Failure> {
    if let Some(planfile) = a.planfile.take() {
        return run_saved(a, &planfile, color);
    }
    let target = session::open(&a.fleet, color)?;
    let artifact = a.release.load(target.topology(), &a.fleet.topology.file)?;
    let release = artifact.release.clone();
    let secrets = session::resolve_secrets(target.topology())?;
    session::run_locked(target.as_ref(), &a.exec, color, "apply these changes", Some(&artifact.bytes), |t| {
        Ok(t.plan(&Goal::Deploy { release: &release, secrets: &secrets })?.plan)
    })
}

/// `apply PLANFILE`: the saved plan, only if the same inputs give the same plan now.
fn run_saved(mut a: ApplyArgs, planfile: &std::path::Path, color: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(planfile).with_context(|| format!("cannot read the plan file {}", planfile.display()))?;
    let kind = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| Some((v.get("kind")?.as_str()?.to_string(), v.get("format_version")?.as_u64()?)));
    match kind {
        Some((k, v)) if k == saved::KIND && v != u64::from(saved::SAVED_FORMAT_VERSION) => {
            return Err(anyhow::anyhow!(
                "{} has plan format {v}, this scalectl reads format {}: make the plan again",
                planfile.display(),
                saved::SAVED_FORMAT_VERSION
            )
            .into());
        }
        Some((k, _)) if k == saved::KIND => {}
        _ => return Err(anyhow::anyhow!("{} is not a plan saved by `scalectl plan --out`", planfile.display()).into()),
    }
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not a plan saved by `scalectl plan --out`", planfile.display()))?;
    let named = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    // The plan says which files it applies; a command line that names others is refused rather than
    // silently overridden either way (an edited artifact could name another topology).
    let (plan_topology, plan_release) = (named("topology_file").unwrap_or_default(), named("release_file"));
    if a.topology_given && !same_file(&a.fleet.topology.file, std::path::Path::new(&plan_topology)) {
        return Err(anyhow::anyhow!(
            "{} applies the topology {plan_topology}, but -f names {}: give the plan's own (or no -f), or make a plan of {} with `scalectl plan --out`",
            planfile.display(),
            a.fleet.topology.file.display(),
            a.fleet.topology.file.display()
        )
        .into());
    }
    if let Some(given) = &a.release.release
        && !plan_release.as_deref().is_some_and(|p| same_file(given, std::path::Path::new(p)))
    {
        return Err(anyhow::anyhow!(
            "{} applies the release {}, but --release names {}: give the plan's own (or no --release), or make a new plan",
            planfile.display(),
            plan_release.as_deref().unwrap_or("(none)"),
            given.display()
        )
        .into());
    }
    let saved: SavedPlan = serde_json::from_value(value).with_context(|| format!("{} is not a plan saved by `scalectl plan --out`", planfile.display()))?;
    let topology = std::fs::read(&saved.topology_file).with_context(|| format!("cannot read the plan's topology {}", saved.topology_file))?;
    if sha256_hex(&topology) != saved.topology_sha256 {
        return Err(anyhow::anyhow!("the topology file {} changed since the plan was made: run `scalectl plan` again", saved.topology_file).into());
    }
    let path = saved.release_file.clone().context("the saved plan names no release")?;
    a.fleet.topology.file = saved.topology_file.clone().into();
    let target = session::open(&a.fleet, color)?;
    let artifact = super::release::load(target.topology(), std::path::Path::new(&path)).with_context(|| format!("cannot read the plan's release {path}"))?;
    if Some(sha256_hex(&artifact.bytes)) != saved.release_sha256 {
        return Err(anyhow::anyhow!("the release {path} changed since the plan was made: run `scalectl plan` again").into());
    }
    eprintln!(
        "{}: topology {} (sha256 {}), release {path} (sha256 {})",
        planfile.display(),
        saved.topology_file,
        &saved.topology_sha256[..saved.topology_sha256.len().min(12)],
        saved.release_sha256.as_deref().map_or("", |s| &s[..s.len().min(12)])
    );
    let (binary, release) = (artifact.bytes, artifact.release);
    let secrets = session::resolve_secrets(target.topology())?;
    session::run_locked(target.as_ref(), &a.exec, color, "apply this saved plan", Some(&binary), |t| {
        let now = t.plan(&Goal::Deploy { release: &release, secrets: &secrets })?;
        let stale = saved::changed_hosts(&saved.observed, &now.observed);
        anyhow::ensure!(
            stale.is_empty(),
            "the plan is stale: {} changed since it was made (another apply, or drift): run `scalectl plan` again",
            stale.join(", ")
        );
        // The file only says what was reviewed; what runs is the plan made now, and only if equal.
        anyhow::ensure!(
            now.plan.redacted() == saved.plan,
            "{} is not the plan its topology, release and a fresh observation give now (the file was edited, or made by \
another scalectl): nothing was changed; run `scalectl plan` again",
            planfile.display()
        );
        Ok(now.plan)
    })
}

/// The same file, whichever way its path is written (both resolved when they exist).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

pub fn run_reload(a: ReloadArgs, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    session::run_locked(target.as_ref(), &a.exec, color, "restart every instance", None, |t| Ok(t.plan(&Goal::Reload)?.plan))
}

pub fn run_rollback(a: ReloadArgs, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    let secrets = session::resolve_secrets(target.topology())?;
    session::run_locked(target.as_ref(), &a.exec, color, "roll back to the previous release", None, |t| {
        Ok(t.plan(&Goal::Rollback { secrets: &secrets })?.plan)
    })
}

pub fn run_destroy(a: ReloadArgs, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    session::run_locked(
        target.as_ref(),
        &a.exec,
        color,
        "DESTROY the deployment (stop what scalectl started, remove what it wrote and created, data included)",
        None,
        |t| Ok(t.plan(&Goal::Destroy)?.plan),
    )
}
