//! The docker target's plans as steps: converge on the desired specs (rolling replica by replica
//! behind the load balancer), reload, rollback and destroy.

use std::collections::{BTreeMap, BTreeSet};

use super::desired::{drain_stop_timeout, get, rendered, worker_stop_timeout};
use super::*;
use crate::plan::{CredentialsPhase, KEEP_RELEASES, LiveCredentials, unified_diff};
use crate::render::users_file;
use crate::render::{RenderError, Templates};

/// What the planner needs besides the observation.
pub struct Inputs<'a> {
    pub topology: &'a Topology,
    pub release: &'a Release,
    pub desired: Desired,
    pub templates: &'a Templates,
}

/// The plan that takes the engine from `o` to the desired containers.
pub fn plan(i: Inputs<'_>, o: &DockerObserved) -> Result<DockerPlan, RenderError> {
    let (t, d) = (i.topology, &i.desired);
    let mut p = Steps { o, activate: Vec::new(), cleanup: Vec::new() };
    p.images_network_volumes(&i);
    let (before, after): (Vec<&ContainerSpec>, Vec<&ContainerSpec>) = d.services.iter().partition(|c| before_app(&c.slot));
    for spec in &before {
        p.service(spec);
    }
    // Every tier's users changed live (Redis'): the new passwords added before the replicas roll.
    let settle: Vec<Step> = t.tiers_on_one_engine().iter().filter_map(|tier| tier.credentials).filter_map(|c| p.credentials(c, d.service(c.kind.container())?)).collect();
    // A rollback returns to a release whose command ran when it was deployed.
    if let Some(spec) = d.release_command.as_ref().filter(|_| !d.rolling_back) {
        p.release_command(spec);
    }
    p.replicas(&i)?;
    p.workers(&i);
    for spec in &after {
        p.service(spec);
    }
    // Every replica and the exporter now have the new password: the old one goes.
    p.activate.extend(settle);
    let wanted: BTreeSet<&str> = d.services.iter().map(|c| c.slot.as_str()).collect();
    // A release command's record goes with its release (whose image could not be removed beside
    // it), once another release's command ran; a rollback keeps them.
    let release_done = d.release_command.as_ref().map(|r| r.image.as_str());
    for c in o.containers.iter().filter(|c| c.role == ROLE_RELEASE && !d.rolling_back && Some(c.image.as_str()) != release_done) {
        p.cleanup.push(Step::Remove { name: c.name.clone(), reason: format!("the release command's record of {}", c.image) });
    }
    for c in o.containers.iter().filter(|c| c.role != "app" && c.role != ROLE_WORKER && c.role != ROLE_RELEASE && !wanted.contains(c.slot.as_str())) {
        if c.running() {
            p.activate.push(Step::Stop { name: c.name.clone(), timeout_s: 10 });
        }
        p.cleanup.push(Step::Remove { name: c.name.clone(), reason: format!("{} is no longer in the topology", c.slot) });
    }
    prune_images(o, &d.image, Some(d.tools_image.as_str()), &mut p.cleanup);
    Ok(DockerPlan { topology: t.name.clone(), network: network_name(t), activate: p.activate, cleanup: p.cleanup })
}

/// The steps of one plan, in named parts.
struct Steps<'a> {
    o: &'a DockerObserved,
    activate: Vec<Step>,
    cleanup: Vec<Step>,
}

