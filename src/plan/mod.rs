//! Desired state against observed state -> a Plan: per host, the actions apply will take, in order,
//! with a unified diff of every changed file (secrets redacted).
//!
//! Pure: no I/O, no clock. `exec` observes the hosts and executes the plan; it makes no decision
//! the plan did not record. A plan has three stages per host: `prepare` runs on every host in
//! parallel (packages, release upload, config files, validation), `activate` runs host by host in
//! plan order (restarts, reloads, the rolling restart of scale-api gated on readiness), `cleanup`
//! runs last (instances no longer wanted, old releases).

pub mod desired;
pub mod docker;
pub mod saved;
mod text;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use desired::{Credentials, DesiredFile, LiveCredentials, DesiredHost, MAX_RELEASE_BYTES, OnChange, Release, SCALE_API, current_link, desired_hosts, instance_unit, ready_dir, release_command_unit, released_dir, releases_dir, socket_unit, worker_unit};
pub use text::render_text;
pub use view::{JSON_FORMAT_VERSION, PlanView, TargetPlan};

/// Releases kept on each host (the running one included).
pub const KEEP_RELEASES: usize = 3;

/// What `exec::observe` read from one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Observed {
    pub cores: u32,
    /// `systemd-detect-virt --container` said the host is a container.
    pub container: bool,
    /// Managed paths (present or not).
    pub files: BTreeMap<String, Option<ObservedFile>>,
    pub units: BTreeMap<String, UnitState>,
    /// Package -> installed.
    pub packages: BTreeMap<String, bool>,
    /// Release `current` points at.
    pub release: Option<String>,
    /// Releases present on the host, oldest first.
    pub releases: Vec<String>,
    /// Releases every instance of the host once became ready on (a `.ready` marker in the
    /// release directory): the only ones `rollback` returns to.
    #[serde(default)]
    pub ready_releases: Vec<String>,
    /// Service actions an earlier apply recorded before writing files and did not finish
    /// (`restart:UNIT`, `reload:UNIT`, `rolling`): a killed apply's files are on disk, so only
    /// this record says what still has to be restarted.
    pub pending: Vec<String>,
    /// Names this host resolved (DesiredHost::resolve) and the first address of each.
    pub resolved: BTreeMap<String, std::net::IpAddr>,
    /// The credentials whose admin user scalectl made on this host (Redis': its include and
    /// password file exist).
    #[serde(default)]
    pub admins: Vec<Credentials>,
    /// The host's log TLS certificate, as found (None: no certificate, CA certificate or key).
    #[serde(default)]
    pub log_tls: Option<ObservedLogTls>,
    /// The host keeps the fleet's log CA: the sha256 of its certificate.
    #[serde(default)]
    pub log_ca: Option<String>,
    /// The balancer's servers in maintenance that a drain put there (a run that stopped before
    /// putting them back): a reload of the balancer, which keeps no such state, brings them back.
    #[serde(default)]
    pub drained: Vec<String>,
    /// Releases whose release command ran to success on this host.
    #[serde(default)]
    pub released: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedLogTls {
    /// sha256 of the CA certificate installed beside it.
    pub ca_sha256: String,
    /// Issued by that CA, for the host's own key, and valid for longer than the renewal margin.
    pub good: bool,
    /// The name it carries (subjectAltName).
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedFile {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub sha256: String,
    /// None for sensitive files (only their hash is read).
    #[serde(skip)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UnitState {
    /// active, inactive, failed, activating, ...
    pub active: String,
    /// enabled, disabled, static, ... or empty when the unit does not exist
    pub enabled: String,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active == "active" || self.active == "reloading" || self.active == "activating"
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled == "enabled" || self.enabled == "static" || self.enabled == "enabled-runtime"
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub topology: String,
    pub hosts: Vec<HostPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostPlan {
    pub host: String,
    pub roles: Vec<crate::topology::Role>,
    /// Runs app instances: a failed readiness rolls this host's activation back.
    #[serde(default)]
    pub app: bool,
    /// The app's name: its instances are `APP@PORT.service`, its releases in /opt/APP/releases.
    pub app_name: String,
    pub prepare: Vec<Action>,
    pub activate: Vec<Action>,
    pub cleanup: Vec<Action>,
}

impl HostPlan {
    pub fn is_empty(&self) -> bool {
        self.prepare.is_empty() && self.activate.is_empty() && self.cleanup.is_empty()
    }
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.prepare.iter().chain(&self.activate).chain(&self.cleanup)
    }
}

impl Plan {
    /// The plan with every secret file's content removed, and the secret-looking lines of what
    /// other files replace (an admin's `requirepass` in a redis.conf scalectl adopts) hidden from
    /// their diffs: what is printed or saved. The executor keeps the whole plan in memory, and
    /// restores exactly what was there.
    pub fn redacted(&self) -> Plan {
        let mut p = self.clone();
        for h in &mut p.hosts {
            for a in h.prepare.iter_mut().chain(h.activate.iter_mut()).chain(h.cleanup.iter_mut()) {
                let Action::WriteFile(f) = a else { continue };
                if f.sensitive {
                    // No digest either: a weak secret would fall to a dictionary tried on it.
                    f.content.clear();
                    f.content_sha256.clear();
                    f.previous = None;
                } else if let Some(previous) = &f.previous {
                    let hidden = redact_secret_lines(previous, &f.content);
                    if hidden != *previous {
                        if f.diff.is_some() {
                            f.diff = Some(unified_diff(&f.path, &hidden, &f.content));
                        }
                        f.previous = Some(hidden);
                    }
                }
            }
        }
        p
    }

    pub fn has_changes(&self) -> bool {
        self.hosts.iter().any(|h| !h.is_empty())
    }
    pub fn change_count(&self) -> usize {
        self.hosts.iter().map(|h| h.actions().count()).sum()
    }
}

impl PlanView for Plan {
    fn topology(&self) -> &str {
        &self.topology
    }
    fn has_changes(&self) -> bool {
        Plan::has_changes(self)
    }
    fn change_count(&self) -> usize {
        Plan::change_count(self)
    }
    fn redacted(&self) -> Self {
        Plan::redacted(self)
    }
    fn text(&self, color: bool) -> String {
        render_text(&self.redacted(), color)
    }
    fn scope(&self) -> String {
        format!("actions on {} hosts", self.hosts.iter().filter(|h| !h.is_empty()).count())
    }
    fn places(&self) -> Vec<(String, usize)> {
        self.hosts.iter().filter(|h| !h.is_empty()).map(|h| (h.host.clone(), h.actions().map(Action::parts).sum())).collect()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Create,
    Update,
    /// Same content; mode or ownership differ.
    Metadata,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileChange {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub change: Change,
    pub sensitive: bool,
    /// Unified diff, None for sensitive files.
    pub diff: Option<String>,
    /// sha256 of `content`; empty for sensitive files once redacted (a saved plan is compared
    /// with the plan made again at apply, secrets re-resolved, as its other files are).
    pub content_sha256: String,
    /// The new content; empty for sensitive files once redacted (plans shown or saved).
    pub content: String,
    /// What the host had, to restore on rollback (None: absent, or sensitive).
    pub previous: Option<String>,
}

/// One step. The executor maps each to commands; it adds nothing of its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    InstallPackages { packages: Vec<String> },
    /// The release's bytes: scale-api's binary, or (`archive`) a tar unpacked as the release directory.
    UploadRelease {
        release: String,
        bytes: u64,
        #[serde(default)]
        archive: bool,
    },
    WriteFile(FileChange),
    RemoveFile { path: String },
    DaemonReload,
    /// Check a configuration before anything reloads it; on failure the files are restored.
    Validate { unit: String, command: String },
    /// enable + start a unit that is not running; for app instances, then wait until `ready` answers.
    Start { unit: String, ready: Option<Probe> },
    /// enable + restart (a restart also starts a stopped unit).
    Restart { unit: String },
    /// Reload a running unit's configuration.
    Reload { unit: String },
    Enable { unit: String },
    SwitchRelease { from: Option<String>, to: String },
    /// Every instance of the host answered ready on this release: record it (rollback's targets).
    MarkReady { release: String },
    /// The app's release command for this release (`unit`, an instance of its template), run to
    /// its end before any instance switches; its success recorded on the host.
    /// `wait_writer`: first wait (a while) until the database's writer on this host answers.
    ReleaseCommand {
        release: String,
        unit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_writer: Option<u16>,
    },
    /// Restart these instances one at a time, each gated on readiness; with `drain`, each is
    /// first taken out of every load balancer and put back once ready.
    RollingRestart {
        ports: Vec<u16>,
        readiness: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drain: Option<Drain>,
    },
    /// disable + stop.
    Stop { unit: String },
    PruneReleases { remove: Vec<String> },
    /// Record the service actions this plan owes before changing files (see `Observed::pending`).
    MarkPending { entries: Vec<String> },
    /// Every owed service action was done.
    ClearPending,
    /// Make scalectl's admin user for these credentials on the host (its password stays there):
    /// before their service first starts with the file that names it.
    EnsureAdmin { credentials: Credentials },
    /// This host's certificate for RELP over TLS, naming `name`: the host makes its key (kept
    /// there) and a request, the fleet's log CA on `ca_host` signs it (the CA is made there on
    /// first use; its key stays there), and the host installs the certificate and the CA's.
    LogCertificate { name: String, ca_host: String },
    /// Enable and start these workers, then see each still running a moment later (a worker
    /// that exits at once is restarted by systemd again and again; apply fails instead).
    /// `drain_ms`: their drain time, should a rollback restart them.
    StartWorkers { units: Vec<String>, drain_ms: u64 },
    /// Restart these workers one at a time: each stopped with SIGTERM and given `drain_ms` to
    /// finish the job in hand (then killed), started again, and seen running before the next.
    RollWorkers { units: Vec<String>, drain_ms: u64 },
    /// A tier's users changed live through its admin user on `port`: `add` the file's passwords
    /// to its users (old and new both work), and, once every app host has the new secret,
    /// `settle` each user exactly as the file has it (the old password gone).
    Credentials { credentials: Credentials, phase: CredentialsPhase, port: u16 },
}

impl Action {
    /// How many parts a live display counts it as: a rolling restart one per instance or
    /// worker (each may take its drain and readiness time), anything else one.
    pub fn parts(&self) -> usize {
        match self {
            Action::RollingRestart { ports, .. } => ports.len().max(1),
            Action::RollWorkers { units, .. } => units.len().max(1),
            _ => 1,
        }
    }
}

/// The two halves of a live change of credentials.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsPhase {
    /// The new passwords work beside the old ones.
    Add,
    /// Only the file's passwords work.
    Settle,
}

/// How an instance leaves the load balancers before a planned restart, so that no request is sent
/// to it while it restarts and its restart never counts as a failure: on each `lbs` host, the
/// balancer behind nginx (HAProxy) is told through its runtime API (`socket`) to put the
/// instance's server in `backend` in maintenance, and scalectl waits (at most `wait_ms`) until its
/// requests in flight are answered; it is made ready again once its instance is. No file changes
/// and nothing reloads, so no client's connection is closed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drain {
    pub lbs: Vec<String>,
    pub socket: String,
    pub backend: String,
    /// The instance's host, as the balancer's server names begin (`host:port`).
    pub host: String,
    pub wait_ms: u64,
    /// A load balancer of `lbs` reloads its balancer later in this plan: an instance put back
    /// has its health check paused until then (`commands::Checks`).
    #[serde(default)]
    pub pause_checks: bool,
}

