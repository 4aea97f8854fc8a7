//! The docker target's plan: which containers, network and volumes the topology wants on the
//! engine, against what the engine reports (found by label), as an ordered list of steps.
//!
//! Pure, like the hosts planner: the desired containers are computed from the topology, the
//! rendered files and the release; the observation comes in as a value. Every container is named
//! `<topology>-<slot>-<hash8>`, where the hash covers everything that needs a new container
//! (image, environment, baked files, limits, ports), so a changed spec is a new container beside
//! the old one, and a rolling release is: create new, wait healthy, rewrite the load balancer's
//! upstream (rendered here for every intermediate set of replicas), reload it, stop the old one.
//! Files that change while a container runs (the load balancer's config, Prometheus' file_sd
//! targets) are "live": outside the hash, observed by reading them back.
//!
//! `activate` steps are undone in reverse order when one fails (exec does it mechanically: a stop
//! is undone by a start, a live write by writing the previous content, a create by removing);
//! `cleanup` (removing the stopped old containers and what the topology no longer has) runs only
//! once everything in `activate` succeeded.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{KEEP_RELEASES, Release, sha256_hex, unified_diff};
use crate::render::{self, Instance, RenderError, SecretValues, Templates};
use crate::topology::{Persistence, Topology};

/// Set by scalectl on the containers, networks and volumes it creates, never on an image: a
/// container someone starts from a release image by hand is not the topology's.
pub const LABEL_TOPOLOGY: &str = "scalectl.topology";
pub const LABEL_ROLE: &str = "scalectl.role";
pub const LABEL_SLOT: &str = "scalectl.slot";
pub const LABEL_HASH: &str = "scalectl.hash";
/// The paths of a container's live files, comma-separated: what observe reads back.
pub const LABEL_LIVE: &str = "scalectl.live";
/// On the images scalectl builds (inherited by any container made from them, so distinct from
/// [`LABEL_TOPOLOGY`]): the topology, and `app` or [`ROLE_LOGS`].
pub const LABEL_IMAGE_TOPOLOGY: &str = "scalectl.image.topology";
pub const LABEL_IMAGE_ROLE: &str = "scalectl.image.role";

/// Where the images expect their configuration (the official images' conventions).
pub const NGINX_CONF: &str = "/etc/nginx/conf.d/default.conf";
pub const TARGETS_JSON: &str = "/etc/prometheus/scalectl/targets.json";

/// Where the shipper sees the engine's per-container directories (json-file logs inside).
pub const ENGINE_CONTAINERS: &str = "/var/lib/docker/containers";
/// Labels the json-file driver adds to every line of a replica: the shipper filters on them.
pub const APP_LOG_LABELS: &str = "scalectl.topology,scalectl.slot,scalectl.role";
/// The label value of the log image (release images carry none: they predate it).
pub const ROLE_LOGS: &str = "logs";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSpec {
    pub path: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    pub content_sha256: String,
    /// Holds a secret: never printed, emptied in a redacted plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// Rewritten while the container runs (not part of its hash).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub value_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    pub host_port: u16,
    pub container_port: u16,
}

/// One container as the topology wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// app, lb, redis, monitor.
    pub role: String,
    /// What the container is, across releases: `api-1`, `lb`, `redis`, `prometheus`, `grafana`.
    pub slot: String,
    pub image: String,
    /// Arguments for the image's entrypoint (empty: the image's own command).
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub secret_env: Vec<SecretEnv>,
    /// Names other containers reach it by on the network (besides its own name).
    pub aliases: Vec<String>,
    /// Published on 127.0.0.1 only.
    pub publish: Vec<Publish>,
    pub health: Option<Health>,
    pub memory_bytes: Option<u64>,
    pub nano_cpus: Option<i64>,
    pub nofile: Option<u64>,
    /// (volume, mount point)
    pub volumes: Vec<(String, String)>,
    /// (directory on the engine's machine, mount point), bound read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds_ro: Vec<(String, String)>,
    /// Options of the json-file log driver besides rotation (the labels each line carries).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_opts: BTreeMap<String, String>,
    /// Runs with no Linux capabilities at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cap_drop_all: bool,
    /// Sees the engine machine's processes (the node exporter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pid_host: bool,
    /// Written into the container before it starts.
    pub files: Vec<FileSpec>,
    pub stop_timeout_s: i64,
    pub hash: String,
}