impl Steps<'_> {
    fn exact(&self, spec: &ContainerSpec) -> Option<&ObservedContainer> {
        self.o.containers.iter().find(|c| c.name == spec.name)
    }

    /// The release command, unless it ran to success for this release already: a container of
    /// the release image that exited 0 (once per release, as on hosts: another environment does not
    /// run the migration again). A container created and never started is no record.
    fn release_command(&mut self, spec: &ContainerSpec) {
        let done = self.o.containers.iter().any(|c| c.role == ROLE_RELEASE && c.image == spec.image && c.state == "exited" && c.exit_code == Some(0));
        if !done {
            self.activate.push(Step::RunRelease { spec: spec.clone() });
        }
    }

    /// The images to build, the network and volumes to create.
    fn images_network_volumes(&mut self, i: &Inputs<'_>) {
        let (t, d, o) = (i.topology, &i.desired, self.o);
        if !o.image_present {
            self.activate.push(Step::BuildImage {
                tag: d.image.clone(),
                release: i.release.id.clone(),
                bytes: i.release.bytes,
                dockerfile: d.dockerfile.clone(),
                archive: i.release.archive,
                from_image: i.release.image.clone(),
            });
        }
        if !o.log_image_present {
            self.activate.push(Step::BuildLogImage { tag: d.tools_image.clone(), dockerfile: d.tools_dockerfile.clone() });
        }
        if !o.network {
            self.activate.push(Step::CreateNetwork { name: network_name(t) });
        }
        for v in d.volumes().into_iter().filter(|v| !o.volumes.iter().any(|have| have == v)) {
            self.activate.push(Step::CreateVolume { name: v.to_string() });
        }
    }

    /// A service (one container per slot): keep it, start it, or stop the old and create the new.
    fn service(&mut self, spec: &ContainerSpec) {
        let kept = match self.exact(spec) {
            Some(c) if c.running() => true,
            Some(_) => {
                self.activate.push(Step::Start { name: spec.name.clone(), wait_healthy: spec.health.is_some() });
                true
            }
            None => false,
        };
        for old in in_slot(self.o, &spec.slot).filter(|c| c.name != spec.name) {
            if old.running() && !kept {
                self.activate.push(Step::Stop { name: old.name.clone(), timeout_s: spec.stop_timeout_s });
            }
            self.cleanup.push(Step::Remove { name: old.name.clone(), reason: format!("replaced by {}", spec.name) });
        }
        if !kept {
            self.activate.push(Step::Create { spec: spec.clone() });
        }
    }

    /// A new password in a tier that changes its users live (Redis), in a container that is
    /// kept: the new passwords added now (before any replica has them); returns the step that
    /// settles them, for the end of the plan. Also when an earlier apply added and never settled.
    /// A container created by this plan starts with the users file.
    fn credentials(&mut self, live: LiveCredentials, spec: &ContainerSpec) -> Option<Step> {
        let users = spec.files.iter().find(|f| f.live && f.path == users_file(live.kind))?;
        let o = self.o;
        let c = o.containers.iter().find(|c| c.name == spec.name)?;
        let step = |phase, content: &str, sha: &str| Step::Credentials {
            credentials: live.kind,
            container: c.name.clone(),
            phase,
            port: live.port,
            content: content.to_string(),
            content_sha256: sha.to_string(),
        };
        // A stopped container (started above) is not read: its file may be from before.
        let now = o.live_files.get(&format!("{}:{}", c.name, users.path)).filter(|_| c.running());
        let add = now != Some(&users.content);
        if add {
            self.activate.push(step(CredentialsPhase::Add, &users.content, &users.content_sha256));
        }
        (add || o.credentials_pending.contains(&live.kind)).then(|| step(CredentialsPhase::Settle, "", ""))
    }

    /// The replicas, behind the balancer and Prometheus, which see the `current` ones: new slots
    /// (scaling out) first and one rewrite (the balancer reloads once for them); then each changed
    /// slot rolled in turn (create, healthy, the slot's server drained, the old replica stopped,
    /// the server pointed at the new one and back: no reload); then slots no longer wanted
    /// (scaling in) drained, one rewrite, then stopped.
    fn replicas(&mut self, i: &Inputs<'_>) -> Result<(), RenderError> {
        let (t, d, o) = (i.topology, &i.desired, self.o);
        let running = |c: &ContainerSpec| self.exact(c).is_some_and(ObservedContainer::running).then(|| c.name.clone());
        let mut live = LiveUpstream::new(t, i.templates, o, d.service("lb").and_then(running), d.service("prometheus").and_then(running));
        let app_slots: BTreeSet<&str> = d.app.iter().map(|c| c.slot.as_str()).collect();
        let mut current = o.serving();
        // What each new replica records as the release before it: the image the slot runs now if
        // it differs, else what that one recorded (scaling out: any running replica's).
        let previous = |spec: &ContainerSpec| -> String {
            let running = |c: &&ObservedContainer| c.role == "app" && c.running();
            let now = in_slot(o, &spec.slot).find(running).or_else(|| o.containers.iter().find(running));
            match now {
                Some(c) if c.image != spec.image => c.image.clone(),
                Some(c) => c.previous.clone(),
                None => String::new(),
            }
        };
        let with_previous = |spec: &ContainerSpec| ContainerSpec { previous: previous(spec), ..spec.clone() };
        // New check settings (another liveness path) reach the balancer once, after the roll;
        // until then each replica put back goes unchecked, since the running balancer would
        // check it with the settings of the replicas it replaces (commands::Checks).
        let finally: Vec<(String, String)> = d.app.iter().map(|c| (c.slot.clone(), c.name.clone())).collect();
        live.hold_settings(&finally)?;
        let mut added = false;
        for spec in d.app.iter().filter(|s| in_slot(o, &s.slot).all(|c| !c.running() && c.name != s.name)) {
            self.activate.push(Step::Create { spec: with_previous(spec) });
            current.insert(spec.slot.clone(), spec.name.clone());
            added = true;
        }
        if added {
            live.rewrite(&current, &mut self.activate)?;
        }
        for spec in &d.app {
            let olds: Vec<&ObservedContainer> = in_slot(o, &spec.slot).filter(|c| c.name != spec.name).collect();
            let mut serve = false;
            match self.exact(spec) {
                Some(c) if !c.running() => {
                    self.activate.push(Step::Start { name: spec.name.clone(), wait_healthy: true });
                    current.insert(spec.slot.clone(), spec.name.clone());
                }
                Some(_) => {}
                None if olds.iter().any(|c| c.running()) => {
                    self.activate.push(Step::Create { spec: with_previous(spec) });
                    let old = current.insert(spec.slot.clone(), spec.name.clone());
                    self.activate.extend(old.and_then(|old| live.drain(&spec.slot, &old)));
                    serve = true;
                }
                None => {} // created above as a new slot
            }
            for old in olds {
                if old.running() {
                    self.activate.push(Step::Stop { name: old.name.clone(), timeout_s: spec.stop_timeout_s });
                }
                self.cleanup.push(Step::Remove { name: old.name.clone(), reason: format!("replaced by {}", spec.name) });
            }
            if serve {
                self.activate.extend(live.serve(&spec.slot, &spec.name));
                live.rewrite(&current, &mut self.activate)?;
            }
        }
        let gone: Vec<&ObservedContainer> = o.containers.iter().filter(|c| c.role == "app" && !app_slots.contains(c.slot.as_str())).collect();
        for c in gone.iter().filter(|c| c.running() && current.get(&c.slot) == Some(&c.name)) {
            self.activate.extend(live.drain(&c.slot, &c.name));
        }
        current.retain(|slot, _| app_slots.contains(slot.as_str()));
        live.held = false;
        live.rewrite(&current, &mut self.activate)?;
        for c in &gone {
            if c.running() {
                self.activate.push(Step::Stop { name: c.name.clone(), timeout_s: drain_stop_timeout(t) });
            }
            self.cleanup.push(Step::Remove { name: c.name.clone(), reason: format!("{} is no longer in the topology", c.slot) });
        }
        Ok(())
    }

    /// The workers, after the replicas, one slot at a time: a changed slot's new worker is
    /// created (and seen still running) before the old one is stopped with its drain time, so a
    /// release never leaves a slot's old and new workers both missing; slots no longer wanted
    /// (fewer workers, or none) are stopped with theirs.
    fn workers(&mut self, i: &Inputs<'_>) {
        let (t, d, o) = (i.topology, &i.desired, self.o);
        for spec in &d.workers {
            match self.exact(spec) {
                Some(c) if !c.running() => self.activate.push(Step::Start { name: spec.name.clone(), wait_healthy: false }),
                Some(_) => {}
                None => self.activate.push(Step::Create { spec: spec.clone() }),
            }
            for old in in_slot(o, &spec.slot).filter(|c| c.name != spec.name) {
                if old.running() {
                    self.activate.push(Step::Stop { name: old.name.clone(), timeout_s: spec.stop_timeout_s });
                }
                self.cleanup.push(Step::Remove { name: old.name.clone(), reason: format!("replaced by {}", spec.name) });
            }
        }
        let slots: BTreeSet<&str> = d.workers.iter().map(|c| c.slot.as_str()).collect();
        for c in o.containers.iter().filter(|c| c.role == ROLE_WORKER && !slots.contains(c.slot.as_str())) {
            if c.running() {
                self.activate.push(Step::Stop { name: c.name.clone(), timeout_s: worker_stop_timeout(t) });
            }
            self.cleanup.push(Step::Remove { name: c.name.clone(), reason: format!("{} is no longer in the topology", c.slot) });
        }
    }
}