impl Drain {
    /// The balancer's server for the instance on `port`.
    pub fn server(&self, port: u16) -> String {
        crate::topology::tiers::balancer_server(&self.host, port)
    }
}

/// An instance's readiness check: HTTP 200 from `path` on 127.0.0.1:`port` of its host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Probe {
    pub port: u16,
    pub path: String,
}

/// Compare and decide. `observed` must hold every host of `desired`.
pub fn plan(topology: &str, desired: &[DesiredHost], observed: &BTreeMap<String, Observed>) -> Plan {
    let empty = Observed::default();
    let runs_release_command = release_command_host(desired, observed);
    let hosts = desired
        .iter()
        .map(|d| {
            // The fleet log CA's certificate as its host has it (None: not made yet).
            let log_ca = d.log_tls.as_ref().and_then(|l| observed.get(&l.ca_host)).and_then(|o| o.log_ca.as_deref());
            host_plan(d, observed.get(&d.host).unwrap_or(&empty), log_ca, runs_release_command == Some(d.host.as_str()))
        })
        .collect::<Vec<HostPlan>>();
    let mut hosts = balancer_first_when_new(hosts, desired, observed);
    pause_checks_until_the_balancer_reloads(&mut hosts);
    Plan { topology: topology.to_string(), hosts }
}

