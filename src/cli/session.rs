//! What every command on a live deployment shares: the topology parsed and validated once, its
//! target opened once, and the one run loop (lock, plan, show, confirm, execute, unlock) that
//! apply, reload, rollback and destroy go through on every target.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::args::{ExecArgs, FleetArgs, Output};
use super::Failure;
use crate::exec::lock;
use crate::plan::{PlanView, TargetPlan};
use crate::render::{self, SecretValues};
use crate::deploy::{self, ExecOptions, Target};
use crate::topology::{SecretRef, Topology};

/// Progress lines on stderr when it is a terminal (or when asked); silent in pipelines.
pub fn progress_enabled() -> bool {
    std::io::stderr().is_terminal() || std::env::var_os("SCALECTL_PROGRESS").is_some()
}

pub fn say(place: &str, msg: &str) {
    if progress_enabled() {
        eprintln!("{place}: {msg}");
    }
}

/// Parse and validate the topology (problems printed), then open its target.
pub fn open(args: &FleetArgs, color: bool) -> Result<Box<dyn Target>, Failure> {
    let topology = super::load(&args.topology.file, color)?;
    let started = Instant::now();
    let t = deploy::open(topology, &args.connect_options(), &say)?;
    tracing::debug!(elapsed = ?started.elapsed(), "connected");
    Ok(t)
}

/// Read every secret from its reference on this machine; a value that cannot be written safely is
/// refused by name, never echoed.
pub fn resolve_secrets(t: &Topology) -> anyhow::Result<SecretValues> {
    let mut values = SecretValues::default();
    for (name, r) in &t.app.secrets {
        values.app.push((name.clone(), resolve_secret(name, r)?));
    }
    if let Some(r) = t.redis_password() {
        values.redis_password = Some(resolve_secret("redis.password", r)?);
    }
    if let Some(r) = &t.observability.prometheus_password {
        values.prometheus_password = Some(resolve_secret("observability.prometheus.password", r)?);
    }
    if let Some(r) = t.observability.alertmanager.as_ref().and_then(|a| a.webhook.as_ref()) {
        values.alertmanager_webhook = Some(resolve_secret("observability.alertmanager.webhook", r)?);
    }
    if let Some(d) = &t.database {
        let password = resolve_secret("database.password", &d.password)?;
        // It goes into the app's connection URLs (DATABASE_URL), where any other character
        // would need escaping that not every library undoes.
        anyhow::ensure!(
            password.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)),
            "secret `database.password` holds a character a connection URL would have to escape: use letters, digits, `-`, `.`, `_` and `~` (such as `openssl rand -hex 32`)"
        );
        values.database = Some(render::DatabaseSecrets {
            password,
            replication_password: resolve_secret("database.replication_password", &d.replication_password)?,
            rest_password: resolve_secret("database.rest_password", &d.rest_password)?,
        });
    }
    Ok(values)
}

/// One secret, read from its reference on this machine (`name` says which, in errors).
pub fn resolve_secret(name: &str, r: &SecretRef) -> anyhow::Result<String> {
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

/// Print a plan in the chosen format.
pub fn show(plan: &TargetPlan, output: Output, color: bool) {
    match output {
        Output::Text => print!("{}", plan.text(color)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan.json()).unwrap_or_default()),
    }
}

/// Lock, plan (`make`), show, confirm, execute exactly that plan, unlock (however the run ends).
pub fn run_locked(
    target: &dyn Target,
    x: &ExecArgs,
    color: bool,
    what: &str,
    release: Option<&[u8]>,
    make: impl FnOnce(&dyn Target) -> anyhow::Result<TargetPlan>,
) -> Result<(), Failure> {
    with_fleet_lock(target, x.lock_ttl, |held, owner| {
        let plan = make(target)?;
        show(&plan, x.output, color);
        if !plan.has_changes() {
            return Ok(());
        }
        if !confirm(x.yes, what)? {
            anyhow::bail!("cancelled: nothing was changed");
        }
        let started = Instant::now();
        let still_held = || held.check().map_err(anyhow::Error::from);
        // On a terminal, a live line per place; elsewhere, the plain lines (when asked for).
        let board = if progress_enabled() { super::progress::Board::on_terminal(&plan.places()) } else { None };
        let progress = |place: &str, step: &str| match &board {
            Some(b) => b.say(place, step),
            None => say(place, step),
        };
        let done = |place: &str, n: usize| {
            if let Some(b) = &board {
                b.done(place, n)
            }
        };
        let opts = ExecOptions { release, ready_timeout: x.ready_timeout, progress: &progress, done: &done, owner: owner.to_string(), still_held: &still_held };
        let ran = target.execute(&plan, &opts);
        if let Some(b) = &board {
            b.end(ran.is_ok());
        }
        ran?;
        eprintln!("Done: {} {} in {:.1} s.", plan.change_count(), plan.scope(), started.elapsed().as_secs_f64());
        Ok(())
    })
    .map_err(Failure::from)
}

/// Take the fleet lock (one a dead process of this machine left is taken over, saying so), run
/// `f` with it and this run's owner name, and release it however `f` ends.
pub fn with_fleet_lock<T>(target: &dyn Target, ttl: std::time::Duration, f: impl FnOnce(&lock::Held, &str) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let owner = lock::owner();
    let (held, taken_over) = deploy::acquire(target, &owner, ttl)?;
    if let Some(dead) = taken_over {
        eprintln!("taking over the fleet lock of {dead}: that process no longer runs");
    }
    if let Some(expired) = &held.took_over {
        eprintln!("took over an expired fleet lock: {expired}");
    }
    let result = f(&held, &owner);
    if let Err(e) = target.unlock(&held) {
        eprintln!("warning: could not release the fleet lock: {e:#}");
    }
    result
}

/// Write a file the user asked for (a saved plan, a snapshot) whole or not at all.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