/// Release images beyond the newest [`KEEP_RELEASES`] (the deployed one counted first), as the
/// hosts target keeps its release directories, and log images other than the wanted one; an
/// image a remaining container uses stays.
fn prune_images(o: &DockerObserved, deployed: &str, log_image: Option<&str>, cleanup: &mut Vec<Step>) {
    let removed: BTreeSet<&str> = cleanup.iter().filter_map(|s| if let Step::Remove { name, .. } = s { Some(name.as_str()) } else { None }).collect();
    let in_use: BTreeSet<&str> = o.containers.iter().filter(|c| !removed.contains(c.name.as_str())).map(|c| c.image.as_str()).collect();
    for image in o.images.iter().filter(|i| i.role == ROLE_LOGS && Some(i.tag.as_str()) != log_image) {
        if !in_use.contains(image.tag.as_str()) {
            cleanup.push(Step::RemoveImage { tag: image.tag.clone(), reason: "a log image no longer used".into() });
        }
    }
    // Kept: the deployed release, the next rollback's target (what the replicas run now when a
    // new release replaces it, else what they recorded as their previous), then the newest others.
    let mut keep: Vec<&str> = vec![deployed];
    for c in o.running_replicas() {
        let target = if c.image != deployed { c.image.as_str() } else { c.previous.as_str() };
        if !target.is_empty() && !keep.contains(&target) {
            keep.push(target);
        }
    }
    let mut older: Vec<&ObservedImage> = o.images.iter().filter(|i| i.role != ROLE_LOGS && !keep.contains(&i.tag.as_str())).collect();
    older.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
    for image in older.into_iter().skip(KEEP_RELEASES.saturating_sub(keep.len())) {
        if !in_use.contains(image.tag.as_str()) {
            cleanup.push(Step::RemoveImage { tag: image.tag.clone(), reason: format!("older than the last {KEEP_RELEASES} releases") });
        }
    }
}