/// An instance drained through a load balancer that reloads its balancer later in this plan (a
/// new file: another liveness path, other servers) goes back with its health check paused until
/// that reload (`Drain::pause_checks`): the running balancer may check it at a path it no longer
/// answers, and the reload checks every server afresh. Where the balancer reloads before the
/// instances roll (a load balancer host that is also a Redis or monitor host, which activates
/// before the app hosts, or one host with every role), the instances go back checked.
fn pause_checks_until_the_balancer_reloads(hosts: &mut [HostPlan]) {
    let reloads_balancer = |h: &HostPlan| h.activate.iter().any(|a| matches!(a, Action::Reload { unit } | Action::Restart { unit } if unit == BALANCER_SERVICE));
    for i in 0..hosts.len() {
        let later: BTreeSet<String> = hosts[i + 1..].iter().filter(|h| reloads_balancer(h)).map(|h| h.host.clone()).collect();
        for a in &mut hosts[i].activate {
            if let Action::RollingRestart { drain: Some(d), .. } = a {
                d.pause_checks = d.lbs.iter().any(|l| later.contains(l));
            }
        }
    }
}

/// The host that runs the release command of the release being deployed: the first app host (in
/// the order hosts activate) that switches to it, unless a host ran it for this release already
/// (an apply that stopped after it). None: nothing to run.
fn release_command_host<'a>(desired: &'a [DesiredHost], observed: &BTreeMap<String, Observed>) -> Option<&'a str> {
    let release = desired.iter().filter(|d| d.release_command).find_map(|d| d.release.as_ref())?;
    if observed.values().any(|o| o.released.contains(&release.id)) {
        return None;
    }
    desired
        .iter()
        .filter(|d| d.release_command)
        .find(|d| observed.get(&d.host).is_none_or(|o| o.release.as_deref() != Some(release.id.as_str())))
        .map(|d| d.host.as_str())
}

