//! The hosts target: machines with systemd reached over SSH (the lab's containers, or real hosts).
//! Observing is one round trip per host; desired state is rendered with what was observed (cores,
//! for `instances: max`); the plan is `plan::plan` and friends; `exec::apply` carries it out.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::{ExecOptions, Goal, LogLine, LogQuery, Planned, Progress, Status, StatusItem, Target};
use crate::exec::lock::{self, Held, LockInfo};
use crate::exec::{self, ConnectOptions, apply, commands, ssh::{self, Conn}};
use crate::plan::{self, DesiredHost, Observed, Release, TargetPlan, instance_unit, worker_unit};
use crate::render::{self, Facts, SecretValues, Templates};
use crate::topology::Topology;

pub struct Hosts {
    topology: Topology,
    conns: Vec<Conn>,
    parallel: usize,
}

impl Hosts {
    pub fn connect(topology: Topology, opts: &ConnectOptions, progress: Progress<'_>) -> anyhow::Result<Hosts> {
        let (eps, lab) = exec::endpoints(&topology, opts)?;
        if lab {
            progress("lab", &format!("reaching the hosts of lab `{}` through 127.0.0.1 (see `scalectl lab status`)", topology.name));
        }
        let conns = exec::connect_all(&eps, opts.parallel.max(1)).map_err(|e| {
            let hint = if lab { "" } else { "\n(for the local lab, run `scalectl lab up -f FILE` first)" };
            anyhow::anyhow!("{e:#}{hint}")
        })?;
        Ok(Hosts { topology, conns, parallel: opts.parallel.max(1) })
    }

    /// The fleet's lock lives on the host `Topology::lock_host` names (whatever the hosts' order).
    fn lock_host(&self) -> anyhow::Result<&Conn> {
        let host = self.topology.lock_host().context("the topology has no hosts")?;
        self.conns.iter().find(|c| c.endpoint.host == host.name).with_context(|| format!("no connection to {}, the lock's host", host.name))
    }

    /// The app's pools in the database's max_connections with the cores observed, which
    /// `instances: max` follows (validate could only count the cores the topology declares).
    /// Deploying only: status, reload, rollback and destroy change no pool.
    fn pools_fit(&self, observed: &BTreeMap<String, Observed>) -> anyhow::Result<()> {
        let t = &self.topology;
        let mut facts = Facts::with_default_cores(1);
        facts.cores.extend(observed.iter().map(|(h, o)| (h.clone(), o.cores)));
        if let Some((problem, help)) = t.pool_overflow(|h| facts.cores_of(h)) {
            let runs = |h: &&crate::topology::Host| h.has(crate::topology::Role::App) || h.has(crate::topology::Role::Worker);
            let cores: Vec<String> = t.hosts.iter().filter(runs).map(|h| format!("{} on {}", facts.cores_of(h), h.name)).collect();
            anyhow::bail!("with the cores observed ({}), {problem}; {help}", cores.join(", "));
        }
        Ok(())
    }

    /// Observe, then desired state rendered with what was observed.
    fn observe(&self, release: Option<&Release>, secrets: &SecretValues) -> anyhow::Result<(Vec<DesiredHost>, BTreeMap<String, Observed>)> {
        let t = &self.topology;
        let templates = Templates::embedded();
        // File paths and packages do not depend on facts: a first pass with defaults says what to read.
        let mut first = render::render(t, &Facts::with_default_cores(1), &templates)?;
        // Secret files are observed by hash only; their paths do not depend on the values.
        first.extend(render::render_secrets(t, &SecretValues::default(), &templates)?);
        let probe = plan::desired_hosts(t, &Facts::with_default_cores(1), &first, release);
        let observed = exec::observe::observe_all(&self.conns, &probe, self.parallel)?;
        let mut facts = Facts::with_default_cores(1);
        for (h, o) in &observed {
            facts.cores.insert(h.clone(), o.cores);
            // `instances: max` follows the cores observed: their ports must still fit and collide
            // with nothing (validate could only check the cores the topology declares).
            if let Some(host) = t.hosts.iter().find(|x| &x.name == h)
                && let Some(problem) = t.port_conflict(host, t.instances_on(host, facts.cores_of(host)))
            {
                anyhow::bail!("{h}: with the {} cores observed there it runs {} app instances, and then {problem}; set `instances` for that host", o.cores, t.instances_on(host, o.cores));
            }
            // The first load balancer's view of each name (BTreeMap order: by host name).
            for (name, ip) in &o.resolved {
                facts.resolved.entry(name.clone()).or_insert(*ip);
            }
        }
        let mut files = render::render(t, &facts, &templates)?;
        files.extend(render::render_secrets(t, secrets, &templates)?);
        let desired = plan::desired_hosts(t, &facts, &files, release);
        // Units that depend on facts (instances: max) may not have been in the first pass.
        let observed = if desired.iter().zip(&probe).any(|(d, p)| d.instances != p.instances || d.workers != p.workers) {
            exec::observe::observe_all(&self.conns, &desired, self.parallel)?
        } else {
            observed
        };
        Ok((desired, observed))
    }
}

