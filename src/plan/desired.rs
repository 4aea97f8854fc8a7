//! What each host should have: files (from render), packages, services, scale-api instances and
//! release. Pure: the topology, the rendered files and the release id come in; nothing is read.
//!
//! This is where deployment knowledge lives: which Debian package a role needs, which unit a file
//! belongs to and whether a change to it means reload, restart or a rolling restart.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::render::{Facts, RenderedFile};
use crate::topology::{LogDestination, Role, Topology};

pub use crate::topology::SCALE_API;

/// Where an app's releases live on a host: `releases/<id>/`, `current` -> the running one.
pub fn releases_dir(app: &str) -> String {
    format!("/opt/{app}/releases")
}

pub fn current_link(app: &str) -> String {
    format!("/opt/{app}/current")
}

/// Where the markers of releases that served live: `ready/<id>`, outside every release directory,
/// so nothing a release contains can mark it ready (or, as a symlink, aim the marker elsewhere).
pub fn ready_dir(app: &str) -> String {
    format!("/opt/{app}/ready")
}

/// Where the markers of releases whose release command ran live: `released/<id>` (root only).
pub fn released_dir(app: &str) -> String {
    format!("/opt/{app}/released")
}

/// The unit that runs the release command of release `id` (a template, `APP-release@.service`).
pub fn release_command_unit(app: &str, id: &str) -> String {
    format!("{app}-release@{id}.service")
}

/// The most a program's release may hold, unpacked (and so the tar `pack` makes): a release
/// larger than this is refused with its size rather than filling a host's disk.
pub const MAX_RELEASE_BYTES: u64 = 2 << 30;

/// What is deployed, named by the first 12 hex digits of its sha256: scale-api's binary, or an
/// archive (tar) of the user's program, unpacked into the release directory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Release {
    pub id: String,
    pub bytes: u64,
    pub archive: bool,
    /// On docker, the ID (`sha256:...`) of an image the engine has that this release runs
    /// (`app.program.image`); the release id is its first 12 hex digits, and nothing is uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Release {
    pub fn of(binary: &[u8]) -> Release {
        Release::new(binary, false)
    }

    pub fn new(bytes: &[u8], archive: bool) -> Release {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Release { id: hex[..12].to_string(), bytes: bytes.len() as u64, archive, image: None }
    }

    /// The release that runs the engine's image `image_id` (`sha256:<64 hex>`).
    pub fn of_image(image_id: &str) -> Release {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        Release { id: hex.chars().take(12).collect(), bytes: 0, archive: false, image: Some(image_id.to_string()) }
    }
}

pub use crate::render::OnChange;
pub use crate::topology::tiers::{Credentials, LiveCredentials};

#[derive(Debug, Clone, Serialize)]
pub struct DesiredFile {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub content: String,
    /// Holds a secret: never diffed or printed.
    pub sensitive: bool,
    pub on_change: OnChange,
    /// A systemd unit or drop-in: changing it needs `systemctl daemon-reload`.
    pub unit_file: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DesiredHost {
    pub host: String,
    pub roles: Vec<Role>,
    pub files: Vec<DesiredFile>,
    /// Files that must not exist (e.g. Debian's default nginx site), and who reloads after.
    pub absent: Vec<(String, OnChange)>,
    pub packages: Vec<String>,
    /// Units that must be enabled and running (besides scale-api instances).
    pub services: Vec<String>,
    /// Units that must be enabled only.
    pub enabled: Vec<String>,
    /// The app's name: its units are `APP@PORT.service`, its releases under /opt/APP.
    pub app_name: String,
    /// Ports of this host's app instances (unit `APP@PORT.service`).
    pub instances: Vec<u16>,
    /// Indexes of this host's workers (unit `APP-worker@N.service`).
    #[serde(default)]
    pub workers: Vec<u32>,
    /// How long a worker may finish its job after SIGTERM (its unit's stop timeout is this plus 5 s).
    #[serde(default)]
    pub worker_drain_ms: u64,
    pub release: Option<Release>,
    /// Readiness path probed on each instance after a (re)start.
    pub readiness: String,
    /// How this host's instances leave the load balancers before a restart (app hosts of a
    /// topology with a load balancer).
    pub drain: Option<super::Drain>,
    /// Load balancer hosts: the app hosts' addresses to resolve as this host does (Facts::resolved).
    pub resolve: Vec<String>,
    /// The users and passwords this host's tiers change live (Redis with a password), each with
    /// the port scalectl's admin user (made on the host) reaches its service on.
    pub credentials: Vec<LiveCredentials>,
    /// The host's log TLS certificate, when logs go to a collector on a monitor host.
    pub log_tls: Option<LogTls>,
    /// Each configuration check (unit, shell line) its tiers run before their unit reloads.
    #[serde(default)]
    pub checks: Vec<(String, String)>,
    /// Load balancer hosts: the balancer's backend of the app's instances, whose servers left in
    /// maintenance by a run that stopped between a drain and its undrain are observed.
    #[serde(default)]
    pub balancer: Option<String>,
    /// App hosts of an app with a release command (its unit is here): this host may run it.
    #[serde(default)]
    pub release_command: bool,
    /// App hosts of a fleet with a database: HAProxy's writer port on this host, which the release
    /// command waits for (a first deploy starts the database just before).
    #[serde(default)]
    pub db_writer: Option<u16>,
}

/// A certificate for RELP over TLS: it names the host (`name`, as the collector's and the
/// shippers' permitted peers say) and is issued by the fleet's log CA on `ca_host` (the monitor
/// host, the collector's).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogTls {
    pub name: String,
    pub ca_host: String,
}

