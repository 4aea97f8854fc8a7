//! `scalectl apply`, `reload` and `rollback`: take the fleet's lock, observe, show the plan, ask,
//! then execute exactly that plan. The lock is released however the run ends (a killed run's lock
//! expires, or is taken over when its process is gone).

use std::time::{Duration, Instant};

use super::fleet::{self, Fleet, FleetArgs, ReleaseArg};
use super::{Failure, Output};
use crate::exec::{apply, lock};
use anyhow::Context;

use crate::plan::saved::{self, SavedPlan};
use crate::plan::{self, Action, Plan, Release, render_text, sha256_hex};

#[derive(Debug, clap::Args)]
#[command(after_help = "With PLANFILE (from `scalectl plan --out PLANFILE`), apply executes exactly that plan, and refuses it \
when the topology file, the release binary or any host changed since it was made.")]
pub struct ApplyArgs {
    /// A plan saved by `scalectl plan --out PLANFILE` (its topology file and release are used)
    #[arg(value_name = "PLANFILE")]
    pub planfile: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub release: ReleaseArg,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Do not ask for confirmation (required when standard input is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long a (re)started scale-api instance may take to answer its readiness path
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ready_timeout: Duration,
    /// The fleet lock expires after this long if the run dies without releasing it
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lock_ttl: Duration,
    /// Output format of the plan shown before applying
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
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
    if let Some(t) = super::docker::topology(&a.fleet.topology.file, color)? {
        return super::docker::apply(&t, &a.release, &a.exec, color);
    }
    let f = fleet::connect(&a.fleet, color)?;
    let binary = a.release.read()?;
    let release = Release::of(&binary);
    locked(&f, &a.exec, color, "apply these changes", Some(&binary), |f| Ok(fleet::make_plan(f, Some(&release))?.0))
}

/// `apply PLANFILE`: the saved plan, only if nothing it was made from changed.
fn run_saved(mut a: ApplyArgs, planfile: &std::path::Path, color: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(planfile).with_context(|| format!("cannot read the plan file {}", planfile.display()))?;
    let saved: SavedPlan = serde_json::from_str(&text)
        .ok()
        .filter(|s: &SavedPlan| s.kind == saved::KIND)
        .with_context(|| format!("{} is not a plan saved by `scalectl plan --out`", planfile.display()))?;
    if saved.format_version != saved::SAVED_FORMAT_VERSION {
        return Err(anyhow::anyhow!(
            "{} has plan format {}, this scalectl reads format {}: make the plan again",
            planfile.display(),
            saved.format_version,
            saved::SAVED_FORMAT_VERSION
        )
        .into());
    }
    let topology = std::fs::read(&saved.topology_file).with_context(|| format!("cannot read the plan's topology {}", saved.topology_file))?;
    if sha256_hex(&topology) != saved.topology_sha256 {
        return Err(anyhow::anyhow!("the topology file {} changed since the plan was made: run `scalectl plan` again", saved.topology_file).into());
    }
    let binary = match &saved.release_file {
        Some(path) => {
            let b = std::fs::read(path).with_context(|| format!("cannot read the plan's release {path}"))?;
            if Some(sha256_hex(&b)) != saved.release_sha256 {
                return Err(anyhow::anyhow!("the release binary {path} changed since the plan was made: run `scalectl plan` again").into());
            }
            Some(b)
        }
        None => None,
    };
    a.fleet.topology.file = saved.topology_file.clone().into();
    let f = fleet::connect(&a.fleet, color)?;
    let release = binary.as_deref().map(Release::of);
    locked(&f, &a.exec, color, "apply this saved plan", binary.as_deref(), |f| {
        let (desired, observed) = fleet::observe(f, release.as_ref())?;
        let stale = saved::changed_hosts(&saved.observed, &saved::fingerprints(&observed));
        anyhow::ensure!(
            stale.is_empty(),
            "the plan is stale: {} changed since it was made (another apply, or drift): run `scalectl plan` again",
            stale.join(", ")
        );
        // Secret files were saved without content: take it from the desired state, if unchanged.
        let mut plan = saved.plan.clone();
        for h in &mut plan.hosts {
            let Some(d) = desired.iter().find(|d| d.host == h.host) else { continue };
            for a in h.prepare.iter_mut().chain(h.activate.iter_mut()).chain(h.cleanup.iter_mut()) {
                if let Action::WriteFile(fc) = a
                    && fc.sensitive
                {
                    let now = d.files.iter().find(|x| x.path == fc.path).map(|x| x.content.clone()).unwrap_or_default();
                    anyhow::ensure!(
                        sha256_hex(now.as_bytes()) == fc.content_sha256,
                        "{}: the secret in {} changed since the plan was made: run `scalectl plan` again",
                        h.host,
                        fc.path
                    );
                    fc.content = now;
                }
            }
        }
        Ok(plan)
    })
}

pub fn run_reload(a: ReloadArgs, color: bool) -> Result<(), Failure> {
    let f = fleet::connect(&a.fleet, color)?;
    locked(&f, &a.exec, color, "restart every instance", None, |f| {
        let (desired, observed) = fleet::observe(f, None)?;
        Ok(plan::reload_plan(&f.topology.name, &desired, &observed))
    })
}

pub fn run_rollback(a: ReloadArgs, color: bool) -> Result<(), Failure> {
    let f = fleet::connect(&a.fleet, color)?;
    locked(&f, &a.exec, color, "roll back to the previous release", None, |f| {
        let (desired, observed) = fleet::observe(f, None)?;
        plan::rollback_plan(&f.topology.name, &desired, &observed).map_err(anyhow::Error::msg)
    })
}

pub fn run_destroy(a: ReloadArgs, color: bool) -> Result<(), Failure> {
    if let Some(t) = super::docker::topology(&a.fleet.topology.file, color)? {
        return super::docker::destroy(&t, &a.exec, color);
    }
    let f = fleet::connect(&a.fleet, color)?;
    locked(&f, &a.exec, color, "DESTROY the deployment (stop its services, remove every file and release scalectl wrote)", None, |f| {
        let (desired, observed) = fleet::observe(f, None)?;
        Ok(plan::destroy_plan(&f.topology.name, &desired, &observed))
    })
}

/// Lock, plan, show, confirm, execute, unlock.
fn locked(
    f: &Fleet,
    x: &ExecArgs,
    color: bool,
    what: &str,
    binary: Option<&[u8]>,
    make: impl FnOnce(&Fleet) -> anyhow::Result<Plan>,
) -> Result<(), Failure> {
    let lock_conn = fleet::lock_host(f)?;
    let owner = lock::owner();
    let held = acquire(lock_conn, &owner, x.lock_ttl)?;
    let result = (|| -> anyhow::Result<()> {
        let plan = make(f)?;
        match x.output {
            Output::Text => print!("{}", render_text(&plan, color)),
            Output::Json => println!("{}", super::plan::json(&plan)),
        }
        if !plan.has_changes() {
            return Ok(());
        }
        if !fleet::confirm(x.yes, what)? {
            anyhow::bail!("cancelled: nothing was changed");
        }
        let started = Instant::now();
        let opts = apply::Options {
            release: binary,
            ready_timeout: x.ready_timeout,
            parallel: f.parallel,
            progress: &fleet::say,
            owner: owner.clone(),
        };
        apply::execute(&f.conns, &plan, &opts)?;
        eprintln!("Done: {} actions on {} hosts in {:.1} s.", plan.change_count(), plan.hosts.iter().filter(|h| !h.is_empty()).count(), started.elapsed().as_secs_f64());
        Ok(())
    })();
    if let Err(e) = lock::release(lock_conn, &held) {
        eprintln!("warning: could not release the fleet lock: {e:#}");
    }
    result.map_err(Failure::from)
}

/// Take the lock; a lock left by a process of this machine that no longer exists is taken over.
fn acquire(c: &crate::exec::ssh::Conn, owner: &str, ttl: Duration) -> anyhow::Result<lock::Held> {
    match lock::acquire(c, owner, ttl) {
        Ok(h) => Ok(h),
        Err(e) => {
            if let Some(info) = lock::status(c)?
                && stale_here(&info.owner)
            {
                eprintln!("taking over the fleet lock of {}: that process no longer runs", info.owner);
                lock::force_release(c)?;
                return lock::acquire(c, owner, ttl);
            }
            Err(e)
        }
    }
}

/// The owner names this machine and a pid that is gone.
fn stale_here(owner: &str) -> bool {
    let me = lock::owner();
    let machine = |o: &str| o.rsplit_once("/pid").map(|(m, _)| m.to_string());
    let pid = owner.rsplit_once("/pid").and_then(|(_, p)| p.parse::<i32>().ok());
    match (machine(owner), machine(&me), pid) {
        (Some(a), Some(b), Some(pid)) if a == b => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
        }
        _ => false,
    }
}
