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

mod compose;
mod desired;
mod kubernetes;
mod steps;
mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Release, sha256_hex};
use crate::topology::Topology;

pub use compose::compose_file;
pub use desired::{Desired, before_app, bundle_specs, desired};
pub use kubernetes::{KUBERNETES_VERSION, PRE_STOP_S, database_cluster, kubernetes_files, secret_name};
pub use steps::{Inputs, destroy_plan, plan, previous_release, reload_plan};
pub use text::render_text;

/// Set by scalectl on the containers, networks and volumes it creates, never on an image: a
/// container someone starts from a release image by hand is not the topology's.
pub const LABEL_TOPOLOGY: &str = "scalectl.topology";
pub const LABEL_ROLE: &str = "scalectl.role";
pub const LABEL_SLOT: &str = "scalectl.slot";
pub const LABEL_HASH: &str = "scalectl.hash";
/// The paths of a container's live files, comma-separated: what observe reads back.
pub const LABEL_LIVE: &str = "scalectl.live";
/// On a replica: the release image its slot ran before this one (what `rollback` returns to).
pub const LABEL_PREVIOUS: &str = "scalectl.previous";
/// On the images scalectl builds (inherited by any container made from them, so distinct from
/// [`LABEL_TOPOLOGY`]): the topology, and `app` or [`ROLE_LOGS`].
pub const LABEL_IMAGE_TOPOLOGY: &str = "scalectl.image.topology";
pub const LABEL_IMAGE_ROLE: &str = "scalectl.image.role";

/// Where the images expect their configuration (the official images' conventions).
pub const NGINX_CONF: &str = "/etc/nginx/conf.d/default.conf";
/// The balancer's configuration in its container (it lists the replicas by container name).
pub const BALANCER_CONF: &str = crate::topology::tiers::BALANCER_CONFIG;
/// The balancer's slot (and container alias): nginx's one upstream.
pub const BALANCER_SLOT: &str = "balancer";
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
    /// The bundle file it is rendered as (`nginx/NAME.conf`), which compose mounts; empty for secrets.
    #[serde(skip)]
    pub source: String,
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
    /// Who owns it in the container: root, unless it is a secret only one user must read.
    #[serde(default, skip_serializing_if = "FileOwner::is_root")]
    pub owner: FileOwner,
}

/// The owner of a file written into a container, resolved when it is created: a user of the
/// image's /etc/passwd, or the user the image runs as (its `USER`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOwner {
    #[default]
    Root,
    User(String),
    ImageUser,
}

impl FileOwner {
    fn is_root(&self) -> bool {
        *self == FileOwner::Root
    }
}

/// Where a container's secrets go as files, one per variable, 0400 and owned by the user the
/// image runs as: `docker inspect` shows their names, never their values.
pub const SECRETS_DIR: &str = "/run/secrets/scalectl";

/// What exports a container's secret files (in [`SECRETS_DIR`]) as variables, then runs the
/// image's command (its arguments): no value is evaluated (each is one `export "NAME=value"`),
/// none is a process argument. The engine's containers and the compose bundle's run it alike.
pub fn secrets_entrypoint() -> Vec<String> {
    let script = format!("for f in {SECRETS_DIR}/*; do [ -f \"$f\" ] || continue; v=$(cat \"$f\"); export \"${{f##*/}}=$v\"; done; exec \"$@\"");
    vec!["/bin/sh".into(), "-c".into(), script, "scalectl-secrets".into()]
}

/// The Redis exporter's password file: a JSON map of Redis address ([`redis_address`]) to password.
pub fn redis_exporter_password_file() -> String {
    format!("{SECRETS_DIR}/redis-exporter.json")
}

