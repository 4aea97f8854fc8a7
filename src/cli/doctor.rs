//! `scalectl doctor`: collect a snapshot of the live fleet (or replay a saved one), walk the
//! decision tree, print the walk and the findings. Exit 0 healthy, 2 findings, 1 error.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{Failure, JSON_FORMAT_VERSION, Output, TopologyArg};
use crate::doctor::{self, CHECKS, Diagnosis, Snapshot, collect, scrape};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes: 0 healthy, 2 findings, 1 error.\n\n\
Examples:\n  scalectl doctor -f examples/lab.yaml\n  scalectl doctor -f examples/lab.yaml --save snap.json\n  \
scalectl doctor --snapshot snap.json -o json\n  scalectl doctor --list")]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Diagnose a snapshot saved earlier with --save instead of the live fleet
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Also save the collected snapshot to FILE (to replay it, or attach it to a report)
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Prometheus to ask [default: the lab's published port, else the monitor host; without one,
    /// every instance and exporter is scraped directly, twice, --window (2 to 10 s) apart]
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// History the series cover (from Prometheus; scraping directly, the time between the two
    /// scrapes). Rates of requests, latencies and errors cover its last minute at most, and four
    /// scrapes at least
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// Diagnose again every interval (hysteresis keeps findings from flapping); stop with Ctrl-C
    #[arg(long, value_parser = humantime::parse_duration, value_name = "INTERVAL")]
    pub watch: Option<Duration>,
    /// List every check: id, severity, meaning, what to change
    #[arg(long)]
    pub list: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    if a.list {
        match a.output {
            Output::Json => {
                let checks: Vec<_> = CHECKS.iter().map(|(id, sev, meaning, change)| serde_json::json!({"id": id, "severity": sev, "meaning": meaning, "change": change})).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"format_version": JSON_FORMAT_VERSION, "checks": checks})).unwrap_or_default());
            }
            Output::Text => {
                for (id, sev, meaning, change) in CHECKS {
                    println!("{id:<24} {sev:<9} {meaning}\n{:<34} do: {change}", "");
                }
            }
        }
        return Ok(());
    }
    if let Some(path) = &a.snapshot {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read snapshot {}", path.display()))?;
        let s: Snapshot = serde_json::from_str(&text).with_context(|| format!("{} is not a doctor snapshot", path.display()))?;
        let d = doctor::diagnose(&s, None);
        print(&d, a.output, color);
        return if d.healthy { Ok(()) } else { Err(Failure::Changes) };
    }
    let t = super::load(&a.topology.file, color)?;
    let url = match &a.prometheus {
        Some(url) => Some(url.clone()),
        None => collect::prometheus_url(&t)?,
    };
    // A Prometheus that asks for its password gets it (the topology's reference, read here).
    let password = match &t.observability.prometheus_password {
        Some(r) if url.is_some() => Some(super::session::resolve_secret("observability.prometheus.password", r)?),
        _ => None,
    };
    let prometheus = url.as_deref().map(|u| collect::Prometheus::new(u, password.clone())).transpose()?;
    // Without a Prometheus, the instances are scraped directly, twice, this far apart.
    let direct = a.window.min(std::time::Duration::from_secs(10)).max(std::time::Duration::from_secs(2));
    if prometheus.is_none() {
        eprintln!("no monitor host: scraping every instance and exporter directly over {} s", direct.as_secs());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from)?;
    // What only the target knows of its instances (on docker: the replicas' addresses, which the
    // engine assigns, and its count of their crash restarts).
    let target = crate::deploy::instance_facts(&t)?;
    let mut previous: Option<Diagnosis> = None;
    loop {
        let from_target = target.facts(a.window)?;
        let s = match &prometheus {
            Some(p) => rt.block_on(collect::collect(&t, p, a.window, collect::thresholds(&t), &from_target))?,
            None => rt.block_on(scrape::collect(&t, direct, collect::thresholds(&t)))?,
        };
        if let Some(path) = &a.save {
            super::session::write_atomic(path, serde_json::to_string_pretty(&s).map_err(anyhow::Error::from)?.as_bytes())?;
        }
        let d = doctor::diagnose(&s, previous.as_ref());
        print(&d, a.output, color);
        match a.watch {
            None => return if d.healthy { Ok(()) } else { Err(Failure::Changes) },
            Some(every) => {
                previous = Some(d);
                std::thread::sleep(every);
            }
        }
    }
}

fn print(d: &Diagnosis, output: Output, color: bool) {
    match output {
        Output::Text => print!("{}", doctor::render_text(d, color)),
        Output::Json => println!("{}", serde_json::to_string_pretty(d).unwrap_or_default()),
    }
}
