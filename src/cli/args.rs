//! Flags shared by the commands that work on a live deployment: the topology file, how to reach
//! the target, the release, and how to execute. One definition each, so every command spells them
//! the same on every target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

use crate::exec::ConnectOptions;
use crate::topology::Topology;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// For people
    #[default]
    Text,
    /// For pipelines: a versioned JSON document on stdout
    Json,
}

/// The topology file argument shared by every command that reads one.
#[derive(Debug, clap::Args)]
pub struct TopologyArg {
    /// Topology file
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = "scale.yaml")]
    pub file: PathBuf,
}

/// The topology and how to reach what it runs on (SSH flags matter to `target: hosts` only).
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Record host keys not yet in known_hosts (a CHANGED key is always refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// known_hosts file for real hosts [default: ~/.ssh/known_hosts; the lab keeps its own]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Hosts worked on at once
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub parallel: usize,
    /// Give up connecting to a host after this long
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
}

impl FleetArgs {
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            known_hosts: self.known_hosts.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: self.connect_timeout,
            parallel: self.parallel.max(1),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArg {
    /// What to deploy: your program's directory or .tar [default: the topology's app.program.release],
    /// or scale-api's binary [default: the scale-api next to this scalectl]
    #[arg(long = "release", value_name = "PATH")]
    pub release: Option<PathBuf>,
}

impl ReleaseArg {
    pub fn path(&self, t: &Topology, topology_file: &Path) -> anyhow::Result<PathBuf> {
        Ok(match (&self.release, super::release::default_path(t, topology_file)) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => std::env::current_exe()?.with_file_name("scale-api"),
        })
    }

    /// The release, read (and packed, for a program's directory).
    pub fn load(&self, t: &Topology, topology_file: &Path) -> anyhow::Result<super::release::Artifact> {
        if let (Some(given), Some(image)) = (&self.release, t.app.program.as_ref().and_then(|p| p.image.as_ref())) {
            anyhow::bail!(
                "--release {} was given, but app.program.image (`{image}`) names what runs: point the image reference at the \
image to deploy, or give the program a release directory instead of an image",
                given.display()
            );
        }
        super::release::load(t, &self.path(t, topology_file)?)
    }
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Do not ask for confirmation (required when standard input is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long a (re)started instance may take to answer its readiness path
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ready_timeout: Duration,
    /// The fleet lock expires after this long if the run dies without releasing it
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lock_ttl: Duration,
    /// Output format of the plan shown before applying
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}
