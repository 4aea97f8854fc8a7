//! Deploy targets: the one abstraction every command that works on a live deployment goes through.
//!
//! A target is a way of running a topology: `hosts` (SSH to machines with systemd, `hosts.rs`) and
//! `docker` (containers through the Docker Engine API, `docker.rs`). Each implements [`Target`]:
//! take and release the fleet lock, plan a [`Goal`] (observe, then the pure planner in `plan/`),
//! execute exactly a plan (through `exec/`), report status. Commands call [`open`] once and never
//! ask which target they have.
//!
//! A third target (Kubernetes, Nomad, ...) adds: a variant to `topology::Target`, a plan type
//! implementing `plan::PlanView` with its variant in `plan::TargetPlan`, an executor in `exec/`, and
//! a struct here implementing the functions of [`Target`]; then one arm in [`open`].

pub mod docker;
pub mod hosts;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::exec::ConnectOptions;
use crate::exec::lock::{Held, LockInfo};
use crate::plan::{Release, TargetPlan};
use crate::render::SecretValues;
use crate::topology::{self, Topology};

/// What a plan is for.
pub enum Goal<'a> {
    /// Converge on the topology with this release.
    Deploy { release: &'a Release, secrets: &'a SecretValues },
    /// Restart every running instance one at a time, health-gated; no configuration change.
    Reload,
    /// Back to the release before the running one, instances replaced one at a time.
    Rollback { secrets: &'a SecretValues },
    /// Stop and remove what scalectl made.
    Destroy,
}

/// A plan and what it was made from: per place (a host, or `engine`), a digest of the observation,
/// which a saved plan keeps so that a later apply can name what changed.
pub struct Planned {
    pub plan: TargetPlan,
    pub observed: BTreeMap<String, String>,
}

/// (place, message): progress for people; the caller decides whether it is shown.
pub use crate::exec::apply::{Done, Progress};

pub struct ExecOptions<'a> {
    /// The release binary, when the plan uploads or builds one.
    pub release: Option<&'a [u8]>,
    /// How long a (re)started instance may take to become ready.
    pub ready_timeout: Duration,
    pub progress: Progress<'a>,
    /// (place, n): n more of the place's planned actions are done.
    pub done: Done<'a>,
    /// Who applies (the lock's owner), for audit logs.
    pub owner: String,
    /// Whether this run still holds the fleet lock (`lock::Held::check`): asked before each step;
    /// an error (`lock::LockLost`) stops the run there, with nothing undone.
    pub still_held: StillHeld<'a>,
}

pub use crate::exec::lock::StillHeld;

/// What runs where, for `scalectl status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub topology: String,
    pub target: &'static str,
    /// What `place` names: `host` or `slot`.
    pub place_kind: &'static str,
    pub healthy: bool,
    pub items: Vec<StatusItem>,
}

