//! What every command that works on a live fleet shares: connecting (lab or real hosts), taking
//! the lock, observing, rendering with the observed facts and planning.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Failure, TopologyArg};
use crate::exec::{self, ConnectOptions, ssh::Conn};
use crate::plan::{self, DesiredHost, Observed, Plan, Release};
use crate::render::{self, Facts, Templates};
use crate::topology::{Target, Topology};

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

#[derive(Debug, clap::Args)]
pub struct ReleaseArg {
    /// The scale-api binary to deploy [default: the scale-api next to this scalectl]
    #[arg(long = "release", value_name = "FILE")]
    pub release: Option<PathBuf>,
}

impl ReleaseArg {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(match &self.release {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("scale-api"),
        })
    }

    pub fn read(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.path()?;
        std::fs::read(&path).with_context(|| {
            format!("cannot read the scale-api binary {} (build it with `cargo build --release`, or pass --release FILE)", path.display())
        })
    }
}

pub struct Fleet {
    pub topology: Topology,
    pub conns: Vec<Conn>,
    pub parallel: usize,
}

/// Progress lines on stderr when it is a terminal (or when asked); silent in pipelines.
pub fn progress_enabled() -> bool {
    std::io::stderr().is_terminal() || std::env::var_os("SCALECTL_PROGRESS").is_some()
}

pub fn say(host: &str, msg: &str) {
    if progress_enabled() {
        eprintln!("{host}: {msg}");
    }
}

pub fn connect(args: &FleetArgs, color: bool) -> Result<Fleet, Failure> {
    let topology = super::load(&args.topology.file, color)?;
    if topology.target != Target::Hosts {
        return Err(anyhow::anyhow!(
            "{}: this command deploys `target: hosts` topologies; this one is `target: docker`",
            args.topology.file.display()
        )
        .into());
    }
    let opts = ConnectOptions {
        known_hosts: args.known_hosts.clone(),
        accept_new_host_keys: args.accept_new_host_keys,
        connect_timeout: args.connect_timeout,
        parallel: args.parallel.max(1),
    };
    let (eps, lab) = exec::endpoints(&topology, &opts)?;
    if lab {
        say("lab", &format!("reaching the hosts of lab `{}` through 127.0.0.1 (see `scalectl lab status`)", topology.name));
    }
    let started = Instant::now();
    let conns = exec::connect_all(&eps, opts.parallel).map_err(|e| {
        let hint = if lab { "" } else { "\n(for the local lab, run `scalectl lab up -f FILE` first)" };
        anyhow::anyhow!("{e:#}{hint}")
    })?;
    tracing::debug!(elapsed = ?started.elapsed(), "connected");
    Ok(Fleet { topology, conns, parallel: opts.parallel })
}

/// The fleet's lock lives on its first host.
pub fn lock_host(f: &Fleet) -> anyhow::Result<&Conn> {
    f.conns.first().context("the topology has no hosts")
}

/// Observe, then desired state rendered with what was observed.
pub fn observe(f: &Fleet, release: Option<&Release>) -> anyhow::Result<(Vec<DesiredHost>, BTreeMap<String, Observed>)> {
    let templates = Templates::embedded();
    // File paths and packages do not depend on facts: a first pass with defaults says what to read.
    let mut first = render::render(&f.topology, &Facts::with_default_cores(1), &templates)?;
    // Secret files are observed by hash only; their paths do not depend on the values.
    first.extend(render::render_secrets(&f.topology, &render::SecretValues::default(), &templates)?);
    let probe = plan::desired_hosts(&f.topology, &Facts::with_default_cores(1), &first, release);
    let observed = exec::observe::observe_all(&f.conns, &probe, f.parallel)?;
    let mut facts = Facts::with_default_cores(1);
    for (h, o) in &observed {
        facts.cores.insert(h.clone(), o.cores);
    }
    let mut files = render::render(&f.topology, &facts, &templates)?;
    files.extend(render::render_secrets(&f.topology, &resolve_secrets(&f.topology)?, &templates)?);
    let desired = plan::desired_hosts(&f.topology, &facts, &files, release);
    // Units that depend on facts (instances: max) may not have been in the first pass.
    let observed = if desired.iter().zip(&probe).any(|(d, p)| d.instances != p.instances) {
        exec::observe::observe_all(&f.conns, &desired, f.parallel)?
    } else {
        observed
    };
    Ok((desired, observed))
}

/// Read every secret from its reference on this machine; a value that cannot be written safely is
/// refused by name, never echoed.
pub fn resolve_secrets(t: &Topology) -> anyhow::Result<render::SecretValues> {
    use crate::topology::SecretRef;
    let read = |name: &str, r: &SecretRef| -> anyhow::Result<String> {
        let value = match r {
            SecretRef::Env(var) => std::env::var(var).map_err(|_| {
                anyhow::anyhow!("secret `{name}`: environment variable `{var}` is not set on this machine")
            })?,
            SecretRef::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("secret `{name}`: cannot read {path}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        anyhow::ensure!(
            render::secret_is_safe(&value),
            "secret `{name}` is empty or holds a character that cannot be written safely (allowed: printable ASCII \
and spaces, but no quotes, backslash, `$`, backtick or `%`)"
        );
        Ok(value)
    };
    let mut values = render::SecretValues::default();
    for (name, r) in &t.app.secrets {
        values.app.push((name.clone(), read(name, r)?));
    }
    if let Some(r) = &t.redis.password {
        values.redis_password = Some(read("redis.password", r)?);
    }
    if let Some(r) = t.observability.alertmanager.as_ref().and_then(|a| a.webhook.as_ref()) {
        values.alertmanager_webhook = Some(read("observability.alertmanager.webhook", r)?);
    }
    Ok(values)
}

pub fn make_plan(f: &Fleet, release: Option<&Release>) -> anyhow::Result<(Plan, BTreeMap<String, Observed>)> {
    let (desired, observed) = observe(f, release)?;
    Ok((plan::plan(&f.topology.name, &desired, &observed), observed))
}

/// Ask before changing anything, unless --yes; without a terminal, --yes is required.
pub fn confirm(yes: bool, what: &str) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to {what} without --yes: standard input is not a terminal to ask on");
    }
    eprint!("Do you want to {what}? Only `yes` is accepted: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