impl ContainerSpec {
    fn sealed(mut self, topology: &str) -> ContainerSpec {
        let mut view = self.clone();
        view.name.clear();
        for s in &mut view.secret_env {
            s.value.clear();
        }
        for f in &mut view.files {
            f.content.clear();
            if f.live {
                f.content_sha256.clear();
            }
        }
        self.hash = sha256_hex(serde_json::to_string(&view).unwrap_or_default().as_bytes());
        self.name = format!("{topology}-{}-{}", self.slot, &self.hash[..8]);
        self
    }

    pub fn live_file(&self, path: &str) -> Option<&FileSpec> {
        self.files.iter().find(|f| f.live && f.path == path)
    }
}

/// What the engine reports for the topology's labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DockerObserved {
    pub network: bool,
    pub volumes: Vec<String>,
    /// The release image is on the engine.
    pub image_present: bool,
    /// The log image (shipper and collector) is on the engine.
    #[serde(default)]
    pub log_image_present: bool,
    /// The images built for this topology (one per release, and the log image), sorted by tag.
    #[serde(default)]
    pub images: Vec<ObservedImage>,
    pub containers: Vec<ObservedContainer>,
    /// Content of the live files of running containers, keyed `container:path`.
    pub live_files: BTreeMap<String, String>,
}

impl DockerObserved {
    /// Whether the release image and the log image are among the topology's images.
    pub fn mark_images(&mut self, release: &str, log_image: Option<&str>) {
        self.image_present = self.images.iter().any(|i| i.tag == release);
        self.log_image_present = log_image.is_some_and(|l| self.images.iter().any(|i| i.tag == l));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedContainer {
    pub name: String,
    pub role: String,
    pub slot: String,
    pub hash: String,
    /// The engine's state: running, exited, created, restarting, ...
    pub state: String,
    /// starting, healthy, unhealthy (None: no health check).
    pub health: Option<String>,
    /// The image it was created from, as named at creation.
    #[serde(default)]
    pub image: String,
}

/// A release image on the engine, labelled with the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedImage {
    /// `repository:tag`
    pub tag: String,
    /// Unix seconds.
    pub created: i64,
    /// Its `scalectl.role` label: empty for release images, [`ROLE_LOGS`] for the log image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
}

impl ObservedContainer {
    pub fn running(&self) -> bool {
        self.state == "running" || self.state == "restarting"
    }
}

/// One step of a docker plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Build the scale-api image from the release binary (tar context streamed to the engine).
    BuildImage { tag: String, release: String, bytes: u64, dockerfile: String },
    /// Build the log image (rsyslog for the shipper and the collector) from its rendered Dockerfile.
    BuildLogImage { tag: String, dockerfile: String },
    CreateNetwork { name: String },
    CreateVolume { name: String },
    /// Create, write its files, start, and wait until healthy (or running, without a health check).
    Create { spec: ContainerSpec },
    /// Start a stopped container that the topology still wants.
    Start { name: String, wait_healthy: bool },
    /// Replace a live file in a running container (temp + rename), then run `commands` in order
    /// (validate, reload); on a failed command the previous content is put back.
    WriteLive {
        container: String,
        path: String,
        content: String,
        previous: String,
        diff: String,
        commands: Vec<Vec<String>>,
    },
    /// Stop, giving in-flight requests `timeout_s` to finish.
    Stop { name: String, timeout_s: i64 },
    Remove { name: String, reason: String },
    RemoveNetwork { name: String },
    RemoveVolume { name: String },
    /// A release image older than the ones kept for a rollback, or a log image the topology no
    /// longer uses; used by no container.
    RemoveImage { tag: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerPlan {
    pub topology: String,
    pub network: String,
    pub activate: Vec<Step>,
    pub cleanup: Vec<Step>,
}

impl DockerPlan {
    pub fn has_changes(&self) -> bool {
        !self.activate.is_empty() || !self.cleanup.is_empty()
    }

    pub fn change_count(&self) -> usize {
        self.activate.len() + self.cleanup.len()
    }

    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.activate.iter().chain(&self.cleanup)
    }

    /// The plan with every secret value removed: what is printed and serialized.
    pub fn redacted(&self) -> DockerPlan {
        let mut p = self.clone();
        for s in p.activate.iter_mut().chain(p.cleanup.iter_mut()) {
            if let Step::Create { spec } = s {
                for e in &mut spec.secret_env {
                    e.value.clear();
                }
                for f in &mut spec.files {
                    if f.sensitive {
                        f.content.clear();
                    }
                }
            }
        }
        p
    }
}

impl super::PlanView for DockerPlan {
    fn topology(&self) -> &str {
        &self.topology
    }
    fn has_changes(&self) -> bool {
        DockerPlan::has_changes(self)
    }
    fn change_count(&self) -> usize {
        DockerPlan::change_count(self)
    }
    fn redacted(&self) -> Self {
        DockerPlan::redacted(self)
    }
    fn text(&self, color: bool) -> String {
        render_text(&self.redacted(), color)
    }
    fn scope(&self) -> String {
        "steps on the engine".into()
    }
}

/// The scale-api image for a release: the repository of `docker.images.scale_api`, tagged with the
/// release id, so each release is its own image and the old one stays for a rollback.
pub fn release_image(t: &Topology, release: &Release) -> String {
    let image = &t.docker.images.scale_api;
    let repo = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image.as_str(),
    };
    format!("{repo}:{}", release.id)
}

