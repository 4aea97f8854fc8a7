//! Execute a plan exactly: prepare on every host in parallel, activate host by host in plan order,
//! clean up last. Files are written atomically (temporary file + rename), nginx's configuration is
//! validated before anything reloads it, and scale-api instances restart one at a time, each gated
//! on its readiness endpoint. An instance that never becomes ready rolls every app host touched so
//! far back to the files and release it had, and the error shows that instance's last log lines.
//!
//! Every remote script comes from `exec::commands` (pure, tested as text).

use std::time::Duration;

use anyhow::Context;

use super::conn;
use super::commands;
use super::ssh::{Conn, last_lines};
use crate::plan::{Action, Drain, FileChange, HostPlan, Plan, Probe, instance_unit};

pub type Progress<'a> = &'a (dyn Fn(&str, &str) + Sync);
/// (place, n): `n` more of the place's planned actions are done (a live display's done/total).
pub type Done<'a> = &'a (dyn Fn(&str, usize) + Sync);

pub struct Options<'a> {
    /// The scale-api binary, when the plan uploads a release.
    pub release: Option<&'a [u8]>,
    pub ready_timeout: Duration,
    pub parallel: usize,
    /// (host, message) for people watching.
    pub progress: Progress<'a>,
    pub done: Done<'a>,
    /// Asked before each step: a lost fleet lock stops the run there (`lock::LockLost`), and
    /// nothing is rolled back, since the fleet may be another run's now.
    pub still_held: super::lock::StillHeld<'a>,
    /// Who applies, for the audit log.
    pub owner: String,
}

const PACKAGE_TIMEOUT: Duration = Duration::from_secs(900);
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Past the wait for the database's writer (at most 120 tries of up to 4 s each) and the release
/// command unit's own TimeoutStartSec (15 min), which stop it first.
const RELEASE_COMMAND_TIMEOUT: Duration = Duration::from_secs(480 + 900 + 60);

/// Run the plan. On error, what was done is reported and nothing the plan did not say is attempted,
/// except restoring files a failed validation rejected and rolling back a release that never became ready.
pub fn execute(conns: &[Conn], plan: &Plan, opts: &Options<'_>) -> anyhow::Result<()> {
    // The audit log: one JSON line per host that has something to do, before anything is done
    // (an apply killed half way leaves its line) and once more with the outcome.
    let changed: Vec<&HostPlan> = plan.hosts.iter().filter(|h| !h.is_empty()).collect();
    let audit = |outcome: &str| {
        super::fanout(&changed, opts.parallel, |h| {
            if let Ok(c) = conn(conns, &h.host) {
                let entry = serde_json::json!({
                    "owner": opts.owner,
                    "topology": plan.topology,
                    "actions": h.actions().map(action_name).collect::<Vec<_>>(),
                    "outcome": outcome,
                });
                let _ = c.script(&commands::audit(&entry.to_string()), STEP_TIMEOUT);
            }
        });
    };
    audit("started");
    let result = run_stages(conns, plan, opts);
    audit(&match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {}", e.to_string().lines().next().unwrap_or("")),
    });
    result
}

fn run_stages(conns: &[Conn], plan: &Plan, opts: &Options<'_>) -> anyhow::Result<()> {
    // Prepare: every host at once.
    let preparing: Vec<&HostPlan> = plan.hosts.iter().filter(|h| !h.prepare.is_empty()).collect();
    let results = super::fanout(&preparing, opts.parallel, |h| prepare(conns, conn(conns, &h.host)?, h, opts));
    super::collect(results).context("prepare failed: no service was restarted; the next apply resumes from what was done")?;

    // Activate: host by host, in plan order (redis, monitor, app, lb).
    let mut touched: Vec<Touched> = Vec::new();
    for h in plan.hosts.iter().filter(|h| !h.activate.is_empty()) {
        let c = conn(conns, &h.host)?;
        if let Err(failure) = activate(conns, c, h, opts, &mut touched) {
            if failure.error.is::<super::lock::LockLost>() {
                return Err(failure.error);
            }
            return Err(rollback(conns, touched, failure, opts));
        }
    }

    // Cleanup: instances no longer wanted (the load balancer no longer sends them anything), old releases.
    let cleaning: Vec<&HostPlan> = plan.hosts.iter().filter(|h| !h.cleanup.is_empty()).collect();
    let results = super::fanout(&cleaning, opts.parallel, |h| {
        let c = conn(conns, &h.host)?;
        for a in &h.cleanup {
            step(conns, c, &h.app_name, a, opts)?;
            (opts.done)(&h.host, a.parts());
        }
        Ok(())
    });
    super::collect(results).context("cleanup failed")?;
    Ok(())
}

