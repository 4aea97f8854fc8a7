//! `scalectl status`: what runs where: per host its release, services and scale-api instances.

use super::fleet::{self, FleetArgs};
use super::{Failure, JSON_FORMAT_VERSION, Output};
use crate::plan::instance_unit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, serde::Serialize)]
struct HostStatus {
    host: String,
    roles: Vec<crate::topology::Role>,
    release: Option<String>,
    releases: Vec<String>,
    /// unit -> active state
    services: std::collections::BTreeMap<String, String>,
    healthy: bool,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    if let Some(t) = super::docker::topology(&a.fleet.topology.file, color)? {
        return super::docker::status(&t, a.output);
    }
    let f = fleet::connect(&a.fleet, color)?;
    let (desired, observed) = fleet::observe(&f, None)?;
    let mut rows = Vec::new();
    for d in &desired {
        let o = observed.get(&d.host).cloned().unwrap_or_default();
        let mut services = std::collections::BTreeMap::new();
        let units = d.services.iter().cloned().chain(d.instances.iter().map(|p| instance_unit(*p)));
        for u in units {
            services.insert(u.clone(), o.units.get(&u).map(|s| s.active.clone()).unwrap_or_else(|| "unknown".into()));
        }
        let healthy = services.values().all(|s| s == "active");
        rows.push(HostStatus {
            host: d.host.clone(),
            roles: d.roles.clone(),
            release: o.release.clone(),
            releases: o.releases.clone(),
            services,
            healthy,
        });
    }
    match a.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"format_version": JSON_FORMAT_VERSION, "topology": f.topology.name, "hosts": rows}))
                .unwrap_or_default()
        ),
        Output::Text => {
            for r in &rows {
                let roles: Vec<String> = r.roles.iter().map(|x| format!("{x:?}").to_lowercase()).collect();
                println!(
                    "{} ({}) {}{}",
                    r.host,
                    roles.join(", "),
                    if r.healthy { "healthy" } else { "UNHEALTHY" },
                    r.release.as_ref().map(|x| format!(", release {x}")).unwrap_or_default()
                );
                for (u, s) in &r.services {
                    println!("  {s:<10} {u}");
                }
            }
        }
    }
    if rows.iter().all(|r| r.healthy) { Ok(()) } else { Err(Failure::Changes) }
}