impl DesiredHost {
    /// Runs the app's release: web instances, workers or both.
    pub fn is_app(&self) -> bool {
        !self.instances.is_empty() || !self.workers.is_empty()
    }
}

pub fn instance_unit(app: &str, port: u16) -> String {
    format!("{app}@{port}.service")
}

pub fn worker_unit(app: &str, index: u32) -> String {
    format!("{app}-worker@{index}.service")
}

pub fn socket_unit(app: &str, port: u16) -> String {
    format!("{app}@{port}.socket")
}

/// The desired state of every host, in the order apply activates them: the database, etcd, redis,
/// monitor, app, lb.
pub fn desired_hosts(t: &Topology, facts: &Facts, files: &[RenderedFile], release: Option<&Release>) -> Vec<DesiredHost> {
    let mut by_host: BTreeMap<&str, Vec<&RenderedFile>> = BTreeMap::new();
    for f in files {
        by_host.entry(f.host.as_str()).or_default().push(f);
    }
    let mut out: Vec<DesiredHost> = t
        .hosts
        .iter()
        .map(|h| {
            let mut d = DesiredHost {
                host: h.name.clone(),
                roles: h.roles.clone(),
                files: Vec::new(),
                absent: Vec::new(),
                packages: Vec::new(),
                services: Vec::new(),
                enabled: Vec::new(),
                app_name: t.app.name().to_string(),
                instances: Vec::new(),
                workers: Vec::new(),
                worker_drain_ms: t.app.workers.as_ref().map_or(0, |w| w.drain_timeout_ms),
                release: None,
                readiness: t.app.readiness.clone(),
                drain: None,
                resolve: Vec::new(),
                credentials: Vec::new(),
                log_tls: None,
                checks: Vec::new(),
                balancer: None,
                release_command: false,
                db_writer: None,
            };
            for f in by_host.get(h.name.as_str()).into_iter().flatten() {
                d.files.push(desired_file(f));
            }
            // Packages and units from the tier table; the app's instances from its cores.
            let tiers = t.tiers_on(h);
            let mut packages: Vec<String> = Vec::new();
            for p in tiers.iter().flat_map(|tier| &tier.packages) {
                if !packages.contains(p) {
                    packages.push(p.clone());
                }
            }
            let mut services: Vec<String> = tiers.iter().flat_map(|tier| tier.services.iter().cloned()).collect();
            d.credentials = tiers.iter().filter_map(|tier| tier.credentials).collect();
            d.checks = tiers.iter().filter_map(|tier| tier.check.as_ref()).map(|c| (c.unit.to_string(), c.command.clone())).collect();
            if t.observability.logs.destination == LogDestination::Collector
                && let Some(monitor) = t.hosts.iter().find(|m| m.has(Role::Monitor))
            {
                d.log_tls = Some(LogTls { name: h.name.clone(), ca_host: monitor.name.clone() });
            }
            if h.has(Role::App) {
                let n = t.instances_on(h, facts.cores_of(h));
                d.instances = t.instance_ports(n);
                // scale-api's port is held by its socket unit, started before the instance; a
                // program of the user's binds its own port.
                if t.app.program.is_none() {
                    services.extend(d.instances.iter().map(|p| socket_unit(&d.app_name, *p)));
                }
                let lbs: Vec<String> = t.hosts.iter().filter(|l| l.has(Role::Lb)).map(|l| l.name.clone()).collect();
                if !lbs.is_empty() {
                    d.drain = Some(super::Drain {
                        lbs,
                        socket: crate::topology::tiers::BALANCER_SOCKET.into(),
                        backend: crate::topology::tiers::balancer_backend(&t.name),
                        host: h.name.clone(),
                        wait_ms: t.app.drain_timeout_ms,
                        pause_checks: false,
                    });
                }
            }
            d.workers = t.workers_on(h, facts.cores_of(h));
            if d.is_app() {
                d.release = release.cloned();
                d.enabled.push(format!("{}.target", d.app_name));
                d.release_command = h.has(Role::App) && t.app.release_command.is_some();
                d.db_writer = t.database.as_ref().map(|_| crate::topology::ports::DB_WRITER);
            }
            if h.has(Role::Lb) {
                // The app hosts named by a name rather than an IP: resolved here, as nginx does.
                d.resolve = t.hosts.iter().filter(|a| a.has(Role::App) && a.address.parse::<std::net::IpAddr>().is_err()).map(|a| a.address.clone()).collect();
                d.absent.push(("/etc/nginx/sites-enabled/default".into(), OnChange::Reload("nginx.service")));
                d.balancer = Some(crate::topology::tiers::balancer_backend(&t.name));
            }
            if t.database.is_some() && (h.has(Role::Database) || h.has(Role::Etcd)) {
                // pg_hba.conf admits addresses, and etcd listens on its own: the names of the
                // hosts that reach the database (and of this one), resolved here.
                let reaches = |a: &crate::topology::Host| a.has(Role::App) || a.has(Role::Worker) || a.has(Role::Database) || a.has(Role::Etcd);
                for a in t.hosts.iter().filter(|a| reaches(a) && a.address.parse::<std::net::IpAddr>().is_err()) {
                    if !d.resolve.contains(&a.address) {
                        d.resolve.push(a.address.clone());
                    }
                }
            }
            if h.has(Role::Redis) && t.redis.is_some() {
                // Where earlier releases gave the exporter the apps' password as REDIS_PASSWORD,
                // which it used for any target a /scrape asked for: it now has a password of its
                // own, for its one target only (crate::render::REDIS_EXPORTER_PASSWORDS).
                d.absent.push(("/etc/scalectl/redis-exporter.env".into(), OnChange::Restart("prometheus-redis-exporter.service")));
            }
            d.packages = packages;
            d.services = services;
            d
        })
        .collect();
    let rank = |d: &DesiredHost| {
        // The database first (an app host of a first deploy waits for it in its release command),
        // etcd next (Patroni waits for it): a host with etcd and the app role still comes after
        // every database host.
        [Role::Database, Role::Etcd, Role::Redis, Role::Monitor, Role::App, Role::Worker, Role::Lb].iter().position(|r| d.roles.contains(r)).unwrap_or(7)
    };
    out.sort_by_key(rank);
    out
}