fn prepare(conns: &[Conn], c: &Conn, h: &HostPlan, opts: &Options<'_>) -> anyhow::Result<()> {
    let mut written: Vec<&FileChange> = Vec::new();
    let mut i = 0;
    while i < h.prepare.len() {
        // Consecutive file writes go in one round trip.
        if let Action::WriteFile(_) = &h.prepare[i] {
            let batch: Vec<&FileChange> = h.prepare[i..]
                .iter()
                .map_while(|a| if let Action::WriteFile(f) = a { Some(f) } else { None })
                .collect();
            (opts.still_held)()?;
            (opts.progress)(&h.host, &format!("writing {} file{}", batch.len(), if batch.len() == 1 { "" } else { "s" }));
            c.sudo_script("writing files", &commands::write_files(&batch), STEP_TIMEOUT)?;
            (opts.done)(&h.host, batch.len());
            i += batch.len();
            written.extend(batch);
            continue;
        }
        let a = &h.prepare[i];
        if let Action::Validate { unit, command } = a {
            let out = c.script(command, STEP_TIMEOUT)?;
            if !out.ok() {
                // Put the previous files back so that nothing reloads a broken configuration later.
                let restore = c.sudo_script("restoring files", &commands::restore_files(&written), STEP_TIMEOUT);
                anyhow::bail!(
                    "{}: {unit} rejected the new configuration ({command}), so it was not applied{}:\n{}",
                    h.host,
                    if restore.is_ok() { " and the previous files are back" } else { "; restoring the previous files ALSO failed" },
                    last_lines(out.stderr.trim(), 15)
                );
            }
        } else {
            step(conns, c, &h.app_name, a, opts)?;
        }
        (opts.done)(&h.host, a.parts());
        i += 1;
    }
    Ok(())
}

/// What activation changed on an app host, to undo it.
struct Touched<'p> {
    host: String,
    app: &'p str,
    files: Vec<&'p FileChange>,
    from_release: Option<Option<String>>,
    /// Instances (re)started, each with the probe and drain the plan gave it.
    started: Vec<(Probe, Option<&'p Drain>)>,
    /// Workers (re)started, with their drain time.
    workers: Vec<(&'p str, u64)>,
}

/// A readiness failure during activation, with what the operator needs to see.
struct Failure {
    error: anyhow::Error,
}

fn activate<'p>(conns: &[Conn], c: &Conn, h: &'p HostPlan, opts: &Options<'_>, touched: &mut Vec<Touched<'p>>) -> Result<(), Failure> {
    let fail = |error: anyhow::Error| Failure { error };
    if h.app {
        touched.push(Touched { host: h.host.clone(), app: &h.app_name, files: Vec::new(), from_release: None, started: Vec::new(), workers: Vec::new() });
    }
    let mut record = |f: &mut dyn FnMut(&mut Touched<'p>)| {
        if h.app
            && let Some(t) = touched.last_mut()
        {
            f(t)
        }
    };
    for a in &h.activate {
        (opts.still_held)().map_err(fail)?;
        match a {
            Action::WriteFile(f) => {
                c.sudo_script("writing files", &commands::write_files(&[f]), STEP_TIMEOUT).map_err(fail)?;
                record(&mut |t| t.files.push(f));
            }
            Action::SwitchRelease { from, to } => {
                (opts.progress)(&h.host, &format!("switching to release {to}"));
                c.sudo_script("switching release", &commands::switch_release(&h.app_name, to), STEP_TIMEOUT).map_err(fail)?;
                record(&mut |t| t.from_release = Some(from.clone()));
            }
            Action::Start { unit, ready: Some(probe) } => {
                (opts.progress)(&h.host, &format!("starting {unit}, waiting for {}", probe.path));
                c.sudo_script("starting", &commands::start(unit), STEP_TIMEOUT).map_err(fail)?;
                record(&mut |t| t.started.push((probe.clone(), None)));
                wait_ready(c, &h.app_name, probe, opts.ready_timeout).map_err(fail)?;
            }
            Action::RollingRestart { ports, readiness, drain } => {
                for port in ports {
                    (opts.still_held)().map_err(fail)?;
                    let probe = Probe { port: *port, path: readiness.clone() };
                    record(&mut |t| t.started.push((probe.clone(), drain.as_ref())));
                    restart_drained(conns, c, &h.app_name, &probe, drain.as_ref(), Resume::AsPlanned, opts).map_err(fail)?;
                    (opts.done)(&h.host, 1);
                }
                continue;
            }
            Action::StartWorkers { units, drain_ms } => {
                // A rollback restarts them with their drain time (the job in hand may be long).
                record(&mut |t| t.workers.extend(units.iter().map(|u| (u.as_str(), *drain_ms))));
                start_workers(c, units, opts).map_err(fail)?;
            }
            Action::RollWorkers { units, drain_ms } => {
                for unit in units {
                    (opts.still_held)().map_err(fail)?;
                    record(&mut |t| t.workers.push((unit, *drain_ms)));
                    restart_worker(c, unit, *drain_ms, opts).map_err(fail)?;
                    (opts.done)(&h.host, 1);
                }
                continue;
            }
            other => step(conns, c, &h.app_name, other, opts).map_err(fail)?,
        }
        (opts.done)(&h.host, a.parts());
    }
    Ok(())
}