/// The database cluster as Patroni reports it (`scalectl db status`): which member leads is
/// Patroni's state, not the topology's.
#[derive(Debug, Serialize, PartialEq)]
pub struct DbCluster {
    pub scope: String,
    /// The member whose Patroni answered.
    pub asked: String,
    pub members: Vec<DbMember>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct DbMember {
    pub name: String,
    pub host: String,
    /// `leader`, `replica`, `sync_standby`...
    pub role: String,
    /// `running`, `streaming`, `creating replica`, `stopped`...
    pub state: String,
    pub timeline: Option<u64>,
    /// Bytes of WAL behind the leader (replicas; None where Patroni does not know).
    pub lag_bytes: Option<u64>,
}

impl DbCluster {
    /// Patroni's `GET /cluster` answer.
    pub fn from_patroni(asked: &str, json: &str) -> anyhow::Result<DbCluster> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("Patroni's /cluster on {asked} answered what is not JSON: {e}"))?;
        let members = v["members"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("Patroni's /cluster on {asked} lists no members"))?
            .iter()
            .map(|m| DbMember {
                name: m["name"].as_str().unwrap_or("?").to_string(),
                host: m["host"].as_str().unwrap_or("?").to_string(),
                role: m["role"].as_str().unwrap_or("?").to_string(),
                state: m["state"].as_str().unwrap_or("?").to_string(),
                timeline: m["timeline"].as_u64(),
                lag_bytes: m["lag"].as_u64(),
            })
            .collect();
        Ok(DbCluster { scope: v["scope"].as_str().unwrap_or_default().to_string(), asked: asked.to_string(), members })
    }

    pub fn leader(&self) -> Option<&DbMember> {
        self.members.iter().find(|m| m.role == "leader")
    }

    /// Where a switchover goes: `to`, which must be a running replica; else the running replica
    /// least behind.
    pub fn switchover_candidate(&self, to: Option<&str>) -> anyhow::Result<&DbMember> {
        let leader = self.leader().ok_or_else(|| anyhow::anyhow!("no member leads: there is nothing to switch over from (Patroni elects a leader by itself)"))?;
        let running = |m: &&DbMember| m.role != "leader" && matches!(m.state.as_str(), "running" | "streaming");
        match to {
            Some(name) if name == leader.name => anyhow::bail!("{name} already leads"),
            Some(name) => {
                let m = self.members.iter().find(|m| m.name == name).ok_or_else(|| {
                    anyhow::anyhow!("{name} is not a member of the database cluster (members: {})", self.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "))
                })?;
                anyhow::ensure!(running(&m), "{name} is {} ({}): only a running replica can take over", m.role, m.state);
                Ok(m)
            }
            None => self
                .members
                .iter()
                .filter(running)
                .min_by_key(|m| m.lag_bytes.unwrap_or(u64::MAX))
                .ok_or_else(|| anyhow::anyhow!("no replica is running: there is no member to switch over to")),
        }
    }

    /// One member leads and every other streams from it.
    pub fn healthy(&self) -> bool {
        let leaders = self.members.iter().filter(|m| m.role == "leader" || m.role == "standby_leader").count();
        leaders == 1 && self.members.iter().all(|m| matches!(m.state.as_str(), "running" | "streaming"))
    }
}

/// One unit on a host, or one container on the engine.
#[derive(Debug, Serialize)]
pub struct StatusItem {
    pub place: String,
    pub name: String,
    pub state: String,
    /// The health check's verdict, where there is one.
    pub health: Option<String>,
    /// The release it runs (app instances).
    pub release: Option<String>,
    pub healthy: bool,
}

/// Which of the app's log lines `logs` shows.
pub struct LogQuery {
    pub since: Duration,
    /// At most this many lines of history per instance's host (or replica).
    pub lines: usize,
    pub follow: bool,
    /// Only this instance (`HOST-PORT`, or a replica's slot); None: every instance.
    pub instance: Option<String>,
}

/// What doctor reads from the target itself, beside Prometheus: per instance name, what only the
/// target knows ([`crate::doctor::TargetInstance`]), and its count of the app's workers where
/// nothing reports them to Prometheus.
pub trait InstanceFacts {
    fn facts(&self, window: Duration) -> anyhow::Result<crate::doctor::FromTarget>;
}

/// Hosts report every instance's address and restarts through Prometheus (targets.json,
/// scalectl-instances): nothing to ask them, and no SSH session is opened for doctor.
struct FromPrometheus;

impl InstanceFacts for FromPrometheus {
    fn facts(&self, _window: Duration) -> anyhow::Result<crate::doctor::FromTarget> {
        Ok(crate::doctor::FromTarget::default())
    }
}

/// Where doctor learns what only the target knows of its instances: the one place besides [`open`]
/// that picks by target.
pub fn instance_facts(t: &Topology) -> anyhow::Result<Box<dyn InstanceFacts>> {
    Ok(match t.target {
        topology::Target::Hosts => Box::new(FromPrometheus),
        topology::Target::Docker => Box::new(docker::Replicas::connect(t.clone())?),
    })
}