/// The live files that follow the set of replicas, in the containers that run now: the
/// balancer's configuration (it names each slot's replica) and Prometheus' targets; and nginx's
/// site, which names only the balancer and changes with the topology alone. The balancer's
/// servers are drained and pointed at new replicas through its runtime API ([`Step::Drain`],
/// [`Step::Serve`]); its file is rewritten to match, and reloaded only when the set of slots
/// changes (Prometheus rereads file_sd by itself).
struct LiveUpstream<'a> {
    t: &'a Topology,
    templates: &'a Templates,
    /// (container, content it has now)
    lb: Option<(String, String)>,
    balancer: Option<(String, String)>,
    prometheus: Option<(String, String)>,
    /// The balancer's file is left as it is (and not reloaded) until the last rewrite, and the
    /// replicas put back meanwhile go unchecked ([`LiveUpstream::hold_settings`]).
    held: bool,
}

impl<'a> LiveUpstream<'a> {
    fn new(t: &'a Topology, templates: &'a Templates, o: &DockerObserved, lb: Option<String>, prometheus: Option<String>) -> Self {
        let now = |name: String, path: &str| {
            let content = o.live_files.get(&format!("{name}:{path}")).cloned().unwrap_or_default();
            (name, content)
        };
        // The balancer that runs now, whatever its spec: a new one replaces it after the
        // replicas, and until then this one serves them.
        let balancer = o.containers.iter().find(|c| c.slot == BALANCER_SLOT && c.state == "running").map(|c| c.name.clone());
        LiveUpstream {
            t,
            templates,
            lb: lb.map(|n| now(n, NGINX_CONF)),
            balancer: balancer.map(|n| now(n, BALANCER_CONF)),
            prometheus: prometheus.map(|n| now(n, TARGETS_JSON)),
            held: false,
        }
    }

    /// Hold the balancer's file when the one for the `finally` replicas has other health-check
    /// settings than the running one (another liveness path): the replicas rolled meanwhile
    /// answer the new path only, and the old replicas the old one only, so no one set of checks
    /// suits both until the last old replica is gone.
    fn hold_settings(&mut self, finally: &[(String, String)]) -> Result<(), RenderError> {
        if let Some((_, now)) = &self.balancer {
            let files = rendered(self.t, finally, self.templates)?;
            self.held = balancer_checks(now) != balancer_checks(get(&files, "haproxy/haproxy.cfg"));
        }
        Ok(())
    }