/// How long a worker is watched after it (re)started before it counts as running.
const WORKER_SETTLE_MS: u64 = 2000;

/// Workers enabled and started, then each seen still running a moment later.
fn start_workers(c: &Conn, units: &[String], opts: &Options<'_>) -> anyhow::Result<()> {
    for unit in units {
        (opts.progress)(&c.endpoint.host, &format!("starting {unit}"));
        c.sudo_script("starting", &commands::start(unit), STEP_TIMEOUT)?;
    }
    workers_running(c, units)
}

/// One worker restarted: systemd sends SIGTERM and waits for it to finish its job (its unit's
/// stop timeout: the drain time and 5 s), then starts it on the current release.
fn restart_worker(c: &Conn, unit: &str, drain_ms: u64, opts: &Options<'_>) -> anyhow::Result<()> {
    (opts.progress)(&c.endpoint.host, &format!("restarting {unit} (it finishes the job in hand first)"));
    c.sudo_script("restarting", &commands::restart(unit), STEP_TIMEOUT + Duration::from_millis(drain_ms))?;
    workers_running(c, std::slice::from_ref(&unit.to_string()))
}

fn workers_running(c: &Conn, units: &[String]) -> anyhow::Result<()> {
    let out = c.script(&commands::still_running(units, WORKER_SETTLE_MS), STEP_TIMEOUT)?;
    if out.ok() {
        // Measured now, not at the timer's next turn: Prometheus' next scrape sees them running.
        let _ = c.sudo_script("measuring", commands::MEASURE_NOW, STEP_TIMEOUT);
        return Ok(());
    }
    let mut logs = String::new();
    for unit in units {
        let l = c.script(&commands::logs(unit), STEP_TIMEOUT).map(|o| o.stdout).unwrap_or_default();
        logs.push_str(&format!("\n{unit}'s last log lines:\n{}", indent(l.trim())));
    }
    anyhow::bail!("{}: a worker does not stay up: {}{logs}", c.endpoint.host, out.stdout.trim())
}

/// How an instance put back into the load balancers is health-checked there.
#[derive(Clone, Copy)]
enum Resume {
    /// As its drain says: paused until the balancer's reload when this run gives the balancer a
    /// new file (a new liveness path), else checked.
    AsPlanned,
    /// Checked: a rollback's instance is back on what the running balancer checks for.
    Checked,
}