pub fn network_name(t: &Topology) -> String {
    t.docker.network.clone()
}

pub fn redis_volume(t: &Topology) -> String {
    format!("{}-redis-data", t.name)
}

/// The collector's log files.
pub fn logs_volume(t: &Topology) -> String {
    format!("{}-logs", t.name)
}

/// The shipper's read positions and disk queue.
pub fn logship_volume(t: &Topology) -> String {
    format!("{}-logship", t.name)
}

/// The log image, named by its Dockerfile: a changed Dockerfile is a new image.
pub fn log_image(dockerfile: &str) -> String {
    format!("scalectl-rsyslog:{}", &sha256_hex(dockerfile.as_bytes())[..12])
}

/// What the engine says of itself that the containers depend on.
#[derive(Debug, Clone)]
pub struct Engine {
    /// For `instances: max`.
    pub cores: u32,
    /// dockerd's data root (`docker info`: DockerRootDir); its containers/ holds the json-file logs.
    pub data_root: String,
}

/// Replica slots `api-1..N`.
pub fn replica_slots(t: &Topology, default_cores: u32) -> Vec<String> {
    let n = match t.app.instances {
        crate::topology::Instances::Count(n) => (n as u32).clamp(1, 64),
        crate::topology::Instances::Max => default_cores.max(1),
    };
    (1..=n).map(|i| format!("api-{i}")).collect()
}

fn file(path: &str, content: &str, live: bool) -> FileSpec {
    FileSpec { path: path.into(), mode: 0o644, content: content.into(), content_sha256: sha256_hex(content.as_bytes()), sensitive: false, live }
}

/// The rendered files for a set of replicas (slot, container name).
fn rendered(t: &Topology, replicas: &[(String, String)], templates: &Templates) -> Result<BTreeMap<String, String>, RenderError> {
    let instances: Vec<Instance> =
        replicas.iter().map(|(slot, name)| Instance { host: slot.clone(), address: name.clone(), port: t.app.port, weight: 1 }).collect();
    render::render_docker_deploy(t, &instances, templates)
}

fn get<'a>(files: &'a BTreeMap<String, String>, path: &str) -> &'a str {
    files.get(path).map(String::as_str).unwrap_or_default()
}

/// Every container the topology wants, sealed (named by hash). `replicas` are the final ones.
pub struct Desired {
    pub image: String,
    /// The rendered Dockerfile the release image is built from.
    pub dockerfile: String,
    pub app: Vec<ContainerSpec>,
    pub lb: ContainerSpec,
    pub redis: ContainerSpec,
    pub prometheus: ContainerSpec,
    pub grafana: Option<ContainerSpec>,
    /// The node, Redis and Nginx exporters Prometheus scrapes besides the replicas.
    pub exporters: Vec<ContainerSpec>,
    /// Log shipping to the collector (`observability.logs.destination: collector`).
    pub logs: Option<LogShipping>,
}

/// The collector and the shipper, both on the log image.
pub struct LogShipping {
    pub image: String,
    pub dockerfile: String,
    pub collector: ContainerSpec,
    pub shipper: ContainerSpec,
}

