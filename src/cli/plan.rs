//! `scalectl plan`: what apply would change, as actions and diffs; nothing changes. With `--out`,
//! the plan is saved with what it was made from, for `scalectl apply PLANFILE`.

use super::args::{FleetArgs, Output, ReleaseArg};
use super::session;
use super::Failure;
use crate::plan::saved::{self, SavedPlan};
use crate::plan::{PlanView, sha256_hex};
use crate::deploy::Goal;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 ok (with --detailed-exitcode: no changes), 1 error, 2 changes present (with --detailed-exitcode).\n\n\
Examples:\n  scalectl plan -f scale.yaml\n  scalectl plan -f scale.yaml -o json --detailed-exitcode\n  \
scalectl plan -f scale.yaml --out plan.json && scalectl apply plan.json --yes")]
pub struct Args {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub release: ReleaseArg,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Exit 2 when there are changes, 0 when there are none (1 stays an error)
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also save the plan to FILE, for `scalectl apply FILE` (refused there if anything changed since)
    #[arg(long = "out", value_name = "PLANFILE")]
    pub out: Option<std::path::PathBuf>,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let topology_bytes = std::fs::read(&a.fleet.topology.file).ok();
    let target = session::open(&a.fleet, color)?;
    let artifact = a.release.load(target.topology(), &a.fleet.topology.file)?;
    let release = artifact.release.clone();
    let secrets = session::resolve_secrets(target.topology())?;
    let planned = target.plan(&Goal::Deploy { release: &release, secrets: &secrets })?;
    session::show(&planned.plan, a.output, color);
    if let Some(out) = &a.out {
        let saved = SavedPlan {
            kind: saved::KIND.into(),
            format_version: saved::SAVED_FORMAT_VERSION,
            scalectl_version: env!("CARGO_PKG_VERSION").into(),
            topology_file: a.fleet.topology.file.display().to_string(),
            topology_sha256: sha256_hex(&topology_bytes.unwrap_or_default()),
            release_file: Some(artifact.path.display().to_string()),
            release_sha256: Some(sha256_hex(&artifact.bytes)),
            observed: planned.observed,
            plan: planned.plan.redacted(),
        };
        let text = serde_json::to_string_pretty(&saved).map_err(anyhow::Error::from)?;
        session::write_atomic(out, text.as_bytes())?;
        eprintln!("Saved the plan to {}: apply exactly it with `scalectl apply {}`.", out.display(), out.display());
    }
    if a.detailed_exitcode && planned.plan.has_changes() {
        return Err(Failure::Changes);
    }
    Ok(())
}