/// One line an app instance wrote.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Microseconds since the Unix epoch, as the journal (or engine) recorded it.
    pub time_us: i64,
    pub instance: String,
    pub message: String,
}

pub trait Target {
    fn topology(&self) -> &Topology;
    /// Take the fleet lock, or fail naming who holds it.
    fn lock(&self, owner: &str, ttl: Duration) -> anyhow::Result<Held>;
    /// Release a lock this run holds (another's is left alone).
    fn unlock(&self, held: &Held) -> anyhow::Result<()>;
    fn lock_status(&self) -> anyhow::Result<Option<LockInfo>>;
    /// Remove the lock with this id (`lock release --force`); when the lock there is another, it
    /// stays and is returned.
    fn break_lock(&self, id: &str) -> anyhow::Result<Result<(), LockInfo>>;
    /// Observe, then plan the goal (pure planner).
    fn plan(&self, goal: &Goal<'_>) -> anyhow::Result<Planned>;
    /// Carry out exactly this plan; undo what was done when a step fails.
    fn execute(&self, plan: &TargetPlan, opts: &ExecOptions<'_>) -> anyhow::Result<()>;
    fn status(&self) -> anyhow::Result<Status>;
    /// The app's log lines from every instance, in time order; then, with `follow`, new ones as
    /// they come (until the process is stopped).
    fn logs(&self, q: &LogQuery, out: &(dyn Fn(&LogLine) + Sync)) -> anyhow::Result<()>;
    /// The database cluster as Patroni reports it, asked of the first database host that answers.
    fn database(&self) -> anyhow::Result<DbCluster>;
    /// A planned change of the database's leader from `leader` to `candidate`, through Patroni's
    /// REST API on the leader's host (the caller holds the fleet lock and waits for the result).
    fn db_switchover(&self, leader: &str, candidate: &str) -> anyhow::Result<String>;
}

/// Lines of history from several places, merged in time order and filtered to one instance.
pub fn merge_history(mut lines: Vec<LogLine>, q: &LogQuery) -> Vec<LogLine> {
    lines.retain(|l| q.instance.as_ref().is_none_or(|i| *i == l.instance));
    lines.sort_by_key(|l| l.time_us);
    lines
}

/// The target the topology names, connected.
pub fn open(t: Topology, connect: &ConnectOptions, progress: Progress<'static>) -> anyhow::Result<Box<dyn Target>> {
    Ok(match t.target {
        topology::Target::Hosts => Box::new(hosts::Hosts::connect(t, connect, progress)?),
        topology::Target::Docker => Box::new(docker::Engine::connect(t, progress)?),
    })
}

/// Take the lock; a lock left by a process of this machine that no longer runs is taken over
/// (its owner is returned, for the caller to say so).
pub fn acquire(t: &dyn Target, owner: &str, ttl: Duration) -> anyhow::Result<(Held, Option<String>)> {
    match t.lock(owner, ttl) {
        Ok(h) => Ok((h, None)),
        Err(e) => {
            if let Some(info) = t.lock_status()?
                && stale_here(&info.owner)
                && t.break_lock(&info.id)?.is_ok()
            {
                return Ok((t.lock(owner, ttl)?, Some(info.owner)));
            }
            Err(e)
        }
    }
}

/// The owner names this machine and a pid that is gone.
fn stale_here(owner: &str) -> bool {
    let me = crate::exec::lock::owner();
    let machine = |o: &str| o.rsplit_once("/pid").map(|(m, _)| m.to_string());
    let pid = owner.rsplit_once("/pid").and_then(|(_, p)| p.parse::<i32>().ok());
    match (machine(owner), machine(&me), pid) {
        (Some(a), Some(b), Some(pid)) if a == b => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH),
        _ => false,
    }
}