pub fn desired(t: &Topology, release: &Release, secrets: &SecretValues, engine: &Engine, templates: &Templates) -> Result<Desired, RenderError> {
    let image = release_image(t, release);
    let slots = replica_slots(t, engine.cores);
    let ship = t.observability.logs.destination == crate::topology::LogDestination::Collector;
    // Replicas first: their names (hashes) do not depend on the load balancer.
    let base = rendered(t, &slots.iter().map(|s| (s.clone(), s.clone())).collect::<Vec<_>>(), templates)?;
    let secret_env: Vec<SecretEnv> = secrets
        .app
        .iter()
        .chain(secrets.redis_password.as_ref().map(|p| ("REDIS_PASSWORD".to_string(), p.clone())).iter())
        .map(|(n, v)| SecretEnv { name: n.clone(), value: v.clone(), value_sha256: sha256_hex(v.as_bytes()) })
        .collect();
    let app: Vec<ContainerSpec> = slots
        .iter()
        .map(|slot| {
            let env: Vec<String> =
                get(&base, &format!("env/{slot}")).lines().filter(|l| l.contains('=') && !l.starts_with('#')).map(str::to_string).collect();
            ContainerSpec {
                name: String::new(),
                role: "app".into(),
                slot: slot.clone(),
                image: image.clone(),
                cmd: Vec::new(),
                env,
                secret_env: secret_env.clone(),
                aliases: Vec::new(),
                publish: Vec::new(),
                health: Some(Health {
                    test: vec!["CMD".into(), "/usr/local/bin/scale-api".into(), "probe".into(), t.app.readiness.clone()],
                    interval_ms: 1000,
                    timeout_ms: 2000,
                    retries: 3,
                    start_period_ms: 2000,
                }),
                memory_bytes: Some(t.app.memory_max),
                nano_cpus: t.app.cpu_quota.map(|q| i64::from(q) * 10_000_000),
                nofile: Some(t.app.nofile),
                volumes: Vec::new(),
                binds_ro: Vec::new(),
                log_opts: if ship { BTreeMap::from([("labels".to_string(), APP_LOG_LABELS.to_string())]) } else { BTreeMap::new() },
                cap_drop_all: false,
                pid_host: false,
                files: Vec::new(),
                stop_timeout_s: (t.app.drain_timeout_ms / 1000) as i64 + 5,
                hash: String::new(),
            }
            .sealed(&t.name)
        })
        .collect();
    let final_replicas: Vec<(String, String)> = app.iter().map(|c| (c.slot.clone(), c.name.clone())).collect();
    let files = rendered(t, &final_replicas, templates)?;
    let service = |role: &str, slot: &str, image: &str| ContainerSpec {
        name: String::new(),
        role: role.into(),
        slot: slot.into(),
        image: image.into(),
        cmd: Vec::new(),
        env: Vec::new(),
        secret_env: Vec::new(),
        aliases: vec![slot.into()],
        publish: Vec::new(),
        health: None,
        memory_bytes: None,
        nano_cpus: None,
        nofile: None,
        volumes: Vec::new(),
        binds_ro: Vec::new(),
        log_opts: BTreeMap::new(),
        cap_drop_all: false,
        pid_host: false,
        files: Vec::new(),
        stop_timeout_s: 10,
        hash: String::new(),
    };
    let publish = |host: Option<u16>, container_port: u16| host.map(|host_port| Publish { host_port, container_port }).into_iter().collect();

    let mut lb = service("lb", "lb", &t.docker.images.nginx);
    lb.files.push(file(NGINX_CONF, get(&files, &format!("nginx/{}.conf", t.name)), true));
    lb.publish = publish(t.lab.publish.load_balancer, t.load_balancer.listen);
    lb.stop_timeout_s = (t.app.drain_timeout_ms / 1000) as i64 + 5;

    let mut redis = service("redis", "redis", &t.docker.images.redis);
    redis.cmd = vec!["redis-server".into(), "/usr/local/etc/redis/redis.conf".into()];
    redis.files.push(file("/usr/local/etc/redis/redis.conf", get(&files, "redis/redis.conf"), false));
    for f in render::render_secrets(t, secrets, templates)? {
        let mut spec = file(&f.path, &f.content, false);
        spec.sensitive = true;
        spec.mode = 0o644;
        redis.files.push(spec);
    }
    if t.redis.persistence != Persistence::None {
        redis.volumes.push((redis_volume(t), "/data".into()));
    }
    redis.publish = publish(t.lab.publish.redis, t.redis.port);

    let obs = &t.observability;
    let mut prometheus = service("monitor", "prometheus", &t.docker.images.prometheus);
    prometheus.cmd = vec![
        "--config.file=/etc/prometheus/prometheus.yml".into(),
        "--storage.tsdb.path=/prometheus".into(),
        format!("--storage.tsdb.retention.time={}s", obs.retention_ms / 1000),
        format!("--web.listen-address=:{}", obs.prometheus_port),
    ];
    prometheus.files.push(file("/etc/prometheus/prometheus.yml", get(&files, "prometheus/prometheus.yml"), false));
    prometheus.files.push(file("/etc/prometheus/scalectl/rules.yml", get(&files, "prometheus/rules.yml"), false));
    prometheus.files.push(file(TARGETS_JSON, get(&files, "prometheus/targets.json"), true));
    prometheus.publish = publish(t.lab.publish.prometheus, obs.prometheus_port);

    let grafana = obs.grafana.then(|| {
        let mut g = service("monitor", "grafana", &t.docker.images.grafana);
        for (path, content) in files.iter().filter(|(p, _)| p.starts_with("grafana/")) {
            let dest = match path.strip_prefix("grafana/provisioning/") {
                Some(rest) => format!("/etc/grafana/provisioning/{rest}"),
                None => format!("/var/lib/grafana/dashboards/scalectl/{}", path.trim_start_matches("grafana/dashboards/")),
            };
            g.files.push(file(&dest, content, false));
        }
        g.publish = publish(t.lab.publish.grafana, obs.grafana_port);
        g.sealed(&t.name)
    });

    // Exporters, reached by their slot names (targets.json): the engine's machine, Redis, Nginx.
    let images = &t.docker.images;
    let mut node = service("monitor", "node-exporter", &images.node_exporter);
    node.cmd = vec!["--path.rootfs=/host".into()];
    node.binds_ro.push(("/".into(), "/host".into()));
    node.pid_host = true;
    let mut redis_exporter = service("monitor", "redis-exporter", &images.redis_exporter);
    redis_exporter.env = vec![format!("REDIS_ADDR=redis://redis:{}", t.redis.port)];
    redis_exporter.secret_env = secret_env.iter().filter(|s| s.name == "REDIS_PASSWORD").cloned().collect();
    let mut nginx_exporter = service("monitor", "nginx-exporter", &images.nginx_exporter);
    nginx_exporter.cmd = vec![format!("--nginx.scrape-uri=http://lb:{}/stub_status", t.load_balancer.status_port)];
    let exporters = [node, redis_exporter, nginx_exporter].into_iter().map(|c| c.sealed(&t.name)).collect();

    // Logs: rsyslog in both, run as root (the engine's log files are root's) with no capabilities.
    let logs = ship.then(|| {
        let dockerfile = get(&files, "rsyslog/Dockerfile").to_string();
        let log_image = log_image(&dockerfile);
        let mut collector = service(ROLE_LOGS, "collector", &log_image);
        collector.cmd = vec!["/etc/scalectl/collector.conf".into()];
        collector.files.push(file("/etc/scalectl/collector.conf", get(&files, "rsyslog/collector.conf"), false));
        collector.volumes.push((logs_volume(t), "/var/log/scalectl".into()));
        collector.cap_drop_all = true;
        let mut shipper = service(ROLE_LOGS, "logship", &log_image);
        shipper.cmd = vec!["/etc/scalectl/ship.conf".into()];
        shipper.files.push(file("/etc/scalectl/ship.conf", get(&files, "rsyslog/ship.conf"), false));
        shipper.volumes.push((logship_volume(t), "/var/spool/rsyslog".into()));
        shipper.binds_ro.push((format!("{}/containers", engine.data_root.trim_end_matches('/')), ENGINE_CONTAINERS.into()));
        shipper.cap_drop_all = true;
        LogShipping { image: log_image, dockerfile, collector: collector.sealed(&t.name), shipper: shipper.sealed(&t.name) }
    });

    Ok(Desired {
        image,
        dockerfile: get(&files, "Dockerfile").to_string(),
        app,
        lb: lb.sealed(&t.name),
        redis: redis.sealed(&t.name),
        prometheus: prometheus.sealed(&t.name),
        grafana,
        exporters,
        logs,
    })
}

