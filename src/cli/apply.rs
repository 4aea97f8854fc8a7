//! `scalectl apply`, `reload` and `rollback`: take the fleet's lock, observe, show the plan, ask,
//! then execute exactly that plan. The lock is released however the run ends (a killed run's lock
//! expires, or is taken over when its process is gone).

use std::time::{Duration, Instant};

use super::fleet::{self, Fleet, FleetArgs, ReleaseArg};
use super::{Failure, Output};
use crate::exec::{apply, lock};
use crate::plan::{self, Plan, Release, render_text};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
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

pub fn run_apply(a: ApplyArgs, color: bool) -> Result<(), Failure> {
    let f = fleet::connect(&a.fleet, color)?;
    let binary = a.release.read()?;
    let release = Release::of(&binary);
    locked(&f, &a.exec, color, "apply these changes", Some(&binary), |f| fleet::make_plan(f, Some(&release)))
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