/// Redis on the topology's network, as the exporter names it.
pub fn redis_address(t: &Topology) -> String {
    format!("redis://redis:{}", t.redis_port().unwrap_or_default())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretDelivery {
    /// As environment variables (visible to `docker inspect`).
    #[default]
    Env,
    /// One file per variable in [`SECRETS_DIR`], exported by /bin/sh before the image's own
    /// command runs: the app sees the same variables, `docker inspect` none of their values.
    Files,
    /// The Redis exporter's password file (`REDIS_PASSWORD_FILE`, a JSON map of address to
    /// password): its official image has no shell.
    RedisExporterFile,
}

impl SecretDelivery {
    fn is_env(&self) -> bool {
        *self == SecretDelivery::Env
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub name: String,
    /// The topology's reference, for the compose bundle (`${VAR}` at `docker compose up`).
    #[serde(skip)]
    pub from: Option<crate::topology::SecretRef>,
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
    /// Who its process runs as, when not the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// (volume, mount point)
    pub volumes: Vec<(String, String)>,
    /// (directory on the engine's machine, mount point), bound read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds_ro: Vec<(String, String)>,
    /// Options of the json-file log driver: rotation, and the labels each line carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_opts: BTreeMap<String, String>,
    /// Runs with no Linux capabilities at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cap_drop_all: bool,
    /// A read-only root filesystem (with a small tmpfs on /tmp).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// At most this many processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// How `secret_env` reaches the container on the engine (the compose bundle passes them as
    /// environment from the shell that runs `docker compose up`).
    #[serde(default, skip_serializing_if = "SecretDelivery::is_env")]
    pub secrets: SecretDelivery,
    /// Sees the engine machine's processes (the node exporter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pid_host: bool,
    /// Replicas: the release image the slot ran before this one (set by the planner, not hashed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous: String,
    /// Written into the container before it starts.
    pub files: Vec<FileSpec>,
    pub stop_timeout_s: i64,
    /// The image's own HEALTHCHECK turned off: a worker runs the image made for the replicas,
    /// whose check asks for a port the worker never opens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_health_check: bool,
    /// Without a health check: seconds it must still run after it started (a worker that exits
    /// at once, restarted by the engine, fails its start instead of looping unseen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_s: Option<u64>,
    pub hash: String,
}

impl ContainerSpec {
    fn sealed(mut self, topology: &str) -> ContainerSpec {
        let mut view = self.clone();
        view.name.clear();
        view.previous.clear();
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

    /// The labels scalectl sets when it creates the container: ownership, slot, spec hash, and
    /// which files are live (observe reads those back).
    pub fn labels(&self, topology: &str) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (LABEL_TOPOLOGY.to_string(), topology.to_string()),
            (LABEL_ROLE.to_string(), self.role.clone()),
            (LABEL_SLOT.to_string(), self.slot.clone()),
            (LABEL_HASH.to_string(), self.hash.clone()),
        ]);
        let live: Vec<&str> = self.files.iter().filter(|f| f.live).map(|f| f.path.as_str()).collect();
        if !live.is_empty() {
            l.insert(LABEL_LIVE.to_string(), live.join(","));
        }
        if !self.previous.is_empty() {
            l.insert(LABEL_PREVIOUS.to_string(), self.previous.clone());
        }
        l
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
    /// scalectl's own image (shipper, collector, mtail) is on the engine.
    #[serde(default)]
    pub log_image_present: bool,
    /// The images built for this topology (one per release, and scalectl's own), sorted by tag.
    #[serde(default)]
    pub images: Vec<ObservedImage>,
    pub containers: Vec<ObservedContainer>,
    /// Content of the live files of running containers, keyed `container:path`.
    pub live_files: BTreeMap<String, String>,
    /// Credentials with users added live and not yet settled in their running container (an
    /// apply stopped between).
    #[serde(default)]
    pub credentials_pending: Vec<crate::plan::Credentials>,
}

impl DockerObserved {
    /// The app replicas that run now.
    pub fn running_replicas(&self) -> impl Iterator<Item = &ObservedContainer> {
        self.containers.iter().filter(|c| c.role == "app" && c.running())
    }

    /// The app's replicas and workers that run now: its processes, whose logs are the app's.
    pub fn running_processes(&self) -> impl Iterator<Item = &ObservedContainer> {
        self.containers.iter().filter(|c| (c.role == "app" || c.role == ROLE_WORKER) && c.running())
    }

    /// Slot -> the container serving it now (the first running one).
    pub fn serving(&self) -> BTreeMap<String, String> {
        let mut current = BTreeMap::new();
        for c in self.running_replicas() {
            current.entry(c.slot.clone()).or_insert_with(|| c.name.clone());
        }
        current
    }

    /// Whether the release image and scalectl's own image are among the topology's images.
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
    /// Its [`LABEL_PREVIOUS`]: the release image its slot ran before (replicas).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous: String,
    /// How its process ended, once it has (a release command's container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
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
    /// Build the app's image: scale-api's from the release binary and the rendered `dockerfile`;
    /// a program's (`archive`) from its release, a tar of its directory with its own Dockerfile;
    /// or, for `app.program.image`, `FROM` that image.
    BuildImage {
        tag: String,
        release: String,
        bytes: u64,
        dockerfile: String,
        #[serde(default)]
        archive: bool,
        /// The engine's image (`app.program.image`) that `dockerfile` starts from: nothing is
        /// uploaded, the build only labels it as this topology's release.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_image: Option<String>,
    },
    /// Build scalectl's own image (rsyslog for the shipper and the collector, mtail) from its
    /// rendered Dockerfile. (Named for its first use; the name stays so saved plans still read.)
    BuildLogImage { tag: String, dockerfile: String },
    CreateNetwork { name: String },
    CreateVolume { name: String },
    /// Create, write its files, start, and wait until healthy (or running, without a health check).
    Create { spec: ContainerSpec },
    /// `app.release_command` in a one-off container, waited for: its failure stops the apply. The
    /// container is kept once it succeeded (the record that this release's command ran).
    RunRelease { spec: ContainerSpec },
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
        /// After the commands, wait (at most this many seconds) until the nginx workers that ran
        /// before them have exited: `nginx -s reload` only signals the master, and until its old
        /// workers are gone they still send requests by the upstream from before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_workers_wait_s: Option<i64>,
    },
    /// A tier's users changed live in `container` (its port `port`) through scalectl's admin
    /// user: `add` writes `content` as the users file and adds its passwords to each user (old
    /// and new both work) before any replica has the new password; `settle`, once every replica
    /// and the exporter have it, resets each user to exactly the file (the old password refused).
    Credentials {
        credentials: crate::plan::Credentials,
        container: String,
        phase: crate::plan::CredentialsPhase,
        port: u16,
        /// The users file (`add` only); emptied in a redacted plan.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        content: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        content_sha256: String,
    },
    /// Take a slot's `server` (serving the `replica` container) out of the balancer behind nginx
    /// (HAProxy, in `container`) through its runtime API, then wait (at most `wait_s`) until its
    /// requests in flight are answered. Nothing reloads. Undone by serving `replica` again.
    Drain { container: String, backend: String, server: String, replica: String, wait_s: i64 },
    /// Point the balancer's `server` at the `replica` container (by name, which the balancer
    /// resolves through the engine's DNS and follows when the engine moves it) and put it back,
    /// then wait (at most `wait_s`) until the balancer has it up. Nothing reloads. With
    /// `pause_checks`, its health check is paused until the balancer reloads for new check
    /// settings after the roll (`commands::Checks`).
    Serve {
        container: String,
        backend: String,
        server: String,
        replica: String,
        wait_s: i64,
        #[serde(default)]
        pause_checks: bool,
    },
    /// Reload the balancer in `container` for a new set of servers (its file was just written
    /// and checked): the old process answers what it holds, each idle connection from nginx once
    /// more with `Connection: close`; waited for until the new one answers on the runtime API.
    ReloadBalancer { container: String },
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
            if let Step::Credentials { content, content_sha256, .. } = s {
                content.clear();
                content_sha256.clear();
            }
            if let Step::Create { spec } | Step::RunRelease { spec } = s {
                // Nor their digests: a weak secret would fall to a dictionary tried on them.
                for e in &mut spec.secret_env {
                    e.value.clear();
                    e.value_sha256.clear();
                }
                for f in &mut spec.files {
                    if f.sensitive {
                        f.content.clear();
                        f.content_sha256.clear();
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
    fn places(&self) -> Vec<(String, usize)> {
        vec![("docker".into(), self.change_count())]
    }
}

/// The app's image for a release: the repository of `docker.images.scale_api` (or the program's
/// name), tagged with the release id, so each release is its own image and the old one stays for
/// a rollback.
pub fn release_image(t: &Topology, release: &Release) -> String {
    if let Some(p) = &t.app.program {
        return format!("{}:{}", p.name, release.id);
    }
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
/// A volume of the database tier: a member's data (`db-N`) or its socket directory (`db-N-run`),
/// etcd's data (`etcd`).
pub fn database_volume(t: &Topology, what: &str) -> String {
    format!("{}-{what}", t.name)
}

pub fn logs_volume(t: &Topology) -> String {
    format!("{}-logs", t.name)
}

/// The shipper's read positions and disk queue.
pub fn logship_volume(t: &Topology) -> String {
    format!("{}-logship", t.name)
}

/// mtail's socket for the load balancer's access log, on a volume the two share.
pub const LB_LOG_DIR: &str = "/run/scalectl-lb";

pub fn lb_log_volume(t: &Topology) -> String {
    format!("{}-lb-log", t.name)
}

/// scalectl's own image (rsyslog, mtail), named by its Dockerfile: a changed Dockerfile is a new image.
pub fn tools_image(dockerfile: &str) -> String {
    format!("scalectl-tools:{}", &sha256_hex(dockerfile.as_bytes())[..12])
}

/// What the engine says of itself that the containers depend on.
#[derive(Debug, Clone)]
pub struct Engine {
    /// For `instances: max`.
    pub cores: u32,
    /// dockerd's data root (`docker info`: DockerRootDir); its containers/ holds the json-file logs.
    pub data_root: String,
    /// The key of the secrets' digests in spec hashes (the engine's ID, `docker info`): known to
    /// whoever can reach the engine (who can read the secrets anyway), never to a plan's reader,
    /// so a container's name or spec hash in a plan is no dictionary to try a password on.
    pub digest_key: String,
}

/// A secret's digest in a spec hash: HMAC-SHA256 under the engine's key.
pub fn secret_digest(key: &str, value: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(value);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The role label of the app's workers.
pub const ROLE_WORKER: &str = "worker";
/// The database tier's containers (etcd, the members, HAProxy in front of them).
pub const ROLE_DATABASE: &str = "database";
/// `app.release_command`'s one-off containers.
pub const ROLE_RELEASE: &str = "release";

/// Seconds a worker must still run after it started.
pub const WORKER_SETTLE_S: u64 = 2;

/// Worker slots `worker-1..N` (`app.workers.instances`; `max`: one per core of the engine's machine).
pub fn worker_slots(t: &Topology, default_cores: u32) -> Vec<String> {
    let Some(w) = &t.app.workers else { return Vec::new() };
    let n = w.per_host().unwrap_or(default_cores.max(1)).min(64);
    (1..=n).map(|i| format!("worker-{i}")).collect()
}

/// Replica slots `api-1..N`.
pub fn replica_slots(t: &Topology, default_cores: u32) -> Vec<String> {
    let n = match t.app.instances {
        crate::topology::Instances::Count(n) => (n as u32).clamp(1, 64),
        crate::topology::Instances::Max => default_cores.max(1),
    };
    (1..=n).map(|i| format!("api-{i}")).collect()
}

#[cfg(test)]
mod tests;