/// What the planner needs besides the observation.
pub struct Inputs<'a> {
    pub topology: &'a Topology,
    pub release: &'a Release,
    pub desired: Desired,
    pub templates: &'a Templates,
}

/// The plan that takes the engine from `o` to the desired containers.
pub fn plan(i: Inputs<'_>, o: &DockerObserved) -> Result<DockerPlan, RenderError> {
    let t = i.topology;
    let d = &i.desired;
    let network = network_name(t);
    let mut activate = Vec::new();
    let mut cleanup = Vec::new();
    let exact = |spec: &ContainerSpec| o.containers.iter().find(|c| c.name == spec.name);

    if !o.image_present {
        activate.push(Step::BuildImage { tag: d.image.clone(), release: i.release.id.clone(), bytes: i.release.bytes, dockerfile: d.dockerfile.clone() });
    }
    if let Some(logs) = d.logs.as_ref().filter(|_| !o.log_image_present) {
        activate.push(Step::BuildLogImage { tag: logs.image.clone(), dockerfile: logs.dockerfile.clone() });
    }
    if !o.network {
        activate.push(Step::CreateNetwork { name: network.clone() });
    }
    let mut volumes = Vec::new();
    if t.redis.persistence != Persistence::None {
        volumes.push(redis_volume(t));
    }
    if d.logs.is_some() {
        volumes.extend([logs_volume(t), logship_volume(t)]);
    }
    for v in volumes.into_iter().filter(|v| !o.volumes.contains(v)) {
        activate.push(Step::CreateVolume { name: v });
    }

    // A service (one container per slot): keep it, start it, or stop the old and create the new.
    let service = |spec: &ContainerSpec, activate: &mut Vec<Step>, cleanup: &mut Vec<Step>| -> bool {
        let kept = match exact(spec) {
            Some(c) if c.running() => true,
            Some(_) => {
                activate.push(Step::Start { name: spec.name.clone(), wait_healthy: spec.health.is_some() });
                true
            }
            None => false,
        };
        for old in in_slot(o, &spec.slot).filter(|c| c.name != spec.name) {
            if old.running() && !kept {
                activate.push(Step::Stop { name: old.name.clone(), timeout_s: spec.stop_timeout_s });
            }
            cleanup.push(Step::Remove { name: old.name.clone(), reason: format!("replaced by {}", spec.name) });
        }
        if !kept {
            activate.push(Step::Create { spec: spec.clone() });
        }
        kept
    };

    service(&d.redis, &mut activate, &mut cleanup);

    // The load balancer and Prometheus see `current` replicas; rewrite them as it changes.
    let running = |c: &ContainerSpec| exact(c).is_some_and(ObservedContainer::running).then(|| c.name.clone());
    let mut live = LiveUpstream::new(t, i.templates, o, running(&d.lb), running(&d.prometheus));
    let app_slots: BTreeSet<&str> = d.app.iter().map(|c| c.slot.as_str()).collect();
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    for c in o.containers.iter().filter(|c| c.role == "app" && c.running()) {
        current.entry(c.slot.clone()).or_insert_with(|| c.name.clone());
    }
    let mut rewrite = |current: &BTreeMap<String, String>, activate: &mut Vec<Step>| live.rewrite(current, activate);

    // New slots (scaling out) first, then one rewrite; then each changed slot rolled in turn.
    let mut added = false;
    for spec in d.app.iter().filter(|s| in_slot(o, &s.slot).all(|c| !c.running() && c.name != s.name)) {
        activate.push(Step::Create { spec: spec.clone() });
        current.insert(spec.slot.clone(), spec.name.clone());
        added = true;
    }
    if added {
        rewrite(&current, &mut activate)?;
    }
    for spec in &d.app {
        let olds: Vec<&ObservedContainer> = in_slot(o, &spec.slot).filter(|c| c.name != spec.name).collect();
        match exact(spec) {
            Some(c) if !c.running() => {
                activate.push(Step::Start { name: spec.name.clone(), wait_healthy: true });
                current.insert(spec.slot.clone(), spec.name.clone());
            }
            Some(_) => {}
            None if olds.iter().any(|c| c.running()) => {
                activate.push(Step::Create { spec: spec.clone() });
                current.insert(spec.slot.clone(), spec.name.clone());
                rewrite(&current, &mut activate)?;
            }
            None => {} // created above as a new slot
        }
        for old in olds {
            if old.running() {
                activate.push(Step::Stop { name: old.name.clone(), timeout_s: spec.stop_timeout_s });
            }
            cleanup.push(Step::Remove { name: old.name.clone(), reason: format!("replaced by {}", spec.name) });
        }
    }
    // Slots the topology no longer has (scaling in): out of the upstream first, then stopped.
    let gone: Vec<&ObservedContainer> = o.containers.iter().filter(|c| c.role == "app" && !app_slots.contains(c.slot.as_str())).collect();
    current.retain(|slot, _| app_slots.contains(slot.as_str()));
    rewrite(&current, &mut activate)?;
    for c in &gone {
        if c.running() {
            activate.push(Step::Stop { name: c.name.clone(), timeout_s: (t.app.drain_timeout_ms / 1000) as i64 + 5 });
        }
        cleanup.push(Step::Remove { name: c.name.clone(), reason: format!("{} is no longer in the topology", c.slot) });
    }

    service(&d.lb, &mut activate, &mut cleanup);
    service(&d.prometheus, &mut activate, &mut cleanup);
    let mut wanted: BTreeSet<&str> = ["lb", "redis", "prometheus"].into_iter().collect();
    if let Some(g) = &d.grafana {
        service(g, &mut activate, &mut cleanup);
        wanted.insert("grafana");
    }
    for e in &d.exporters {
        service(e, &mut activate, &mut cleanup);
        wanted.insert(e.slot.as_str());
    }
    if let Some(logs) = &d.logs {
        service(&logs.collector, &mut activate, &mut cleanup);
        service(&logs.shipper, &mut activate, &mut cleanup);
        wanted.extend(["collector", "logship"]);
    }
    for c in o.containers.iter().filter(|c| c.role != "app" && !wanted.contains(c.slot.as_str())) {
        if c.running() {
            activate.push(Step::Stop { name: c.name.clone(), timeout_s: 10 });
        }
        cleanup.push(Step::Remove { name: c.name.clone(), reason: format!("{} is no longer in the topology", c.slot) });
    }
    prune_images(o, &d.image, d.logs.as_ref().map(|l| l.image.as_str()), &mut cleanup);
    Ok(DockerPlan { topology: t.name.clone(), network, activate, cleanup })
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
    let mut older: Vec<&ObservedImage> = o.images.iter().filter(|i| i.role != ROLE_LOGS && i.tag != deployed).collect();
    older.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
    for image in older.into_iter().skip(KEEP_RELEASES.saturating_sub(1)) {
        if !in_use.contains(image.tag.as_str()) {
            cleanup.push(Step::RemoveImage { tag: image.tag.clone(), reason: format!("older than the last {KEEP_RELEASES} releases") });
        }
    }
}