/// Load balancers activate last (new instances are ready before they are listed), but where
/// nginx serves and no balancer is installed yet (a fleet from before the balancer), they go
/// first: the balancer then lists the running instances and nginx moves to it before any app host
/// restarts one, so those restarts are drained too.
fn balancer_first_when_new(mut hosts: Vec<HostPlan>, desired: &[DesiredHost], observed: &BTreeMap<String, Observed>) -> Vec<HostPlan> {
    let new_balancer = |d: &DesiredHost| {
        d.balancer.is_some()
            && observed.get(&d.host).is_some_and(|o| o.units.get("nginx.service").is_some_and(UnitState::is_active) && o.packages.get("haproxy") != Some(&true))
    };
    let first: Vec<&str> = desired.iter().filter(|d| new_balancer(d)).map(|d| d.host.as_str()).collect();
    hosts.sort_by_key(|h| !first.contains(&h.host.as_str()));
    hosts
}

const RSYSLOG_SERVICE: &str = "rsyslog.service";
use crate::topology::tiers::BALANCER_SERVICE;

/// One host's plan, in named steps: packages and release, files (and what they owe their services),
/// what a killed apply still owed, services, app instances, cleanup.
fn host_plan(d: &DesiredHost, o: &Observed, log_ca: Option<&str>, release_command: bool) -> HostPlan {
    let mut p = HostPlanner { d, o, prepare: Vec::new(), activate: Vec::new(), cleanup: Vec::new() };
    let missing = p.packages_and_release();
    let mut owed = p.files(!missing.is_empty());
    p.admins(&mut owed);
    p.log_certificate(log_ca, &mut owed);
    p.record_owed(&owed);
    owed.add_pending(d, &o.pending);
    if !o.drained.is_empty() {
        owed.add_reload(d, BALANCER_SERVICE);
    }
    // A configuration its service checks before anything reloads it.
    for (unit, command) in &d.checks {
        if owed.touches(unit) {
            p.prepare.push(Action::Validate { unit: unit.clone(), command: command.clone() });
        }
    }
    p.services(&owed);
    p.instances(&mut owed, release_command);
    if p.prepare.iter().any(|a| matches!(a, Action::MarkPending { .. })) || !o.pending.is_empty() {
        p.activate.push(Action::ClearPending);
    }
    p.stop_unwanted_instances();
    p.prune_releases();
    HostPlan { host: d.host.clone(), roles: d.roles.clone(), app: d.is_app(), app_name: d.app_name.clone(), prepare: p.prepare, activate: p.activate, cleanup: p.cleanup }
}

/// What changed files ask of their services.
#[derive(Default)]
struct Owed<'a> {
    restart: Vec<&'a str>,
    reload: Vec<&'a str>,
    /// The app's instances restart one at a time (web, then workers).
    rolling: bool,
    /// The workers restart one at a time.
    workers: bool,
    /// Users changed in these credentials (OnChange::Credentials).
    credentials: Vec<Credentials>,
    /// A unit file of a service (prepare) or of the app (activate) changed.
    daemon_reload_prepare: bool,
    daemon_reload_activate: bool,
}

impl<'a> Owed<'a> {
    fn note(&mut self, on: OnChange) {
        match on {
            OnChange::Nothing => {}
            OnChange::Reload(u) if !self.reload.contains(&u) => self.reload.push(u),
            OnChange::Restart(u) if !self.restart.contains(&u) => self.restart.push(u),
            OnChange::Rolling => self.rolling = true,
            OnChange::Workers => self.workers = true,
            OnChange::Credentials(c) if !self.credentials.contains(&c) => self.credentials.push(c),
            _ => {}
        }
    }

    /// `restart:UNIT`, `reload:UNIT`, `rolling`: what the pending file records.
    fn entries(&self) -> Vec<String> {
        let mut owed: Vec<String> = self.restart.iter().map(|u| format!("restart:{u}")).chain(self.reload.iter().map(|u| format!("reload:{u}"))).collect();
        if self.rolling {
            owed.push("rolling".into());
        }
        if self.workers {
            owed.push("workers".into());
        }
        owed.extend(self.credentials.iter().map(|c| c.pending().to_string()));
        owed
    }

    /// What a killed apply recorded and did not do (only for services this host still has).
    /// A reload of `unit`, where the host runs it.
    fn add_reload(&mut self, d: &'a DesiredHost, unit: &str) {
        if let Some(u) = d.services.iter().find(|s| s.as_str() == unit).map(String::as_str)
            && !self.reload.contains(&u)
        {
            self.reload.push(u);
        }
    }

