//! The docker target: containers on one Docker engine, through its API. Observing reads what
//! carries the topology's ownership label; the plan is `plan::docker`; `exec::docker` carries it
//! out, and `exec::docker_lock` keeps two runs apart.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ExecOptions, Goal, LogLine, LogQuery, Planned, Progress, Status, StatusItem, Target};
use crate::exec::docker as engine;
use crate::exec::docker_lock;
use crate::exec::lock::{Held, LockInfo};
use crate::plan::docker::{self as dplan, DockerObserved};
use crate::plan::{Release, TargetPlan, saved};
use crate::render::{SecretValues, Templates};
use crate::topology::Topology;

pub struct Engine {
    topology: Topology,
    rt: tokio::runtime::Runtime,
    docker: bollard::Docker,
    facts: dplan::Engine,
    progress: Progress<'static>,
}

impl Engine {
    pub fn connect(topology: Topology, progress: Progress<'static>) -> anyhow::Result<Engine> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (docker, facts) = rt.block_on(async {
            let docker = engine::connect(&topology).await?;
            let facts = engine::facts(&docker).await?;
            anyhow::Ok((docker, facts))
        })?;
        Ok(Engine { topology, rt, docker, facts, progress })
    }

    fn observe(&self) -> anyhow::Result<DockerObserved> {
        self.rt.block_on(engine::observe(&self.docker, &self.topology))
    }

    /// The plan that converges on `release`.
    fn deploy(&self, release: &Release, secrets: &SecretValues, mut o: DockerObserved, rolling_back: bool) -> anyhow::Result<TargetPlan> {
        let t = &self.topology;
        let templates = Templates::embedded();
        let desired = dplan::Desired { rolling_back, ..dplan::desired(t, release, secrets, &self.facts, &templates)? };
        o.mark_images(&desired.image, Some(&desired.tools_image));
        let plan = dplan::plan(dplan::Inputs { topology: t, release, desired, templates: &templates }, &o)?;
        Ok(TargetPlan::Docker(plan))
    }
}

/// The engine's own view of the replicas, for doctor: their addresses and crash restarts.
pub struct Replicas {
    topology: Topology,
    rt: tokio::runtime::Runtime,
    docker: bollard::Docker,
}

impl Replicas {
    pub fn connect(topology: Topology) -> anyhow::Result<Replicas> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let docker = rt.block_on(engine::connect(&topology))?;
        Ok(Replicas { topology, rt, docker })
    }
}

impl super::InstanceFacts for Replicas {
    fn facts(&self, window: Duration) -> anyhow::Result<crate::doctor::FromTarget> {
        let facts = self.rt.block_on(engine::replica_facts(&self.docker, &self.topology, window))?;
        let instances = facts.into_iter().map(|(name, f)| (name, crate::doctor::TargetInstance { upstream: f.upstream, crash_restarts: f.crash_restarts })).collect();
        // The worker containers the topology wants (by slot), running or not.
        let workers = match &self.topology.app.workers {
            Some(_) => {
                let o = self.rt.block_on(engine::observe(&self.docker, &self.topology))?;
                let cores = self.rt.block_on(engine::facts(&self.docker))?.cores;
                let slots = dplan::worker_slots(&self.topology, cores);
                let running = |slot: &String| o.containers.iter().any(|c| c.role == dplan::ROLE_WORKER && &c.slot == slot && c.running());
                let up = slots.iter().filter(|s| running(s)).count() as u32;
                Some(crate::doctor::TargetWorkers { wanted: slots.len() as u32, running: up, stopped: slots.len() as u32 - up })
            }
            None => None,
        };
        Ok(crate::doctor::FromTarget { instances, workers })
    }
}

impl Target for Engine {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn lock(&self, owner: &str, ttl: Duration) -> anyhow::Result<Held> {
        self.rt.block_on(docker_lock::acquire(&self.docker, &self.topology, owner, ttl))
    }

    fn unlock(&self, held: &Held) -> anyhow::Result<()> {
        self.rt.block_on(docker_lock::release(&self.docker, &self.topology.name, held))
    }

    fn lock_status(&self) -> anyhow::Result<Option<LockInfo>> {
        Ok(self.rt.block_on(docker_lock::status(&self.docker, &self.topology.name))?.map(|(_, info)| info))
    }

    fn break_lock(&self, id: &str) -> anyhow::Result<Result<(), LockInfo>> {
        self.rt.block_on(docker_lock::force_release(&self.docker, &self.topology.name, id))
    }