/// The live files that follow the set of replicas: the load balancer's upstream and Prometheus'
/// targets, in the containers that run now. Each change is a [`Step::WriteLive`] (nginx validates
/// and reloads its file; Prometheus rereads file_sd by itself).
struct LiveUpstream<'a> {
    t: &'a Topology,
    templates: &'a Templates,
    /// (container, content it has now)
    lb: Option<(String, String)>,
    prometheus: Option<(String, String)>,
}

impl<'a> LiveUpstream<'a> {
    fn new(t: &'a Topology, templates: &'a Templates, o: &DockerObserved, lb: Option<String>, prometheus: Option<String>) -> Self {
        let now = |name: String, path: &str| {
            let content = o.live_files.get(&format!("{name}:{path}")).cloned().unwrap_or_default();
            (name, content)
        };
        LiveUpstream { t, templates, lb: lb.map(|n| now(n, NGINX_CONF)), prometheus: prometheus.map(|n| now(n, TARGETS_JSON)) }
    }

    /// Point both at exactly these replicas (slot -> container).
    fn rewrite(&mut self, current: &BTreeMap<String, String>, activate: &mut Vec<Step>) -> Result<(), RenderError> {
        let replicas: Vec<(String, String)> = current.iter().map(|(s, n)| (s.clone(), n.clone())).collect();
        let files = rendered(self.t, &replicas, self.templates)?;
        if let Some((container, now)) = &mut self.lb {
            let conf = get(&files, &format!("nginx/{}.conf", self.t.name)).to_string();
            if conf != *now {
                activate.push(Step::WriteLive {
                    container: container.clone(),
                    path: NGINX_CONF.into(),
                    diff: unified_diff(NGINX_CONF, now, &conf),
                    previous: std::mem::replace(now, conf.clone()),
                    content: conf,
                    commands: nginx_reload(),
                });
            }
        }
        if let Some((container, now)) = &mut self.prometheus {
            let targets = get(&files, "prometheus/targets.json").to_string();
            if targets != *now {
                activate.push(Step::WriteLive {
                    container: container.clone(),
                    path: TARGETS_JSON.into(),
                    diff: unified_diff(TARGETS_JSON, now, &targets),
                    previous: std::mem::replace(now, targets.clone()),
                    content: targets,
                    commands: Vec::new(),
                });
            }
        }
        Ok(())
    }
}