    fn add_pending(&mut self, d: &'a DesiredHost, pending: &[String]) {
        for p in pending {
            let service = |u: &str| d.services.iter().find(|s| s.as_str() == u).map(String::as_str);
            match p.split_once(':') {
                Some(("restart", u)) => {
                    if let Some(u) = service(u)
                        && !self.restart.contains(&u)
                    {
                        self.restart.push(u);
                    }
                }
                Some(("reload", u)) => {
                    if let Some(u) = service(u)
                        && !self.reload.contains(&u)
                    {
                        self.reload.push(u);
                    }
                }
                _ if p == "rolling" => self.rolling = true,
                _ if p == "workers" => self.workers = true,
                _ => {
                    if let Some(c) = d.credentials.iter().map(|c| c.kind).find(|c| c.pending() == p)
                        && !self.credentials.contains(&c)
                    {
                        self.credentials.push(c);
                    }
                }
            }
        }
    }

    fn touches(&self, unit: &str) -> bool {
        self.reload.contains(&unit) || self.restart.contains(&unit)
    }
}

struct HostPlanner<'a> {
    d: &'a DesiredHost,
    o: &'a Observed,
    prepare: Vec<Action>,
    activate: Vec<Action>,
    cleanup: Vec<Action>,
}

impl<'a> HostPlanner<'a> {
    fn unit(&self, u: &str) -> UnitState {
        self.o.units.get(u).cloned().unwrap_or_default()
    }

    /// Missing packages installed, the release uploaded; returns the packages installed.
    fn packages_and_release(&mut self) -> Vec<String> {
        let (d, o) = (self.d, self.o);
        let missing: Vec<String> = d.packages.iter().filter(|p| !o.packages.get(*p).copied().unwrap_or(false)).cloned().collect();
        if !missing.is_empty() {
            self.prepare.push(Action::InstallPackages { packages: missing.clone() });
        }
        if let Some(r) = &d.release
            && !o.releases.contains(&r.id)
        {
            self.prepare.push(Action::UploadRelease { release: r.id.clone(), bytes: r.bytes, archive: r.archive });
        }
        missing
    }

