//! `scalectl plan`: what apply would change on every host, as actions and diffs; nothing changes.

use super::fleet::{self, FleetArgs, ReleaseArg};
use super::{Failure, JSON_FORMAT_VERSION, Output};
use crate::plan::saved::{self, SavedPlan};
use crate::plan::{Plan, Release, render_text, sha256_hex};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 ok (with --detailed-exitcode: no changes), 1 error, 2 changes present (with --detailed-exitcode).")]
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
    if let Some(t) = super::docker::topology(&a.fleet.topology.file, color)? {
        return super::docker::plan(&t, &a.release, a.output, a.detailed_exitcode, a.out.as_deref(), color);
    }
    let fleet = fleet::connect(&a.fleet, color)?;
    let binary = a.release.read()?;
    let release = Release::of(&binary);
    let (plan, observed) = fleet::make_plan(&fleet, Some(&release))?;
    print(&plan, a.output, color);
    if let Some(out) = &a.out {
        let topology = std::fs::read(&a.fleet.topology.file).map_err(anyhow::Error::from)?;
        let saved = SavedPlan {
            kind: saved::KIND.into(),
            format_version: saved::SAVED_FORMAT_VERSION,
            scalectl_version: env!("CARGO_PKG_VERSION").into(),
            topology_file: a.fleet.topology.file.display().to_string(),
            topology_sha256: sha256_hex(&topology),
            release_file: Some(a.release.path()?.display().to_string()),
            release_sha256: Some(sha256_hex(&binary)),
            observed: saved::fingerprints(&observed),
            plan: plan.redacted(),
        };
        let text = serde_json::to_string_pretty(&saved).map_err(anyhow::Error::from)?;
        crate::exec::lab::write_atomic(out, text.as_bytes())?;
        eprintln!("Saved the plan to {}: apply exactly it with `scalectl apply {}`.", out.display(), out.display());
    }
    if a.detailed_exitcode && plan.has_changes() {
        return Err(Failure::Changes);
    }
    Ok(())
}

pub fn print(plan: &Plan, output: Output, color: bool) {
    match output {
        Output::Text => print!("{}", render_text(plan, color)),
        Output::Json => println!("{}", json(plan)),
    }
}

pub fn json(plan: &Plan) -> String {
    let plan = plan.redacted();
    let doc = serde_json::json!({
        "format_version": JSON_FORMAT_VERSION,
        "topology": plan.topology,
        "changes": plan.has_changes(),
        "action_count": plan.change_count(),
        "hosts": plan.hosts,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