/// Validate, then reload: what the load balancer runs after its file changed.
fn nginx_reload() -> Vec<Vec<String>> {
    vec![vec!["nginx".into(), "-t".into(), "-q".into()], vec!["nginx".into(), "-s".into(), "reload".into()]]
}

/// `scalectl reload`: every running replica restarted in turn, each out of the load balancer's
/// upstream while it restarts and back once healthy. Nothing else changes.
pub fn reload_plan(t: &Topology, o: &DockerObserved, templates: &Templates) -> Result<DockerPlan, RenderError> {
    let running_in = |slot: &str| o.containers.iter().find(|c| c.slot == slot && c.running()).map(|c| c.name.clone());
    let mut live = LiveUpstream::new(t, templates, o, running_in("lb"), None);
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    for c in o.containers.iter().filter(|c| c.role == "app" && c.running()) {
        current.entry(c.slot.clone()).or_insert_with(|| c.name.clone());
    }
    let all = current.clone();
    let mut activate = Vec::new();
    let timeout_s = (t.app.drain_timeout_ms / 1000) as i64 + 5;
    for (slot, name) in &all {
        let healthy = o.containers.iter().any(|c| &c.name == name && c.health.is_some());
        if all.len() > 1 {
            current.remove(slot);
            live.rewrite(&current, &mut activate)?;
        }
        activate.push(Step::Stop { name: name.clone(), timeout_s });
        activate.push(Step::Start { name: name.clone(), wait_healthy: healthy });
        current.insert(slot.clone(), name.clone());
        live.rewrite(&current, &mut activate)?;
    }
    Ok(DockerPlan { topology: t.name.clone(), network: network_name(t), activate, cleanup: Vec::new() })
}