    /// Changed files written (the app's in activate, with its restarts), files that must not
    /// exist removed; what they owe their services.
    fn files(&mut self, installing: bool) -> Owed<'a> {
        let (d, o) = (self.d, self.o);
        let mut owed = Owed::default();
        for f in &d.files {
            let Some(change) = file_change(f, o.files.get(&f.path).and_then(|x| x.as_ref())) else { continue };
            owed.note(f.on_change);
            let app_file = matches!(f.on_change, OnChange::Rolling | OnChange::Workers);
            if f.unit_file {
                if app_file { owed.daemon_reload_activate = true } else { owed.daemon_reload_prepare = true }
            }
            if app_file { self.activate.push(Action::WriteFile(change)) } else { self.prepare.push(Action::WriteFile(change)) }
        }
        for (path, on) in &d.absent {
            // Installing a package may create the file (Debian's default nginx site): remove it then too.
            if matches!(o.files.get(path), Some(Some(_))) || installing {
                self.prepare.push(Action::RemoveFile { path: path.clone() });
                owed.note(*on);
            }
        }
        if owed.daemon_reload_prepare {
            self.prepare.push(Action::DaemonReload);
        }
        owed
    }

    /// scalectl's admin user of each tier's credentials, made where it is missing; the service
    /// then restarts to load it.
    fn admins(&mut self, owed: &mut Owed<'a>) {
        for c in &self.d.credentials {
            if !self.o.admins.contains(&c.kind) {
                self.prepare.push(Action::EnsureAdmin { credentials: c.kind });
                owed.note(OnChange::Restart(c.kind.service()));
            }
        }
    }

    /// A certificate for RELP over TLS, issued where the host has none that is good: issued by
    /// the fleet's log CA as its host has it now (`log_ca`), for this host's name and key, and
    /// not about to expire. In activate, when every host's packages (openssl) are in; rsyslog
    /// then restarts to use it.
    fn log_certificate(&mut self, log_ca: Option<&str>, owed: &mut Owed<'a>) {
        let Some(want) = &self.d.log_tls else { return };
        let good = self.o.log_tls.as_ref().is_some_and(|c| c.good && c.name == want.name && Some(c.ca_sha256.as_str()) == log_ca);
        if !good {
            self.activate.insert(0, Action::LogCertificate { name: want.name.clone(), ca_host: want.ca_host.clone() });
            owed.note(OnChange::Restart(RSYSLOG_SERVICE));
        }
    }

    /// What this plan's file changes owe, recorded on the host before any file changes.
    fn record_owed(&mut self, owed: &Owed<'_>) {
        let entries = owed.entries();
        if !entries.is_empty() {
            self.prepare.insert(0, Action::MarkPending { entries });
        }
    }

    /// Services other than the app, in the order the desired state lists them.
    fn services(&mut self, owed: &Owed<'_>) {
        for s in &self.d.services {
            let st = self.unit(s);
            // Users changed: live in a running service that is not restarting anyway (the new
            // passwords now, the old ones dropped in cleanup, after every app host rolled).
            for c in self.d.credentials.iter().filter(|c| c.kind.service() == s.as_str() && owed.credentials.contains(&c.kind)) {
                let (credentials, port) = (c.kind, c.port);
                if st.is_active() && !owed.restart.contains(&c.kind.service()) {
                    self.activate.push(Action::Credentials { credentials, phase: CredentialsPhase::Add, port });
                }
                self.cleanup.push(Action::Credentials { credentials, phase: CredentialsPhase::Settle, port });
            }
            if owed.restart.contains(&s.as_str()) || (owed.reload.contains(&s.as_str()) && !st.is_active()) {
                self.activate.push(Action::Restart { unit: s.clone() });
            } else if owed.reload.contains(&s.as_str()) {
                self.activate.push(Action::Reload { unit: s.clone() });
                if !st.is_enabled() {
                    self.activate.push(Action::Enable { unit: s.clone() });
                }
            } else if !st.is_active() || !st.is_enabled() {
                self.activate.push(Action::Start { unit: s.clone(), ready: None });
            }
        }
    }

    /// The app: the release, then new instances (each waited for on its readiness path), then a
    /// rolling restart of running ones.
    fn instances(&mut self, owed: &mut Owed<'_>, release_command: bool) {
        let (d, o) = (self.d, self.o);
        if !d.is_app() {
            return;
        }
        if owed.daemon_reload_activate {
            self.activate.push(Action::DaemonReload);
        }
        if let Some(r) = &d.release
            && o.release.as_deref() != Some(r.id.as_str())
        {
            // With the release uploaded and the app's files (environment, secrets) in place,
            // before this host or any other switches.
            if release_command {
                self.activate.push(Action::ReleaseCommand { release: r.id.clone(), unit: desired::release_command_unit(&d.app_name, &r.id), wait_writer: d.db_writer });
            }
            self.activate.push(Action::SwitchRelease { from: o.release.clone(), to: r.id.clone() });
            owed.rolling = true;
        }
        let mut roll = Vec::new();
        for &port in &d.instances {
            let st = self.unit(&instance_unit(&d.app_name, port));
            if !st.is_active() {
                self.activate.push(Action::Start { unit: instance_unit(&d.app_name, port), ready: Some(Probe { port, path: d.readiness.clone() }) });
            } else if owed.rolling {
                roll.push(port);
            } else if !st.is_enabled() {
                self.activate.push(Action::Enable { unit: instance_unit(&d.app_name, port) });
            }
        }
        if !roll.is_empty() {
            self.activate.push(Action::RollingRestart { ports: roll, readiness: d.readiness.clone(), drain: d.drain.clone() });
        }
        // Then the workers: a release reaches them once the web instances took it.
        let (mut start, mut roll) = (Vec::new(), Vec::new());
        for &i in &d.workers {
            let unit = worker_unit(&d.app_name, i);
            let st = self.unit(&unit);
            if !st.is_active() {
                start.push(unit);
            } else if owed.rolling || owed.workers {
                roll.push(unit);
            } else if !st.is_enabled() {
                self.activate.push(Action::Enable { unit });
            }
        }
        if !start.is_empty() {
            self.activate.push(Action::StartWorkers { units: start, drain_ms: d.worker_drain_ms });
        }
        if !roll.is_empty() {
            self.activate.push(Action::RollWorkers { units: roll, drain_ms: d.worker_drain_ms });
        }
        for e in &d.enabled {
            if !self.unit(e).is_enabled() {
                self.activate.push(Action::Enable { unit: e.clone() });
            }
        }
        // Last, so it runs only once every instance above was ready.
        if let Some(r) = &d.release
            && !o.ready_releases.contains(&r.id)
        {
            self.activate.push(Action::MarkReady { release: r.id.clone() });
        }
    }

    /// Instances no longer wanted (fewer instances, the app role removed, or another app now).
    fn stop_unwanted_instances(&mut self) {
        for (u, st) in &self.o.units {
            if !is_app_unit(u) {
                continue;
            }
            let wanted = match process_of_app(u, &self.d.app_name) {
                Some(Process::Web(port)) => self.d.instances.contains(&port),
                Some(Process::Worker(i)) => self.d.workers.contains(&i),
                None => false,
            };
            if !wanted && (st.is_active() || st.is_enabled()) {
                self.cleanup.push(Action::Stop { unit: u.clone() });
            }
        }
    }

    /// Releases beyond [`KEEP_RELEASES`]: the one running now (the rollback target) and the newest
    /// others stay.
    fn prune_releases(&mut self) {
        let (d, o) = (self.d, self.o);
        let Some(r) = &d.release else { return };
        let mut kept: Vec<&String> = o.releases.iter().filter(|x| **x != r.id).collect();
        let limit = KEEP_RELEASES.saturating_sub(1);
        if kept.len() <= limit {
            return;
        }
        let excess = kept.len() - limit;
        kept.retain(|x| Some(*x) != o.release.as_ref());
        let remove: Vec<String> = kept.into_iter().take(excess).cloned().collect();
        if !remove.is_empty() {
            self.cleanup.push(Action::PruneReleases { remove });
        }
    }
}