    /// Point the files at exactly these replicas (slot -> container). The balancer reloads its
    /// file when anything but its servers' addresses changed (servers added or removed, its
    /// settings); a server pointed at another replica its runtime API already has ([`Step::Serve`]).
    fn rewrite(&mut self, current: &BTreeMap<String, String>, activate: &mut Vec<Step>) -> Result<(), RenderError> {
        let replicas: Vec<(String, String)> = current.iter().map(|(s, n)| (s.clone(), n.clone())).collect();
        let files = rendered(self.t, &replicas, self.templates)?;
        if let Some((container, now)) = self.balancer.as_mut().filter(|_| !self.held) {
            let before = now.clone();
            live_write(container, BALANCER_CONF, now, get(&files, "haproxy/haproxy.cfg"), balancer_check(), None, activate);
            if balancer_settings(&before) != balancer_settings(now) {
                activate.push(Step::ReloadBalancer { container: container.clone() });
            }
        }
        if let Some((container, now)) = &mut self.lb {
            let wait = Some(drain_stop_timeout(self.t));
            live_write(container, NGINX_CONF, now, get(&files, &format!("nginx/{}.conf", self.t.name)), nginx_reload(), wait, activate);
        }
        if let Some((container, now)) = &mut self.prometheus {
            live_write(container, TARGETS_JSON, now, get(&files, "prometheus/targets.json"), Vec::new(), None, activate);
        }
        Ok(())
    }

    /// The slot's server (serving `replica`) out of the running balancer, its requests in
    /// flight answered.
    fn drain(&self, slot: &str, replica: &str) -> Option<Step> {
        self.balancer.as_ref().map(|(container, _)| Step::Drain {
            container: container.clone(),
            backend: crate::topology::tiers::balancer_backend(&self.t.name),
            server: crate::topology::tiers::balancer_server(slot, self.t.app.port),
            replica: replica.to_string(),
            wait_s: drain_stop_timeout(self.t),
        })
    }

    /// The slot's server pointed at `replica` and back in the running balancer.
    fn serve(&self, slot: &str, replica: &str) -> Option<Step> {
        self.balancer.as_ref().map(|(container, _)| Step::Serve {
            container: container.clone(),
            backend: crate::topology::tiers::balancer_backend(&self.t.name),
            server: crate::topology::tiers::balancer_server(slot, self.t.app.port),
            replica: replica.to_string(),
            wait_s: drain_stop_timeout(self.t),
            pause_checks: self.held,
        })
    }
}

/// The balancer's file with each server's address left out: what only a reload changes (a server
/// line keeps its name; `server NAME ADDRESS ...`).
fn balancer_settings(file: &str) -> Vec<String> {
    file.lines()
        .map(|l| match l.trim_start().strip_prefix("server ") {
            Some(rest) => {
                let mut words = rest.split_whitespace();
                let name = words.next().unwrap_or_default();
                words.next();
                format!("server {name} {}", words.collect::<Vec<_>>().join(" "))
            }
            None => l.to_string(),
        })
        .collect()
}

/// The balancer's health-check settings (its check path and timing): what [`LiveUpstream::hold_settings`]
/// compares. A change of its servers alone (scaling) is not one: the replicas answer the same path.
fn balancer_checks(file: &str) -> Vec<&str> {
    file.lines().map(str::trim).filter(|l| ["option httpchk", "http-check", "default-server"].iter().any(|k| l.starts_with(k))).collect()
}

/// What the balancer's file is checked with before anything reloads it.
fn balancer_check() -> Vec<Vec<String>> {
    vec![vec!["haproxy".into(), "-c".into(), "-q".into(), "-f".into(), BALANCER_CONF.into()]]
}

/// A step that replaces `path` in `container` when `content` differs from what it has `now`
/// (which then becomes `content`), running `commands` after (and waiting for the nginx workers
/// from before them, at most `old_workers_wait_s`).
fn live_write(container: &str, path: &str, now: &mut String, content: &str, commands: Vec<Vec<String>>, old_workers_wait_s: Option<i64>, activate: &mut Vec<Step>) {
    if content != now.as_str() {
        activate.push(Step::WriteLive {
            container: container.to_string(),
            path: path.into(),
            diff: unified_diff(path, now, content),
            previous: std::mem::replace(now, content.to_string()),
            content: content.to_string(),
            commands,
            old_workers_wait_s,
        });
    }
}

/// Validate, then reload: what the load balancer runs after its file changed.
fn nginx_reload() -> Vec<Vec<String>> {
    vec![vec!["nginx".into(), "-t".into(), "-q".into()], vec!["nginx".into(), "-s".into(), "reload".into()]]
}