/// `scalectl rollback`: the release image built before the one the replicas run (newest first by
/// creation), which apply keeps for this.
pub fn previous_release(t: &Topology, o: &DockerObserved) -> Result<Release, String> {
    let running: BTreeSet<&str> = o.containers.iter().filter(|c| c.role == "app" && c.running()).map(|c| c.image.as_str()).collect();
    let mut releases: Vec<&ObservedImage> = o.images.iter().filter(|i| i.role != ROLE_LOGS).collect();
    releases.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
    let repo = release_image(t, &Release { id: String::new(), bytes: 0 });
    let previous = releases
        .iter()
        .filter(|i| !running.contains(i.tag.as_str()))
        .find_map(|i| i.tag.strip_prefix(repo.as_str()).filter(|id| !id.is_empty()))
        .ok_or_else(|| {
            let tags: Vec<&str> = releases.iter().map(|i| i.tag.as_str()).collect();
            format!("no earlier release image to roll back to (the engine has {tags:?}, the replicas run {running:?})")
        })?;
    Ok(Release { id: previous.to_string(), bytes: 0 })
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

/// The plan as text for people: one line per step, diffs of live files.
pub fn render_text(p: &DockerPlan, color: bool) -> String {
    use std::fmt::Write;
    let paint = |style: anstyle::Style, s: &str| if color { format!("{style}{s}{style:#}") } else { s.to_string() };
    let green = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Green.into()));
    let red = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Red.into()));
    let yellow = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into()));
    let mut out = String::new();
    if !p.has_changes() {
        let _ = writeln!(out, "No changes: the engine runs what the topology says.");
        return out;
    }
    for (stage, steps) in [("activate", &p.activate), ("cleanup", &p.cleanup)] {
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{stage}:");
        for s in steps {
            let line = match s {
                Step::BuildImage { tag, release, bytes, .. } => paint(green, &format!("  + build image {tag} (release {release}, {bytes} bytes)")),
                Step::BuildLogImage { tag, .. } => paint(green, &format!("  + build image {tag} (rsyslog, for log shipping)")),
                Step::CreateNetwork { name } => paint(green, &format!("  + network {name}")),
                Step::CreateVolume { name } => paint(green, &format!("  + volume {name}")),
                Step::Create { spec } => paint(
                    green,
                    &format!("  + container {} ({}, {}{})", spec.name, spec.slot, spec.image, if spec.health.is_some() { ", wait healthy" } else { "" }),
                ),
                Step::Start { name, .. } => paint(yellow, &format!("  ~ start {name}")),
                Step::WriteLive { container, path, diff, commands, .. } => {
                    let then: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
                    let mut s = paint(yellow, &format!("  ~ write {path} in {container}"));
                    if !then.is_empty() {
                        s.push_str(&format!(", then {}", then.join("; ")));
                    }
                    for l in diff.lines() {
                        let styled = match l.chars().next() {
                            Some('+') if !l.starts_with("+++") => paint(green, l),
                            Some('-') if !l.starts_with("---") => paint(red, l),
                            _ => l.to_string(),
                        };
                        s.push_str(&format!("\n      {styled}"));
                    }
                    s
                }
                Step::Stop { name, timeout_s } => paint(yellow, &format!("  ~ stop {name} (drain up to {timeout_s} s)")),
                Step::Remove { name, reason } => paint(red, &format!("  - container {name} ({reason})")),
                Step::RemoveNetwork { name } => paint(red, &format!("  - network {name}")),
                Step::RemoveVolume { name } => paint(red, &format!("  - volume {name} (its data is lost)")),
                Step::RemoveImage { tag, reason } => paint(red, &format!("  - image {tag} ({reason})")),
            };
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(out, "Plan: {} steps on the engine.", p.change_count());
    out
}

#[cfg(test)]
mod tests;