    fn plan(&self, goal: &Goal<'_>) -> anyhow::Result<Planned> {
        let o = self.observe()?;
        let observed = BTreeMap::from([("engine".to_string(), saved::fingerprint(&o))]);
        let plan = match goal {
            Goal::Deploy { release, secrets } => match self.topology.app.program.as_ref().and_then(|p| p.image.as_ref()) {
                // The image the reference names now is the release.
                Some(image) => {
                    let say = |m: &str| (self.progress)("docker", m);
                    let id = self.rt.block_on(engine::resolve_image(&self.docker, image, &say))?;
                    self.deploy(&Release::of_image(&id), secrets, o, false)?
                }
                None => self.deploy(release, secrets, o, false)?,
            },
            Goal::Rollback { secrets } => {
                let previous = dplan::previous_release(&self.topology, &o).map_err(anyhow::Error::msg)?;
                self.deploy(&previous, secrets, o, true)?
            }
            Goal::Reload => TargetPlan::Docker(dplan::reload_plan(&self.topology, &o, &Templates::embedded())?),
            Goal::Destroy => TargetPlan::Docker(dplan::destroy_plan(&self.topology, &o)),
        };
        Ok(Planned { plan, observed })
    }

    fn execute(&self, plan: &TargetPlan, opts: &ExecOptions<'_>) -> anyhow::Result<()> {
        let TargetPlan::Docker(plan) = plan else { anyhow::bail!("a {} plan cannot run on a docker engine", plan.target()) };
        let say = |m: &str| (opts.progress)("docker", m);
        let done = || (opts.done)("docker", 1);
        let o = engine::Options { release: opts.release, ready_timeout: opts.ready_timeout, progress: &say, done: &done, still_held: opts.still_held };
        self.rt.block_on(engine::execute(&self.docker, &self.topology, plan, &o))
    }

    fn database(&self) -> anyhow::Result<super::DbCluster> {
        anyhow::bail!("`scalectl db` asks the members over SSH (`target: hosts`); on docker, ask Patroni in a member: `docker exec <the db-1 container> curl -s http://127.0.0.1:8008/cluster`")
    }

    fn db_switchover(&self, _leader: &str, _candidate: &str) -> anyhow::Result<String> {
        anyhow::bail!("`scalectl db switchover` runs on `target: hosts`; on docker, use Patroni's API in a member (POST /switchover with its REST user)")
    }

    fn status(&self) -> anyhow::Result<Status> {
        let containers = self.observe()?.containers;
        let mut items: Vec<StatusItem> = containers
            .iter()
            // A release command's record is a stopped container by design.
            .filter(|c| c.role != dplan::ROLE_RELEASE)
            .map(|c| StatusItem {
                place: c.slot.clone(),
                name: c.name.clone(),
                state: c.state.clone(),
                health: c.health.clone(),
                release: (c.role == "app" || c.role == dplan::ROLE_WORKER).then(|| c.image.rsplit_once(':').map(|(_, tag)| tag.to_string())).flatten(),
                healthy: c.running() && c.health.as_deref().is_none_or(|h| h == "healthy"),
            })
            .collect();
        // By slot, as people look for them (container names end in a hash).
        items.sort_by(|a, b| (&a.place, &a.name).cmp(&(&b.place, &b.name)));
        Ok(Status {
            topology: self.topology.name.clone(),
            target: "docker",
            place_kind: "slot",
            healthy: !items.is_empty() && items.iter().all(|i| i.healthy),
            items,
        })
    }

    fn logs(&self, q: &LogQuery, out: &(dyn Fn(&LogLine) + Sync)) -> anyhow::Result<()> {
        let o = self.observe()?;
        let replicas: Vec<(String, String)> = o
            .running_processes()
            .filter(|c| q.instance.as_ref().is_none_or(|i| *i == c.slot))
            .map(|c| (c.name.clone(), c.slot.clone()))
            .collect();
        let docker = &self.docker;
        self.rt.block_on(async {
            let mut all = Vec::new();
            for (name, slot) in &replicas {
                engine::replica_logs(docker, name, q.since, q.lines, false, &mut |time_us, message| {
                    all.push(LogLine { time_us, instance: slot.clone(), message })
                })
                .await?;
            }
            for l in super::merge_history(all, q) {
                out(&l);
            }
            if q.follow {
                // New lines only: the engine's `since` is in seconds, so start from now.
                let streams = replicas.iter().map(|(name, slot)| async move {
                    engine::replica_logs(docker, name, Duration::ZERO, 0, true, &mut |time_us, message| out(&LogLine { time_us, instance: slot.clone(), message })).await
                });
                for r in futures_util::future::join_all(streams).await {
                    r?;
                }
            }
            anyhow::Ok(())
        })
    }
}