/// One process of an app, as its unit names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// `APP@PORT.service` (or scale-api's `.socket`): a web instance.
    Web(u16),
    /// `APP-worker@N.service`: a worker.
    Worker(u32),
}

/// What follows `@` in a unit of the app: a web instance's port (`.service`, or scale-api's
/// `.socket`), or a worker's index (`.service`).
fn process_in(rest: &str, worker: bool) -> Option<Process> {
    if worker {
        return rest.strip_suffix(".service")?.parse().ok().map(Process::Worker);
    }
    rest.strip_suffix(".service").or_else(|| rest.strip_suffix(".socket"))?.parse().ok().map(Process::Web)
}

/// Whether a unit is a process of an app (scale-api, or the program observed beside it).
fn is_app_unit(unit: &str) -> bool {
    unit.split_once('@').is_some_and(|(name, rest)| (name.ends_with("-worker") && process_in(rest, true).is_some()) || process_in(rest, false).is_some())
}

/// The process `unit` is of app `app`, if it is one of its own: `APP@PORT` or `APP-worker@N`
/// (an app named `report-worker` has web units `report-worker@PORT`, not workers of `report`).
fn process_of_app(unit: &str, app: &str) -> Option<Process> {
    let (name, rest) = unit.split_once('@')?;
    if name == app {
        return process_in(rest, false);
    }
    if name.strip_suffix("-worker") == Some(app) {
        return process_in(rest, true);
    }
    None
}

fn file_change(f: &DesiredFile, o: Option<&ObservedFile>) -> Option<FileChange> {
    let sha = sha256_hex(f.content.as_bytes());
    let mk = |change: Change, diff: Option<String>, previous: Option<String>| FileChange {
        path: f.path.clone(),
        mode: f.mode,
        owner: f.owner.clone(),
        group: f.group.clone(),
        change,
        sensitive: f.sensitive,
        diff,
        content_sha256: sha.clone(),
        content: f.content.clone(),
        previous,
    };
    match o {
        None => Some(mk(Change::Create, (!f.sensitive).then(|| unified_diff(&f.path, "", &f.content)), None)),
        Some(o) if o.sha256 != sha => {
            let old = o.content.clone().unwrap_or_default();
            let diff = (!f.sensitive).then(|| unified_diff(&f.path, &old, &f.content));
            Some(mk(Change::Update, diff, o.content.clone()))
        }
        Some(o) if o.mode != f.mode || o.owner != f.owner || o.group != f.group => {
            Some(mk(Change::Metadata, None, o.content.clone()))
        }
        Some(_) => None,
    }
}

/// Configuration lines that set a secret (`requirepass x`, `masterauth x`, `PASSWORD=x`,
/// `api_token: x`: a first word that names one) with their value replaced by `(redacted)`, unless
/// the line is one of `public` (what scalectl renders, shown anyway).
pub fn redact_secret_lines(text: &str, public: &str) -> String {
    let public: std::collections::HashSet<&str> = public.lines().collect();
    text.split_inclusive('\n')
        .map(|line| {
            if public.contains(line.trim_end_matches(['\n', '\r'])) {
                return line.to_string();
            }
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            let key_len = rest.find(|c: char| c.is_whitespace() || c == '=' || c == ':').unwrap_or(rest.len());
            let key = &rest[..key_len];
            let after = &rest[key_len..];
            let value = after.trim_start_matches(['=', ':', ' ', '\t']);
            let secret = ["requirepass", "masterauth"].contains(&key.to_ascii_lowercase().as_str()) || crate::topology::problem::names_a_secret(key);
            if !secret || key.starts_with('#') || value.trim().is_empty() {
                return line.to_string();
            }
            let sep = &after[..after.len() - value.len()];
            let end = if line.ends_with('\n') { "\n" } else { "" };
            format!("{}{key}{sep}(redacted){end}", &line[..indent])
        })
        .collect()
}

pub use crate::render::sha256_hex;

pub(crate) fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

#[cfg(test)]
mod tests;

/// Ports of the desired instances that run now.
fn running_instances(d: &DesiredHost, o: &Observed) -> Vec<u16> {
    d.instances.iter().copied().filter(|p| o.units.get(&instance_unit(&d.app_name, *p)).is_some_and(UnitState::is_active)).collect()
}

/// The app's running processes restarted one at a time: web instances (drained, each waited for
/// on its readiness path), then workers (each finishing its job in hand).
fn roll_running(d: &DesiredHost, o: &Observed) -> Vec<Action> {
    let mut out = Vec::new();
    let ports = running_instances(d, o);
    if !ports.is_empty() {
        out.push(Action::RollingRestart { ports, readiness: d.readiness.clone(), drain: d.drain.clone() });
    }
    let units: Vec<String> = d.workers.iter().map(|i| worker_unit(&d.app_name, *i)).filter(|u| o.units.get(u).is_some_and(UnitState::is_active)).collect();
    if !units.is_empty() {
        out.push(Action::RollWorkers { units, drain_ms: d.worker_drain_ms });
    }
    out
}