impl Target for Hosts {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn lock(&self, owner: &str, ttl: Duration) -> anyhow::Result<Held> {
        lock::acquire(self.lock_host()?, owner, ttl)
    }

    fn unlock(&self, held: &Held) -> anyhow::Result<()> {
        lock::release(self.lock_host()?, held)
    }

    fn lock_status(&self) -> anyhow::Result<Option<LockInfo>> {
        lock::status(self.lock_host()?)
    }

    fn break_lock(&self, id: &str) -> anyhow::Result<Result<(), LockInfo>> {
        lock::force_release(self.lock_host()?, id)
    }

    fn plan(&self, goal: &Goal<'_>) -> anyhow::Result<Planned> {
        let name = &self.topology.name;
        let none = SecretValues::default();
        let (release, secrets) = match goal {
            Goal::Deploy { release, secrets } => (Some(*release), *secrets),
            _ => (None, &none),
        };
        let (desired, observed) = self.observe(release, secrets)?;
        if let Goal::Deploy { .. } = goal {
            self.pools_fit(&observed)?;
        }
        let plan = match goal {
            Goal::Deploy { .. } => plan::plan(name, &desired, &observed),
            Goal::Reload => plan::reload_plan(name, &desired, &observed),
            Goal::Rollback { .. } => plan::rollback_plan(name, &desired, &observed).map_err(anyhow::Error::msg)?,
            Goal::Destroy => plan::destroy_plan(name, &desired, &observed),
        };
        Ok(Planned { plan: TargetPlan::Hosts(plan), observed: plan::saved::fingerprints(&observed) })
    }

    fn execute(&self, plan: &TargetPlan, opts: &ExecOptions<'_>) -> anyhow::Result<()> {
        let TargetPlan::Hosts(plan) = plan else { anyhow::bail!("a {} plan cannot run on hosts", plan.target()) };
        let o = apply::Options {
            release: opts.release,
            ready_timeout: opts.ready_timeout,
            parallel: self.parallel,
            progress: opts.progress,
            done: opts.done,
            owner: opts.owner.clone(),
            still_held: opts.still_held,
        };
        apply::execute(&self.conns, plan, &o)
    }

    fn database(&self) -> anyhow::Result<super::DbCluster> {
        let t = &self.topology;
        anyhow::ensure!(t.database.is_some(), "topology `{}` has no database section", t.name);
        let members: Vec<&crate::topology::Host> = t.hosts.iter().filter(|h| h.has(crate::topology::Role::Database)).collect();
        let mut errors = Vec::new();
        for h in members {
            let Some(c) = self.conns.iter().find(|c| c.endpoint.host == h.name) else { continue };
            match c.run(&commands::patroni_cluster(&h.address), b"", Duration::from_secs(20)) {
                Ok(o) if o.ok() => return super::DbCluster::from_patroni(&h.name, &o.stdout),
                Ok(o) => errors.push(format!("{}: {}", h.name, o.stderr.trim())),
                Err(e) => errors.push(format!("{}: {e}", h.name)),
            }
        }
        anyhow::bail!("no database host's Patroni answered: {}", errors.join("; "))
    }

    fn db_switchover(&self, leader: &str, candidate: &str) -> anyhow::Result<String> {
        let t = &self.topology;
        let host = t.hosts.iter().find(|h| h.name == leader && h.has(crate::topology::Role::Database)).with_context(|| format!("{leader} is not a database host of the topology"))?;
        let c = exec::conn(&self.conns, &host.name)?;
        let out = c.run_merged(&ssh::sudo_command(&c.endpoint.user, &commands::patroni_switchover(&host.address, leader, candidate)), Duration::from_secs(90))?;
        anyhow::ensure!(out.ok(), "{leader}: Patroni refused the switchover to {candidate}: {}", out.stdout.trim());
        Ok(out.stdout.trim().to_string())
    }

    fn status(&self) -> anyhow::Result<Status> {
        let (desired, observed) = self.observe(None, &SecretValues::default())?;
        let mut items = Vec::new();
        for d in &desired {
            let o = observed.get(&d.host).cloned().unwrap_or_default();
            let app_units: Vec<String> = d.instances.iter().map(|p| instance_unit(&d.app_name, *p)).chain(d.workers.iter().map(|i| worker_unit(&d.app_name, *i))).collect();
            for u in d.services.iter().chain(&app_units).cloned() {
                let state = o.units.get(&u).map(|s| s.active.clone()).unwrap_or_else(|| "unknown".into());
                let release = app_units.contains(&u).then(|| o.release.clone()).flatten();
                items.push(StatusItem { place: d.host.clone(), healthy: state == "active", name: u, state, health: None, release });
            }
        }
        Ok(Status {
            topology: self.topology.name.clone(),
            target: "hosts",
            place_kind: "host",
            healthy: items.iter().all(|i| i.healthy),
            items,
        })
    }

