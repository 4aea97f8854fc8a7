//! `scalectl status`: what runs where (units per host, or containers per slot), with each one's
//! state, health and release. Exit 2 when anything is not healthy.

use super::args::{FleetArgs, Output};
use super::session;
use super::Failure;
use crate::plan::JSON_FORMAT_VERSION;
use crate::deploy::Status;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 healthy, 2 something is not running or not healthy, 1 error.")]
pub struct Args {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    let s = target.status()?;
    match a.output {
        Output::Json => {
            let mut doc = serde_json::to_value(&s).map_err(anyhow::Error::from)?;
            doc["format_version"] = JSON_FORMAT_VERSION.into();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Output::Text => print!("{}", text(&s)),
    }
    if s.healthy { Ok(()) } else { Err(Failure::Changes) }
}

/// A table, columns as wide as their values.
fn text(s: &Status) -> String {
    use std::fmt::Write;
    let place = s.place_kind.to_uppercase();
    let place_w = s.items.iter().map(|i| i.place.len()).chain([place.len()]).max().unwrap_or(4) + 2;
    let name_w = s.items.iter().map(|i| i.name.len()).chain([4]).max().unwrap_or(4) + 2;
    let mut out = String::new();
    let _ = writeln!(out, "{place:<place_w$}{:<name_w$}{:<11}{:<11}RELEASE", "NAME", "STATE", "HEALTH");
    for i in &s.items {
        let _ = writeln!(
            out,
            "{:<place_w$}{:<name_w$}{:<11}{:<11}{}",
            i.place,
            i.name,
            i.state,
            i.health.as_deref().unwrap_or("-"),
            i.release.as_deref().unwrap_or("-")
        );
    }
    if s.items.is_empty() {
        let _ = writeln!(out, "nothing of topology `{}` runs on this target: `scalectl apply -f FILE` deploys it", s.topology);
    }
    out
}