/// A rendered file as the plan sees it: owner, group, secrecy and effect come from render's
/// placement table.
fn desired_file(f: &RenderedFile) -> DesiredFile {
    DesiredFile {
        path: f.path.clone(),
        mode: f.mode,
        owner: "root".into(),
        group: f.group.into(),
        content: f.content.clone(),
        sensitive: f.sensitive,
        on_change: f.on_change,
        unit_file: f.path.starts_with("/etc/systemd/system/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_id_is_the_sha256_prefix() {
        let r = Release::of(b"abc");
        assert_eq!(r.id, "ba7816bf8f01");
        assert_eq!(r.bytes, 3);
        assert!(!r.archive);
    }

    #[test]
    fn file_effects_follow_the_placement_table() {
        let t = crate::topology::parse("t.yaml", "name: t\napp:\n  port: 4000\n  instances: 1\nhosts:\n  a: {address: 10.0.0.2, roles: [app, lb, redis, monitor]}\n").unwrap_or_else(|p| panic!("{p}"));
        let templates = crate::render::Templates::embedded();
        let mut files = crate::render::render(&t, &Facts::with_default_cores(1), &templates).unwrap();
        files.extend(crate::render::render_secrets(&t, &crate::render::SecretValues::default(), &templates).unwrap());
        let f = |p: &str| desired_file(files.iter().find(|f| f.path == p).unwrap_or_else(|| panic!("{p} not rendered")));
        assert_eq!(f("/etc/scale-api/scale-api.env").on_change, OnChange::Rolling);
        assert_eq!(f("/etc/nginx/conf.d/t.conf").on_change, OnChange::Reload("nginx.service"));
        assert_eq!(f("/etc/redis/redis.conf").group, "redis");
        assert!(f("/etc/systemd/system/redis-server.service.d/scalectl.conf").unit_file);
        assert_eq!(f("/etc/prometheus/scalectl/targets.json").on_change, OnChange::Nothing);
        assert!(f("/etc/scale-api/secrets.env").sensitive && f("/etc/redis/scalectl-auth.conf").sensitive);
        assert!(!f("/etc/redis/redis.conf").sensitive);
    }
}