/// `scalectl reload`: every running process of the app restarted one at a time, nothing else.
pub fn reload_plan(topology: &str, desired: &[DesiredHost], observed: &BTreeMap<String, Observed>) -> Plan {
    let hosts = desired
        .iter()
        .map(|d| {
            let o = observed.get(&d.host).cloned().unwrap_or_default();
            let activate = roll_running(d, &o);
            HostPlan { host: d.host.clone(), roles: d.roles.clone(), app: d.is_app(), app_name: d.app_name.clone(), prepare: vec![], activate, cleanup: vec![] }
        })
        .collect();
    Plan { topology: topology.to_string(), hosts }
}

/// `scalectl rollback`: every app host back to the release before the running one.
pub fn rollback_plan(topology: &str, desired: &[DesiredHost], observed: &BTreeMap<String, Observed>) -> Result<Plan, String> {
    let mut hosts = Vec::new();
    for d in desired {
        let o = observed.get(&d.host).cloned().unwrap_or_default();
        let mut activate = Vec::new();
        if d.is_app() {
            let current = o.release.clone();
            // Releases are listed oldest first: the previous one is the newest other than current
            // that was ready once (a release that never became ready is never the target); hosts
            // from before the ready markers: the newest other.
            let other = |r: &&String| Some(*r) != current.as_ref();
            let previous = if o.ready_releases.is_empty() {
                o.releases.iter().rev().find(other).cloned()
            } else {
                o.releases.iter().rev().filter(|r| o.ready_releases.contains(r)).find(other).cloned()
            };
            let Some(previous) = previous else {
                return Err(format!("{}: no earlier release that was ready to roll back to (it has {:?}, ready: {:?})", d.host, o.releases, o.ready_releases));
            };
            activate.push(Action::SwitchRelease { from: current, to: previous });
            activate.extend(roll_running(d, &o));
        }
        hosts.push(HostPlan { host: d.host.clone(), roles: d.roles.clone(), app: d.is_app(), app_name: d.app_name.clone(), prepare: vec![], activate, cleanup: vec![] });
    }
    Ok(Plan { topology: topology.to_string(), hosts })
}

/// `scalectl destroy`: stop what scalectl started and remove what it wrote, load balancer first.
/// Debian's packages stay installed; rsyslog (a base service) is only restarted without our file.
pub fn destroy_plan(topology: &str, desired: &[DesiredHost], observed: &BTreeMap<String, Observed>) -> Plan {
    let hosts = desired
        .iter()
        .rev()
        .map(|d| {
            let o = observed.get(&d.host).cloned().unwrap_or_default();
            let mut activate = Vec::new();
            // The app first (services before their sockets: `.service` sorts before `.socket`).
            for (u, st) in &o.units {
                if is_app_unit(u) && (st.is_active() || st.is_enabled()) {
                    activate.push(Action::Stop { unit: u.clone() });
                }
            }
            for u in d.enabled.iter().chain(&d.services) {
                let st = o.units.get(u).cloned().unwrap_or_default();
                if u != "rsyslog.service" && !is_app_unit(u) && (st.is_active() || st.is_enabled()) {
                    activate.push(Action::Stop { unit: u.clone() });
                }
            }
            let mut units_removed = false;
            let mut rsyslog = false;
            for f in &d.files {
                if matches!(o.files.get(&f.path), Some(Some(_))) {
                    units_removed |= f.unit_file;
                    rsyslog |= f.on_change == OnChange::Restart("rsyslog.service");
                    activate.push(Action::RemoveFile { path: f.path.clone() });
                }
            }
            if units_removed {
                activate.push(Action::DaemonReload);
            }
            if rsyslog && o.units.get("rsyslog.service").is_some_and(UnitState::is_active) {
                activate.push(Action::Restart { unit: "rsyslog.service".into() });
            }
            // The log TLS files, once rsyslog no longer uses them (and the CA, on its host).
            if o.log_tls.is_some() || o.log_ca.is_some() {
                let dir = crate::render::LOG_TLS_DIR;
                let f = crate::render::LogTlsFiles::in_dir(dir);
                let (ca_key, ca_cert) = crate::render::LogTlsFiles::authority_in(dir);
                let paths = if o.log_ca.is_some() { vec![f.cert, f.ca, f.key, ca_cert, ca_key] } else { vec![f.cert, f.ca, f.key] };
                activate.extend(paths.into_iter().map(|path| Action::RemoveFile { path }));
            }
            if o.release.is_some() {
                activate.push(Action::RemoveFile { path: current_link(&d.app_name) });
            }
            if !o.releases.is_empty() {
                activate.push(Action::PruneReleases { remove: o.releases.clone() });
            }
            HostPlan { host: d.host.clone(), roles: d.roles.clone(), app: d.is_app(), app_name: d.app_name.clone(), prepare: vec![], activate, cleanup: vec![] }
        })
        .collect();
    Plan { topology: topology.to_string(), hosts }
}