/// `scalectl reload`: every running replica restarted in turn, each out of the balancer while it
/// restarts and back once healthy (through the balancer's runtime API: nothing reloads), then
/// every running worker in turn. Nothing else changes.
pub fn reload_plan(t: &Topology, o: &DockerObserved, templates: &Templates) -> Result<DockerPlan, RenderError> {
    let live = LiveUpstream::new(t, templates, o, None, None);
    let all = o.serving();
    let mut activate = Vec::new();
    let timeout_s = drain_stop_timeout(t);
    for (slot, name) in &all {
        let healthy = o.containers.iter().any(|c| &c.name == name && c.health.is_some());
        let balanced = all.len() > 1;
        if balanced {
            activate.extend(live.drain(slot, name));
        }
        activate.push(Step::Stop { name: name.clone(), timeout_s });
        activate.push(Step::Start { name: name.clone(), wait_healthy: healthy });
        if balanced {
            activate.extend(live.serve(slot, name));
        }
    }
    // Then each running worker, given its drain time to finish the job in hand.
    for c in o.containers.iter().filter(|c| c.role == ROLE_WORKER && c.running()) {
        activate.push(Step::Stop { name: c.name.clone(), timeout_s: worker_stop_timeout(t) });
        activate.push(Step::Start { name: c.name.clone(), wait_healthy: false });
    }
    Ok(DockerPlan { topology: t.name.clone(), network: network_name(t), activate, cleanup: Vec::new() })
}

/// `scalectl rollback`: the release image built before the one the replicas run (newest first by
/// creation), which apply keeps for this.
pub fn previous_release(t: &Topology, o: &DockerObserved) -> Result<Release, String> {
    let replicas = || o.running_replicas();
    let running: BTreeSet<&str> = replicas().map(|c| c.image.as_str()).collect();
    let repo = release_image(t, &Release { id: String::new(), bytes: 0, archive: false, image: None });
    // What the replicas recorded when they replaced the release before them.
    if let Some(previous) = replicas().map(|c| c.previous.as_str()).find(|p| !p.is_empty() && !running.contains(p)) {
        let id = previous.strip_prefix(repo.as_str()).filter(|id| !id.is_empty()).ok_or_else(|| format!("the previous release image {previous} is not of {repo}*"))?;
        if !o.images.iter().any(|i| i.tag == previous) {
            return Err(format!("the previous release image {previous} is no longer on the engine"));
        }
        return Ok(Release { id: id.to_string(), bytes: 0, archive: false, image: None });
    }
    // Replicas from before that label: the newest release image they do not run.
    let mut releases: Vec<&ObservedImage> = o.images.iter().filter(|i| i.role != ROLE_LOGS).collect();
    releases.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
    let previous = releases
        .iter()
        .filter(|i| !running.contains(i.tag.as_str()))
        .find_map(|i| i.tag.strip_prefix(repo.as_str()).filter(|id| !id.is_empty()))
        .ok_or_else(|| {
            let tags: Vec<&str> = releases.iter().map(|i| i.tag.as_str()).collect();
            format!("no earlier release image to roll back to (the engine has {tags:?}, the replicas run {running:?})")
        })?;
    Ok(Release { id: previous.to_string(), bytes: 0, archive: false, image: None })
}

fn in_slot<'a>(o: &'a DockerObserved, slot: &'a str) -> impl Iterator<Item = &'a ObservedContainer> {
    o.containers.iter().filter(move |c| c.slot == slot)
}

/// `destroy`: every labelled container, the network, the volumes and the release images; nothing else.
pub fn destroy_plan(t: &Topology, o: &DockerObserved) -> DockerPlan {
    let mut cleanup: Vec<Step> = o
        .containers
        .iter()
        .map(|c| Step::Remove { name: c.name.clone(), reason: "destroy".into() })
        .collect();
    if o.network {
        cleanup.push(Step::RemoveNetwork { name: network_name(t) });
    }
    cleanup.extend(o.volumes.iter().map(|v| Step::RemoveVolume { name: v.clone() }));
    cleanup.extend(o.images.iter().map(|i| Step::RemoveImage { tag: i.tag.clone(), reason: "destroy".into() }));
    DockerPlan { topology: t.name.clone(), network: network_name(t), activate: Vec::new(), cleanup }
}