/// One instance restarted without a failed request: out of every load balancer (its in-flight
/// requests finished), restarted, ready, back in. A restart that never becomes ready leaves it
/// out, for the rollback to bring back.
fn restart_drained(conns: &[Conn], c: &Conn, app: &str, probe: &Probe, drain: Option<&Drain>, resume: Resume, opts: &Options<'_>) -> anyhow::Result<()> {
    let unit = instance_unit(app, probe.port);
    // The load balancers that list the instance, each with the drain's script for it.
    let lbs = match drain {
        Some(d) => d.lbs.iter().map(|l| Ok((conn(conns, l)?, d))).collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let server = drain.map(|d| d.server(probe.port)).unwrap_or_default();
    let wait = Duration::from_millis(drain.map_or(0, |d| d.wait_ms));
    for (lb, d) in &lbs {
        (opts.progress)(&c.endpoint.host, &format!("taking {server} out of the load balancer on {}", lb.endpoint.host));
        lb.sudo_script("draining", &commands::drain(&d.socket, &d.backend, &server, wait), STEP_TIMEOUT + wait)?;
    }
    (opts.progress)(&c.endpoint.host, &format!("restarting {unit}, waiting for {}", probe.path));
    c.sudo_script("restarting", &commands::restart(&unit), STEP_TIMEOUT)?;
    wait_ready(c, app, probe, opts.ready_timeout)?;
    for (lb, d) in &lbs {
        let pause = matches!(resume, Resume::AsPlanned) && d.pause_checks;
        lb.sudo_script("putting back", &commands::undrain(&d.socket, &d.backend, &server, wait, pause), STEP_TIMEOUT + wait)?;
    }
    Ok(())
}

fn wait_ready(c: &Conn, app: &str, probe: &Probe, timeout: Duration) -> anyhow::Result<()> {
    let out = c.script(&commands::wait_ready(probe.port, &probe.path, timeout), timeout + STEP_TIMEOUT)?;
    if out.ok() {
        return Ok(());
    }
    let unit = instance_unit(app, probe.port);
    let logs = c.script(&commands::logs(&unit), STEP_TIMEOUT).map(|o| o.stdout).unwrap_or_default();
    anyhow::bail!(
        "{}: {unit} never became ready within {} ({}).\nIts last log lines:\n{}",
        c.endpoint.host,
        humantime::format_duration(timeout),
        out.stdout.trim(),
        indent(logs.trim())
    )
}

fn indent(s: &str) -> String {
    if s.is_empty() { "  (none)".into() } else { s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n") }
}

/// Undo activation on every touched app host, newest first; the old release serves again.
fn rollback(conns: &[Conn], touched: Vec<Touched<'_>>, failure: Failure, opts: &Options<'_>) -> anyhow::Error {
    let mut notes = Vec::new();
    for t in touched.iter().rev() {
        let Ok(c) = conn(conns, &t.host) else { continue };
        (opts.progress)(&t.host, "rolling back");
        let mut ok = true;
        if !t.files.is_empty() {
            ok &= c.sudo_script("restoring files", &commands::restore_files(&t.files), STEP_TIMEOUT).is_ok();
            ok &= c.sudo_script("daemon-reload", "systemctl daemon-reload", STEP_TIMEOUT).is_ok();
        }
        let release = match &t.from_release {
            Some(Some(prev)) => {
                ok &= c.sudo_script("switching release back", &commands::switch_release(t.app, prev), STEP_TIMEOUT).is_ok();
                format!("release {prev}")
            }
            Some(None) => "no earlier release to return to".to_string(),
            None => "its release unchanged".to_string(),
        };
        for (probe, drain) in &t.started {
            ok &= restart_drained(conns, c, t.app, probe, *drain, Resume::Checked, opts).is_ok();
        }
        for (unit, drain_ms) in &t.workers {
            ok &= restart_worker(c, unit, *drain_ms, opts).is_ok();
        }
        notes.push(format!("{}: rolled back ({release}){}", t.host, if ok { "" } else { ", but some steps FAILED: check it with `scalectl status`" }));
    }
    anyhow::anyhow!("{:#}\nRolled back:\n  {}", failure.error, if notes.is_empty() { "nothing to roll back".into() } else { notes.join("\n  ") })
}

/// Actions with no special handling: one script each.
fn step(conns: &[Conn], c: &Conn, app: &str, a: &Action, opts: &Options<'_>) -> anyhow::Result<()> {
    (opts.still_held)()?;
    let host = &c.endpoint.host;
    match a {
        Action::InstallPackages { packages } => {
            (opts.progress)(host, &format!("installing {}", packages.join(", ")));
            let out = c.run_merged(&super::ssh::sudo_command(&c.endpoint.user, &commands::install_packages(packages)), PACKAGE_TIMEOUT)?;
            if !out.ok() {
                anyhow::bail!("{host}: installing packages failed (exit {}):\n{}", out.status, last_lines(&out.stdout, 20));
            }
        }
        Action::UploadRelease { release, bytes, archive } => {
            let binary = opts.release.context("the plan uploads a release but none was given")?;
            anyhow::ensure!(binary.len() as u64 == *bytes, "the release changed since the plan was made");
            (opts.progress)(host, &format!("uploading release {release} ({})", bytesize::ByteSize::b(*bytes).display().si()));
            let script = commands::upload_release(app, release, *archive);
            let out = c.run(&super::ssh::sudo_command(&c.endpoint.user, &script), binary, STEP_TIMEOUT)?;
            anyhow::ensure!(out.ok(), "{host}: uploading the release failed: {}", out.stderr.trim());
        }
        Action::WriteFile(f) => {
            c.sudo_script("writing files", &commands::write_files(&[f]), STEP_TIMEOUT)?;
        }
        Action::RemoveFile { path } => {
            c.sudo_script("removing a file", &commands::remove(path), STEP_TIMEOUT)?;
        }
        Action::DaemonReload => {
            c.sudo_script("daemon-reload", "systemctl daemon-reload", STEP_TIMEOUT)?;
        }
        Action::Validate { unit, command } => {
            let out = c.script(command, STEP_TIMEOUT)?;
            anyhow::ensure!(out.ok(), "{host}: {unit} rejected its configuration: {}", out.stderr.trim());
        }
        Action::Start { unit, ready } => {
            (opts.progress)(host, &format!("starting {unit}"));
            c.sudo_script("starting", &commands::start(unit), STEP_TIMEOUT)?;
            if let Some(probe) = ready {
                wait_ready(c, app, probe, opts.ready_timeout)?;
            }
        }
        Action::Restart { unit } => {
            (opts.progress)(host, &format!("restarting {unit}"));
            c.sudo_script("restarting", &commands::restart(unit), STEP_TIMEOUT)?;
        }
        Action::Reload { unit } => {
            (opts.progress)(host, &format!("reloading {unit}"));
            c.sudo_script("reloading", &commands::reload(unit), STEP_TIMEOUT)?;
        }
        Action::Enable { unit } => {
            c.sudo_script("enabling", &commands::enable(unit), STEP_TIMEOUT)?;
        }
        Action::SwitchRelease { to, .. } => {
            c.sudo_script("switching release", &commands::switch_release(app, to), STEP_TIMEOUT)?;
        }
        Action::RollingRestart { ports, readiness, drain } => {
            for port in ports {
                restart_drained(conns, c, app, &Probe { port: *port, path: readiness.clone() }, drain.as_ref(), Resume::AsPlanned, opts)?;
            }
        }
        Action::StartWorkers { units, .. } => start_workers(c, units, opts)?,
        Action::RollWorkers { units, drain_ms } => {
            for unit in units {
                restart_worker(c, unit, *drain_ms, opts)?;
            }
        }
        Action::Stop { unit } => {
            (opts.progress)(host, &format!("stopping {unit}"));
            c.sudo_script("stopping", &commands::stop(unit), STEP_TIMEOUT)?;
        }
        Action::PruneReleases { remove } => {
            c.sudo_script("removing old releases", &commands::prune(app, remove), STEP_TIMEOUT)?;
        }
        Action::MarkReady { release } => {
            c.sudo_script("recording a ready release", &commands::mark_ready(app, release), STEP_TIMEOUT)?;
        }
        Action::ReleaseCommand { release, unit, wait_writer } => {
            (opts.progress)(host, &format!("running the release command of release {release} ({unit})"));
            let out = c.run_merged(&super::ssh::sudo_command(&c.endpoint.user, &commands::release_command(app, release, unit, *wait_writer)), RELEASE_COMMAND_TIMEOUT)?;
            anyhow::ensure!(
                out.ok(),
                "{host}: the release command of release {release} failed ({unit}); nothing switched to it, the running release still serves. What it printed:\n{}",
                out.stdout.trim_end()
            );
        }
        Action::MarkPending { entries } => {
            c.sudo_script("recording owed actions", &commands::mark_pending(entries), STEP_TIMEOUT)?;
        }
        Action::ClearPending => {
            c.sudo_script("clearing owed actions", commands::CLEAR_PENDING, STEP_TIMEOUT)?;
        }
        Action::EnsureAdmin { credentials } => {
            c.sudo_script(&format!("making {}", credentials.admin()), &commands::ensure_admin(*credentials), STEP_TIMEOUT)?;
        }
        Action::LogCertificate { name, ca_host } => {
            (opts.progress)(host, &format!("issuing the log TLS certificate for {name} from {ca_host}'s CA"));
            log_certificate(c, conn(conns, ca_host)?, name)?;
        }
        Action::Credentials { credentials, phase, port } => {
            let what = match phase {
                crate::plan::CredentialsPhase::Add => format!("adding the new passwords to {} (the old ones still work)", credentials.users()),
                crate::plan::CredentialsPhase::Settle => format!("settling {} (the old passwords no longer work)", credentials.users()),
            };
            (opts.progress)(host, &what);
            c.sudo_script(&what, &commands::credentials(*credentials, *phase, *port), STEP_TIMEOUT)?;
        }
    }
    Ok(())
}

/// `LogCertificate`: the host's request (its key stays there), signed on the CA's host, installed
/// on the host. Only requests and certificates travel, each checked to be PEM and nothing else.
fn log_certificate(c: &Conn, ca: &Conn, name: &str) -> anyhow::Result<()> {
    let dir = crate::render::LOG_TLS_DIR;
    let host = &c.endpoint.host;
    let out = c.sudo_script("making a certificate request", &commands::log_tls_request_in(dir, name), STEP_TIMEOUT)?;
    let csr = commands::pem_blocks(&out.stdout, "CERTIFICATE REQUEST").map_err(|e| anyhow::anyhow!("{host}: {e}"))?;
    anyhow::ensure!(csr.len() == 1, "{host}: printed {} certificate requests, not one", csr.len());
    let out = ca.sudo_script("signing a certificate", &commands::log_tls_sign_in(dir, &ca.endpoint.host, name, &csr[0]), STEP_TIMEOUT)?;
    let certs = commands::pem_blocks(&out.stdout, "CERTIFICATE").map_err(|e| anyhow::anyhow!("{}: {e}", ca.endpoint.host))?;
    let [cert, ca_cert] = certs.as_slice() else {
        anyhow::bail!("{}: printed {} certificates, not the host's and the CA's", ca.endpoint.host, certs.len());
    };
    c.sudo_script("installing the certificate", &commands::log_tls_install_in(dir, cert, ca_cert), STEP_TIMEOUT)?;
    Ok(())
}

pub fn action_name(a: &Action) -> String {
    match a {
        Action::InstallPackages { packages } => format!("install {}", packages.join(",")),
        Action::UploadRelease { release, .. } => format!("upload {release}"),
        Action::WriteFile(f) => format!("write {}", f.path),
        Action::RemoveFile { path } => format!("remove {path}"),
        Action::DaemonReload => "daemon-reload".into(),
        Action::Validate { unit, .. } => format!("validate {unit}"),
        Action::Start { unit, .. } => format!("start {unit}"),
        Action::Restart { unit } => format!("restart {unit}"),
        Action::Reload { unit } => format!("reload {unit}"),
        Action::Enable { unit } => format!("enable {unit}"),
        Action::SwitchRelease { to, .. } => format!("switch {to}"),
        Action::RollingRestart { ports, .. } => format!("rolling {ports:?}"),
        Action::StartWorkers { units, .. } => format!("start {}", units.join(",")),
        Action::RollWorkers { units, .. } => format!("rolling {}", units.join(",")),
        Action::Stop { unit } => format!("stop {unit}"),
        Action::PruneReleases { remove } => format!("prune {}", remove.join(",")),
        Action::MarkReady { release } => format!("ready {release}"),
        Action::ReleaseCommand { release, .. } => format!("release-command {release}"),
        Action::MarkPending { .. } => "mark-pending".into(),
        Action::ClearPending => "clear-pending".into(),
        Action::LogCertificate { name, .. } => format!("log-certificate {name}"),
        Action::EnsureAdmin { credentials } => format!("admin {}", credentials.pending()),
        Action::Credentials { credentials, phase, .. } => format!("{} {phase:?}", credentials.pending()).to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::commands;
    use crate::plan::{Change, FileChange};

    fn file(path: &str, content: &str, change: Change, previous: Option<&str>) -> FileChange {
        FileChange {
            path: path.into(),
            mode: 0o640,
            owner: "root".into(),
            group: "redis".into(),
            change,
            sensitive: false,
            diff: None,
            content_sha256: crate::plan::sha256_hex(content.as_bytes()),
            content: content.into(),
            previous: previous.map(String::from),
        }
    }

    #[test]
    fn files_are_written_beside_their_target_then_renamed() {
        let f = file("/etc/redis/redis.conf", "port 6379\n", Change::Update, None);
        let s = commands::write_files(&[&f]);
        assert!(s.contains("printf '%s' 'cG9ydCA2Mzc5Cg==' | base64 -d > \"$t\"\ninstall -m 640 -o root -g redis \"$t\" /etc/redis/redis.conf.scalectl-new\n"), "{s}");
        assert!(s.contains("mv -f /etc/redis/redis.conf.scalectl-new /etc/redis/redis.conf"));
        assert!(s.starts_with("set -e"));
    }

    /// The script run for real (as root, like on a host): a service user's symlink at
    /// `PATH.scalectl-new` pointing at a file of root's is replaced, never written through, and a
    /// change of mode alone does not chmod through a symlink either.
    #[test]
    fn a_symlink_where_the_new_file_goes_is_never_followed() {
        if !crate::exec::is_root() {
            eprintln!("skipped: needs root (install -o root)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("shadow");
        std::fs::write(&victim, "root:secret\n").unwrap();
        let target = dir.path().join("svc/redis.conf");
        std::fs::create_dir(dir.path().join("svc")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("svc/redis.conf.scalectl-new")).unwrap();
        let mut f = file(target.to_str().unwrap(), "port 6379\n", Change::Create, None);
        f.group = "root".into();
        let run = |script: String| {
            let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run(commands::write_files(&[&f]));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "port 6379\n");
        assert!(!std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        f.change = Change::Metadata;
        f.mode = 0o644;
        run(commands::write_files(&[&f]));
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600, "chmod went through the link");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
    }

    #[test]
    fn restore_puts_back_previous_content_and_removes_created_files() {
        let upd = file("/etc/a", "new", Change::Update, Some("old"));
        let new = file("/etc/b", "x", Change::Create, None);
        let s = commands::restore_files(&[&upd, &new]);
        assert!(s.contains("b2xk")); // base64("old")
        assert!(!s.contains("bmV3")); // base64("new")
        assert!(s.contains("rm -f /etc/b"));
    }

    #[test]
    fn release_switch_is_an_atomic_rename_of_a_symlink() {
        assert_eq!(
            commands::switch_release("scale-api", "abc"),
            "set -e; ln -sfn /opt/scale-api/releases/abc /opt/scale-api/current.scalectl-new; mv -T /opt/scale-api/current.scalectl-new /opt/scale-api/current"
        );
    }

    #[test]
    fn readiness_script_polls_its_url_and_keeps_no_file() {
        let s = commands::wait_ready(3001, "/readyz", std::time::Duration::from_secs(30));
        assert!(s.contains("url=http://127.0.0.1:3001/readyz"));
        assert!(s.contains("+ 30"));
        assert!(!s.contains("/tmp/"), "no temporary file: {s}");
    }

    /// The readiness script against a real HTTP server on loopback: 200 ends it at once; any other
    /// answer until the deadline is reported with its status and body.
    #[test]
    fn readiness_script_reports_the_last_answer_of_a_real_server() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let ready = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ready ");
                let (status, body) = if ready { ("200 OK", "ok") } else { ("503 Service Unavailable", "redis: down") };
                let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            }
        });
        let run = |path: &str| std::process::Command::new("sh").arg("-c").arg(commands::wait_ready(port, path, std::time::Duration::from_secs(2))).output().unwrap();
        assert!(run("/ready").status.success());
        // An instance never ready: asked until the deadline (2 s), not before, then given up.
        let started = std::time::Instant::now();
        let out = run("/not-ready");
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(20), "gave up after {took:?}");
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("HTTP 503 redis: down"), "{said}");
    }
}