    fn logs(&self, q: &LogQuery, out: &(dyn Fn(&LogLine) + Sync)) -> anyhow::Result<()> {
        let t = &self.topology;
        let app = t.app.name();
        let hosts: Vec<&Conn> = self
            .conns
            .iter()
            .filter(|c| t.hosts.iter().any(|h| h.name == c.endpoint.host && (h.has(crate::topology::Role::App) || h.has(crate::topology::Role::Worker))))
            .filter(|c| q.instance.as_ref().is_none_or(|i| i.starts_with(&format!("{}-", c.endpoint.host))))
            .collect();
        // History: every host at once, then one merge in time order.
        let results = exec::fanout(&hosts, self.parallel, |c| {
            let cmd = ssh::sudo_command(&c.endpoint.user, &commands::journal_history(app, q.since, q.lines));
            let o = c.run(&cmd, b"", Duration::from_secs(60))?;
            anyhow::ensure!(o.ok(), "{}: journalctl failed: {}", c.endpoint.host, o.stderr.trim());
            Ok(o.stdout.lines().filter_map(|l| journal_line(&c.endpoint.host, app, l)).collect::<Vec<_>>())
        });
        let mut all = Vec::new();
        let mut cursors = BTreeMap::new();
        for (c, r) in hosts.iter().zip(exec::collect(results)?) {
            if let Some(newest) = r.iter().max_by_key(|(l, _)| l.time_us) {
                cursors.insert(c.endpoint.host.clone(), newest.1.clone());
            }
            all.extend(r.into_iter().map(|(l, _)| l));
        }
        for l in super::merge_history(all, q) {
            out(&l);
        }
        if !q.follow {
            return Ok(());
        }
        // Then each host's new lines as they come, from just after the last line shown.
        std::thread::scope(|s| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|c| {
                    let after = cursors.get(&c.endpoint.host).cloned();
                    s.spawn(move || {
                        let cmd = commands::journal_follow(app, after.as_deref());
                        c.stream(&ssh::sudo_command(&c.endpoint.user, &cmd), &mut |line| {
                            if let Some((l, _)) = journal_line(&c.endpoint.host, app, line)
                                && q.instance.as_ref().is_none_or(|i| *i == l.instance)
                            {
                                out(&l);
                            }
                            true
                        })
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("a log stream panicked"))??;
            }
            anyhow::Ok(())
        })
    }
}

/// One line of `journalctl -o json` from one of `app`'s units: the line and its cursor, named by
/// its instance (`HOST-PORT`, a worker `HOST-worker-N`). The message is a string, or an array of
/// bytes when it is not valid UTF-8.
fn journal_line(host: &str, app: &str, line: &str) -> Option<(LogLine, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let time_us = v["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
    let ident = v["SYSLOG_IDENTIFIER"].as_str().unwrap_or("");
    let port = ident.strip_prefix(app).and_then(|r| r.strip_prefix('-')).unwrap_or(ident);
    let message = match &v["MESSAGE"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(bytes) => String::from_utf8_lossy(&bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<_>>()).into_owned(),
        _ => return None,
    };
    let cursor = v["__CURSOR"].as_str().unwrap_or("").to_string();
    Some((LogLine { time_us, instance: format!("{host}-{port}"), message }, cursor))
}

#[cfg(test)]
mod tests {
    #[test]
    fn journal_lines_name_their_instance_and_keep_their_cursor() {
        let line = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1764590400123456","SYSLOG_IDENTIFIER":"hello-4001","MESSAGE":"{\"msg\":\"listening\"}"}"#;
        let (l, cursor) = super::journal_line("app-1", "hello", line).unwrap();
        assert_eq!((l.time_us, l.instance.as_str(), l.message.as_str(), cursor.as_str()), (1764590400123456, "app-1-4001", "{\"msg\":\"listening\"}", "s=1;i=2"));
        let binary = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"hello-4000","MESSAGE":[104,105,255]}"#;
        assert_eq!(super::journal_line("app-2", "hello", binary).unwrap().0.message, "hi\u{fffd}");
        assert!(super::journal_line("app-2", "hello", "-- No entries --").is_none());
        // A worker's lines, and an app whose name has a dash of its own.
        let worker = r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"my-app-worker-2","MESSAGE":"job done"}"#;
        assert_eq!(super::journal_line("app-2", "my-app", worker).unwrap().0.instance, "app-2-worker-2");
    }
}
