//! Command-line interface: clap definitions, one file per subcommand.
//!
//! This layer reads files, writes output and picks exit codes; the work itself is done by the
//! pure modules (topology, render). Exit codes: 0 ok, 1 error, 2 reserved for "changes present"
//! (plan) and "findings" (doctor).

mod apply;
pub mod args;
mod completions;
mod db;
mod dockerignore;
mod doctor;
mod lab;
mod lock;
mod logs;
mod pack;
mod plan;
mod progress;
pub mod release;
pub mod render;
mod schema;
mod session;
mod status;
mod validate;

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use clap::{Parser, Subcommand};

pub use args::{Output, TopologyArg};
pub use crate::plan::JSON_FORMAT_VERSION;
use crate::topology::{self, Problems, Topology};

#[derive(Debug, Parser)]
#[command(
    name = "scalectl",
    version,
    about = "Render, deploy and diagnose a horizontally scaled service from one topology file",
    long_about = "scalectl reads one topology file (scale.yaml) describing your app (your own program, such \
as a Node.js service, or the bundled reference API scale-api) run as N instances on each app host (and, for slow work, as workers taking jobs from a queue), an \
Nginx load balancer in front of them, Redis where the app keeps shared state, Prometheus/Grafana and \
log shipping, and renders every config from it. It deploys the same file to hosts over SSH (`target: hosts`) or to a Docker engine \
(`target: docker`) with the same commands: plan, apply, reload, rollback, status, destroy.\n\n\
Start with `scalectl validate -f examples/three-hosts.yaml`, then \
`scalectl render -f examples/three-hosts.yaml -o out/`.",
    after_help = "Exit codes: 0 ok, 1 error (problems are listed as FILE:LINE:COL: message), 2 changes present \
(plan --detailed-exitcode) or an unhealthy fleet (status).\n\n\
Progress: on a terminal, apply, reload, rollback and destroy show one live line per host at work and one \
for the whole run; SCALECTL_PLAIN_PROGRESS=1 prints plain `host: step` lines instead, and \
SCALECTL_PROGRESS=1 prints them without a terminal (in a pipeline)."
)]
pub struct Cli {
    /// Never color output (also honoured: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file and list every problem with its location
    Validate(validate::Args),
    /// Print the topology file's JSON Schema (draft-07) for editors
    Schema(schema::Args),
    /// Write every config file of a topology into a directory, one tree per host
    Render(render::Args),
    /// Pack app.program's release directory into the tar apply would upload (for Ansible, for pipelines)
    Pack(pack::Args),
    /// Local lab: the topology's hosts as containers with systemd and sshd (lab up|status|down)
    Lab(lab::Args),
    /// Show what apply would change (per host or on the engine), with diffs; changes nothing
    Plan(plan::Args),
    /// Deploy: show the plan, then execute exactly it (packages, files, release, rolling restarts)
    Apply(apply::ApplyArgs),
    /// Restart every instance one at a time, gated on readiness (PM2's `reload`)
    Reload(apply::ReloadArgs),
    /// Back to the release before the running one, instances replaced one at a time
    Rollback(apply::ReloadArgs),
    /// Stop what scalectl started and remove what it wrote or created (packages stay installed)
    Destroy(apply::ReloadArgs),
    /// What runs where: units per host or containers per slot, with release and health (exit 2 when unhealthy)
    Status(status::Args),
    /// Diagnose the live fleet from its metrics: is it up, is it slow, which resource explains it (exit 2: findings)
    Doctor(doctor::Args),
    /// The app's log lines from every instance, merged in time order and labelled (--follow for new ones)
    Logs(logs::Args),
    /// The database tier as Patroni runs it: who leads, how far each replica is behind (db status)
    Db(db::Args),
    /// The fleet lock that keeps applies apart (lock status|release)
    Lock(lock::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(completions::Args),
    /// Print the man page (roff), e.g. `scalectl man > scalectl.1`
    Man,
}

impl Cli {
    /// The command line, with what only clap's matches know: whether `apply PLANFILE` was also
    /// given `-f` (its default cannot be told from a value the user typed).
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let (Command::Apply(a), Some(("apply", m))) = (&mut cli.command, matches.subcommand()) {
            a.topology_given = m.value_source("file") == Some(clap::parser::ValueSource::CommandLine);
        }
        cli
    }
}

/// What a command ended with, beyond success.
#[derive(Debug)]
pub enum Failure {
    /// The problems were already printed; exit 1 without another message.
    Reported,
    /// Not an error: changes present (plan --detailed-exitcode) or findings; exit 2.
    Changes,
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let color = !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    match cli.command {
        Command::Validate(a) => validate::run(a, color),
        Command::Schema(a) => schema::run(a),
        Command::Render(a) => render::run(a, color),
        Command::Pack(a) => pack::run(a, color),
        Command::Lab(a) => lab::run(a, color),
        Command::Plan(a) => plan::run(a, color),
        Command::Apply(a) => apply::run_apply(a, color),
        Command::Reload(a) => apply::run_reload(a, color),
        Command::Rollback(a) => apply::run_rollback(a, color),
        Command::Destroy(a) => apply::run_destroy(a, color),
        Command::Status(a) => status::run(a, color),
        Command::Logs(a) => logs::run(a, color),
        Command::Lock(a) => lock::run(a, color),
        Command::Db(a) => db::run(a, color),
        Command::Doctor(a) => doctor::run(a, color),
        Command::Completions(a) => completions::run(a),
        Command::Man => completions::man(),
    }
}

/// Read and validate a topology file; problems are printed (text) and reported as a failure.
pub(crate) fn load(file: &Path, color: bool) -> Result<Topology, Failure> {
    parse(file)?.map_err(|p| {
        eprint!("{}", p.report(color));
        Failure::Reported
    })
}

pub(crate) fn read_topology(file: &Path) -> anyhow::Result<(String, String)> {
    let source = std::fs::read_to_string(file).with_context(|| format!("cannot read topology file {}", file.display()))?;
    Ok((file.display().to_string(), source))
}

/// Parse without printing: for commands that report problems in their own format.
pub(crate) fn parse(file: &Path) -> anyhow::Result<Result<Topology, Problems>> {
    let (name, source) = read_topology(file)?;
    Ok(topology::parse(&name, &source))
}

