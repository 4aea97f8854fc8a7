//! `scalectl lab up|status|down`: the topology's hosts as local containers with systemd and sshd.

use super::{Failure, JSON_FORMAT_VERSION, Output, TopologyArg};
use crate::exec::lab::{self, LabDir};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Create (or complete) the lab: one container per host, a private network, SSH on 127.0.0.1
    #[command(after_help = "Then: `scalectl apply -f FILE` deploys onto the lab's hosts.\n\
The key pair, known_hosts and endpoints live in $SCALECTL_HOME (default ~/.local/state/scalectl)/lab/NAME.")]
    Up(TopologyArg),
    /// Show each lab host's container state, SSH port and published ports
    Status {
        #[command(flatten)]
        topology: TopologyArg,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Remove every container and network the lab created, and its key pair
    Down(TopologyArg),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let say = |m: &str| eprintln!("{m}");
    match a.command {
        LabCommand::Up(t) => {
            let topo = super::load(&t.file, color)?;
            if topo.hosts.is_empty() {
                return Err(anyhow::anyhow!("{}: the lab needs hosts (a `target: hosts` topology)", t.file.display()).into());
            }
            let dir = LabDir::for_topology(&topo.name);
            let state = runtime()?.block_on(lab::up(&topo, &dir, &say))?;
            eprintln!("lab `{}` is up: {} hosts on network {}", state.name, state.hosts.len(), state.network);
            for (svc, port) in topo.lab.publish.iter() {
                eprintln!("  {svc:?} at http://127.0.0.1:{port}");
            }
            eprintln!("next: scalectl apply -f {}", t.file.display());
            Ok(())
        }
        LabCommand::Status { topology, output } => {
            let topo = super::load(&topology.file, color)?;
            let hosts = runtime()?.block_on(lab::status(&topo))?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"format_version": JSON_FORMAT_VERSION, "lab": topo.name, "hosts": hosts}))
                        .unwrap_or_default()
                ),
                Output::Text => {
                    println!("{:<12} {:<22} {:<10} {:<8} PUBLISHED", "HOST", "CONTAINER", "STATE", "SSH");
                    for h in &hosts {
                        let ssh = h.ssh_port.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                        println!("{:<12} {:<22} {:<10} {:<8} {}", h.host, h.container, h.state, ssh, h.published.join(", "));
                    }
                }
            }
            Ok(())
        }
        LabCommand::Down(t) => {
            let topo = super::load(&t.file, color)?;
            let removed = runtime()?.block_on(lab::down(&topo, &LabDir::for_topology(&topo.name), &say))?;
            eprintln!("lab `{}` is down: removed {} containers and networks", topo.name, removed.len());
            Ok(())
        }
    }
}
