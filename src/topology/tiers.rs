//! What each tier is, written once: the role that places it, its Debian packages and units on a
//! host, the files it places there (template, path, mode, group, what a change means, whether it
//! holds a secret), the ports it listens on (who may reach each, and the Prometheus job that
//! scrapes it), and on docker the container that serves each scraped port.
//!
//! Every projection reads this table rather than restating it: validation's port claims, render's
//! files per host, the hosts plan's packages and services (plan/desired.rs), and the templates' view (render/context.rs:
//! the firewall's exporter ports, Prometheus' targets and jobs, the exporters' listen addresses).
//! The app's instances are the one thing placed apart ([`Topology::instance_ports`]): how many a
//! host runs depends on the cores it has, which only a target observes.

use serde::Serialize;

use super::model::*;

/// Who may reach a port (the firewall and the bind addresses follow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// Anyone: the load balancer's listeners, sshd, Prometheus and Grafana for people and doctor.
    Anyone,
    /// The hosts of the fleet that use it (Redis: the app hosts; the collector: the shipping host).
    Fleet,
    /// Prometheus on the monitor host only: exporters.
    Monitor,
    /// This host only (loopback): nginx's stub_status.
    Local,
    /// The hosts that reach the database: app, worker and database hosts (PostgreSQL, Patroni's
    /// REST API for HAProxy's checks and the other members).
    Database,
    /// Patroni on the database hosts, and etcd's other members.
    Etcd,
}

/// A port a tier listens on.
#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    pub port: u16,
    /// What listens, for people: "the redis exporter".
    pub what: String,
    pub reach: Reach,
    /// The Prometheus job that scrapes it there, if any.
    pub job: Option<&'static str>,
    /// On docker, the container (by slot) that serves the scraped port.
    pub container: Option<&'static str>,
}

impl Listen {
    fn new(port: u16, what: impl Into<String>, reach: Reach) -> Listen {
        Listen { port, what: what.into(), reach, job: None, container: None }
    }

    fn scraped(mut self, job: &'static str, container: &'static str) -> Listen {
        self.job = Some(job);
        self.container = Some(container);
        self
    }
}

/// What a changed file asks of the service that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    /// Nothing: the service rereads it (Prometheus file_sd), or it is in a bundle.
    #[default]
    Nothing,
    Reload(&'static str),
    Restart(&'static str),
    /// The app's units or environment: restart every instance (web, then workers), one at a time.
    Rolling,
    /// The workers' own unit or environment: restart every worker, one at a time.
    Workers,
    /// The users and passwords of a tier that changes them live ([`Credentials`]); else they
    /// are read when its service starts.
    Credentials(Credentials),
}

/// Users and passwords a tier's service holds and changes live, without the restart that would
/// cost it its clients (and, for Redis without persistence, its data): the new passwords added
/// first, so that clients on the old password and on the new both get in while the app rolls,
/// then each user made exactly what the tier's file says once every client has the new secret.
/// The tier names its service and container here; its scripts (the admin user it changes them
/// through, the add and the settle) are exec/commands.rs' [`crate::exec::commands::credentials`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    /// Redis' ACL users (`scalectl-auth.conf`), changed through scalectl's admin user.
    Redis,
}

impl Credentials {
    pub const ALL: [Credentials; 1] = [Credentials::Redis];

    /// The unit that reads them.
    pub const fn service(self) -> &'static str {
        match self {
            Credentials::Redis => "redis-server.service",
        }
    }

    /// On docker, the container (by slot) that holds them.
    pub const fn container(self) -> &'static str {
        match self {
            Credentials::Redis => "redis",
        }
    }

    /// The entry a host's pending file keeps while new passwords are added and the old ones
    /// not yet refused (an apply stopped between).
    pub const fn pending(self) -> &'static str {
        match self {
            Credentials::Redis => "redis-users",
        }
    }

    /// For people: "Redis' users".
    pub const fn users(self) -> &'static str {
        match self {
            Credentials::Redis => "Redis' users",
        }
    }

    /// For people: the admin user scalectl changes them through.
    pub const fn admin(self) -> &'static str {
        match self {
            Credentials::Redis => "scalectl's Redis admin user",
        }
    }
}

/// A tier's credentials on its host, and the port its admin user reaches its service on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LiveCredentials {
    pub kind: Credentials,
    pub port: u16,
}

/// A file a tier places on its host: the template it is rendered from, where it goes, its mode
/// and group, what a change to it means, and whether it holds a secret (then rendered only with
/// resolved values, never diffed, printed or read back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierFile {
    pub template: &'static str,
    pub path: String,
    pub mode: u32,
    pub group: &'static str,
    pub on_change: OnChange,
    pub secret: bool,
}

/// A plain file (0644, root, nothing to do on a change), made more by the builders below.
pub(crate) fn file(template: &'static str, path: impl Into<String>) -> TierFile {
    TierFile { template, path: path.into(), mode: 0o644, group: "root", on_change: OnChange::Nothing, secret: false }
}

impl TierFile {
    pub(crate) fn mode(self, mode: u32) -> Self {
        TierFile { mode, ..self }
    }
    fn group(self, group: &'static str) -> Self {
        TierFile { group, ..self }
    }
    fn reloads(self, unit: &'static str) -> Self {
        TierFile { on_change: OnChange::Reload(unit), ..self }
    }
    fn restarts(self, unit: &'static str) -> Self {
        TierFile { on_change: OnChange::Restart(unit), ..self }
    }
    fn rolls(self) -> Self {
        TierFile { on_change: OnChange::Rolling, ..self }
    }
    fn rolls_workers(self) -> Self {
        TierFile { on_change: OnChange::Workers, ..self }
    }
    fn credentials(self, kind: Credentials) -> Self {
        TierFile { on_change: OnChange::Credentials(kind), ..self }
    }
    pub(crate) fn secret(self) -> Self {
        TierFile { secret: true, ..self }
    }
}

/// One tier as it runs on one host.
#[derive(Debug, Clone)]
pub struct Tier {
    pub name: &'static str,
    /// The role that places it; None: every host has it.
    pub role: Option<Role>,
    pub packages: Vec<String>,
    /// Units kept enabled and running.
    pub services: Vec<String>,
    /// Its files on the host, in the order they are written.
    pub files: Vec<TierFile>,
    pub listens: Vec<Listen>,
    /// Users and passwords it changes live, when it has any (Redis with a password).
    pub credentials: Option<LiveCredentials>,
    /// The command that checks its configuration before its unit reloads or restarts for it
    /// (`nginx -t`): a file it refuses is put back and nothing reloads.
    pub check: Option<Check>,
}

/// A tier's configuration check: `command` (a shell line on the host) before `unit` reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub unit: &'static str,
    pub command: String,
}

/// The packet filter's unit (scalectl's own nftables table) and its rules.
pub const FIREWALL_SERVICE: &str = "scalectl-firewall.service";
pub const FIREWALL_RULES: &str = "/etc/scalectl/firewall.nft";
/// Reports each app instance to the node exporter's textfile collector, with this script.
pub const INSTANCES_TIMER: &str = "scalectl-instances.timer";
pub const INSTANCES_SCRIPT: &str = "/usr/local/lib/scalectl/instances.sh";
/// Rotates the collector's files by size (logrotate, with this configuration).
pub const COLLECTOR_ROTATION_TIMER: &str = "scalectl-logrotate.timer";
pub const COLLECTOR_LOGROTATE: &str = "/etc/scalectl/logrotate-collector.conf";
/// The Redis exporter's passwords by target (`-redis.password-file`): its own password, for the
/// Redis it is configured for and no other address a `/scrape?target=` names.
pub const REDIS_EXPORTER_PASSWORDS: &str = "/etc/scalectl/redis-exporter.json";
/// Prometheus' web config (`--web.config.file`): the bcrypt hash of observability.prometheus.password.
pub const PROMETHEUS_WEB_CONFIG: &str = "/etc/prometheus/web.yml";
/// That password itself, for Prometheus' scrape of its own metrics and Grafana's data source.
pub const PROMETHEUS_PASSWORD_FILE: &str = "/etc/scalectl/prometheus-password";

/// The load balancer's site file on a host (nginx, in front: its one upstream is the balancer).
pub fn site_path(topology: &str) -> String {
    format!("/etc/nginx/conf.d/{topology}.conf")
}

/// The balancer behind nginx (HAProxy): its configuration on a host, which lists every app
/// instance as a server named [`balancer_server`].
pub const BALANCER_CONFIG: &str = "/etc/haproxy/haproxy.cfg";
/// Its runtime API, where an instance is taken out and put back without a reload (root only).
pub const BALANCER_SOCKET: &str = "/run/haproxy/admin.sock";
/// Its unit on a host.
pub const BALANCER_SERVICE: &str = "haproxy.service";

/// Patroni's configuration on a database host (no secret in it: the passwords are in
/// [`PATRONI_SECRETS`], which its unit reads as environment).
pub const PATRONI_CONFIG: &str = "/etc/patroni/config.yml";
pub const PATRONI_SECRETS: &str = "/etc/patroni/scalectl.env";
pub const PATRONI_SERVICE: &str = "patroni.service";
/// The postgres exporter's own queries: which role the member has, and each replica's lag in bytes.
pub const POSTGRES_EXPORTER_QUERIES: &str = "/etc/scalectl/postgres-exporter-queries.yaml";
/// The app role's password, for the script below alone (root:postgres 0440): never in Patroni's
/// environment, which every PostgreSQL process inherits.
pub const DATABASE_APP_PASSWORD: &str = "/etc/patroni/scalectl-app-password";
/// What Patroni runs once, on the member that bootstraps the cluster: the app's role and database.
pub const PATRONI_POST_BOOTSTRAP: &str = "/etc/patroni/scalectl-post-bootstrap.sh";
/// Where each member keeps its data (not Debian's `15/main`, which its package would make and
/// start on its own: see [`DATABASE_PREINSTALL`]).
pub const DATABASE_DATA_DIR: &str = "/var/lib/postgresql/15/scalectl";
/// Written before PostgreSQL's package is installed: Debian's postgresql-common then makes no
/// `main` cluster of its own (which would start on the port Patroni's member needs).
pub const DATABASE_PREINSTALL: (&str, &str, &str) =
    ("postgresql-15", "/etc/postgresql-common/createcluster.d/scalectl.conf", "# Written by scalectl: Patroni makes and runs this host's PostgreSQL.\ncreate_main_cluster = false\n");

/// On docker: member `i` (from 1) of the database, its container's slot and Patroni's name for it.
pub fn database_slot(i: u32) -> String {
    format!("db-{i}")
}

/// On docker: whether `slot` is a member's ([`database_slot`]).
pub fn is_database_slot(slot: &str) -> bool {
    slot.strip_prefix("db-").is_some_and(|n| n.parse::<u32>().is_ok())
}

/// On docker: etcd's slot, and HAProxy's in front of the members (the app's writer and reader).
pub const ETCD_SLOT: &str = "etcd";
pub const DB_PROXY_SLOT: &str = "db-proxy";

/// The app's secrets file on a host (0600: resolved secrets, the database's URLs), which its units
/// and the release command read.
pub fn secrets_file(app: &str) -> String {
    format!("/etc/{app}/secrets.env")
}

/// The balancer's backend that holds the app's instances.
pub fn balancer_backend(topology: &str) -> String {
    format!("{}_app", topology.replace('-', "_"))
}

/// The name the balancer knows an instance by: its host (or replica slot) and port. Both are
/// DNS labels and digits, characters HAProxy's names allow.
pub fn balancer_server(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

fn tier(name: &'static str, role: Option<Role>, packages: &[&str], services: &[&str], files: Vec<TierFile>, listens: Vec<Listen>) -> Tier {
    Tier {
        name,
        role,
        packages: packages.iter().map(|s| s.to_string()).collect(),
        services: services.iter().map(|s| s.to_string()).collect(),
        files,
        listens,
        credentials: None,
        check: None,
    }
}

impl Topology {
    /// Every tier host `h` runs, in the order they start (the firewall first) and their ports are
    /// claimed (after the app's instances, which are placed apart).
    pub fn tiers_on(&self, h: &Host) -> Vec<Tier> {
        let mut out = Vec::new();
        out.push(tier(
            "host",
            None,
            &["nftables", "prometheus-node-exporter"],
            &[FIREWALL_SERVICE, "prometheus-node-exporter.service"],
            vec![
                // The node exporter, on the host's address only.
                file("exporters/prometheus-node-exporter.j2", "/etc/default/prometheus-node-exporter").restarts("prometheus-node-exporter.service"),
                // The packet filter for the fleet's internal ports (scalectl's own nftables table).
                file("firewall/scalectl.nft.j2", FIREWALL_RULES).reloads(FIREWALL_SERVICE),
                file("systemd/scalectl-firewall.service.j2", "/etc/systemd/system/scalectl-firewall.service").restarts(FIREWALL_SERVICE),
            ],
            vec![
                Listen::new(ports::NODE_EXPORTER, "the node exporter", Reach::Monitor).scraped("node", "node-exporter"),
                // Port 22 is sshd's only when the host is reached there; any other port the same.
                Listen::new(h.ssh.port, "sshd (the host's ssh.port)", Reach::Anyone),
            ],
        ));
        out[0].check = Some(Check { unit: FIREWALL_SERVICE, command: format!("nft -c -f {FIREWALL_RULES}") });
        match self.observability.logs.destination {
            LogDestination::Collector => {
                // Every host ships its lines; over TLS (a certificate of its own) when a collector runs.
                let mut packages = vec!["rsyslog", "rsyslog-relp"];
                if self.hosts.iter().any(|m| m.has(Role::Monitor)) {
                    packages.push("openssl");
                }
                let ship = file("logs/rsyslog-ship.conf.j2", "/etc/rsyslog.d/60-scalectl-ship.conf").restarts("rsyslog.service");
                out.push(tier("logs", None, &packages, &["rsyslog.service"], vec![ship], Vec::new()));
            }
            LogDestination::Loki => {
                let promtail = file("logs/promtail.yaml.j2", "/etc/promtail/scalectl.yaml").restarts("promtail.service");
                out.push(tier("logs", None, &[], &[], vec![promtail], Vec::new()));
            }
        }
        // The app's release runs here as web instances (the app role), workers (the worker role),
        // or both: the same packages, environment, secrets and target either way.
        let web = h.has(Role::App);
        let workers = h.has(Role::Worker) && self.app.workers.is_some();
        if web || workers {
            let app = self.app.name();
            let mut packages = vec!["curl"];
            // psql beside the app: for its release command and for people.
            if self.database.is_some() {
                packages.push("postgresql-client-15");
            }
            packages.extend(self.app.program.iter().flat_map(|p| p.packages.iter().map(String::as_str)));
            let mut files = Vec::new();
            let mut services = Vec::new();
            if web {
                files.push(file("systemd/scale-api@.service.j2", format!("/etc/systemd/system/{app}@.service")).rolls());
                // Only scale-api takes its port from systemd; a program of the user's binds its own.
                if self.app.program.is_none() {
                    files.push(file("systemd/scale-api@.socket.j2", "/etc/systemd/system/scale-api@.socket").rolls());
                }
            }
            if web && self.app.release_command.is_some() {
                // The release command's unit, one instance per release (`APP-release@ID`): written
                // with the other files, before apply runs it; a change to it restarts nothing.
                files.push(file("systemd/release@.service.j2", format!("/etc/systemd/system/{app}-release@.service")));
            }
            if workers {
                files.push(file("systemd/worker@.service.j2", format!("/etc/systemd/system/{app}-worker@.service")).rolls_workers());
                files.push(file("systemd/worker.env.j2", format!("/etc/{app}/worker.env")).mode(0o640).rolls_workers());
            }
            files.extend([
                file("systemd/scale-api.target.j2", format!("/etc/systemd/system/{app}.target")).rolls(),
                file("systemd/scale-api.env.j2", format!("/etc/{app}/{app}.env")).mode(0o640).rolls(),
            ]);
            // Each instance and worker as systemd and the kernel see it, for the node exporter (any app).
            files.extend([
                file("systemd/scalectl-instances.sh.j2", INSTANCES_SCRIPT).mode(0o755),
                file("systemd/scalectl-instances.service.j2", "/etc/systemd/system/scalectl-instances.service").restarts(INSTANCES_TIMER),
                file("systemd/scalectl-instances.timer.j2", "/etc/systemd/system/scalectl-instances.timer").restarts(INSTANCES_TIMER),
            ]);
            services.push(INSTANCES_TIMER);
            files.push(file("systemd/secrets.env.j2", secrets_file(app)).mode(0o600).rolls().secret());
            out.push(tier("app", Some(if web { Role::App } else { Role::Worker }), &packages, &services, files, Vec::new()));
        }
        // HAProxy: on the load balancer, the balancer behind nginx; on an app or worker host of a
        // fleet with a database, the writer and reader ports the app connects to. One
        // configuration file and one unit either way (a host may be both).
        let db_routes = self.database.is_some() && (h.has(Role::App) || h.has(Role::Worker));
        if h.has(Role::Lb) || db_routes {
            let mut listens = Vec::new();
            if h.has(Role::Lb) {
                // It holds the instances, and takes one out and back through its runtime API, so a
                // roll reloads neither nginx nor it.
                listens.push(Listen::new(ports::BALANCER, "the balancer (HAProxy, behind nginx)", Reach::Local));
                listens.push(Listen::new(ports::BALANCER_EXPORTER, "the balancer's metrics", Reach::Monitor).scraped("haproxy", "balancer"));
            }
            if db_routes && !h.has(Role::Lb) {
                // The database's routes: their servers' states and sessions.
                listens.push(Listen::new(ports::BALANCER_EXPORTER, "HAProxy's metrics", Reach::Monitor).scraped("haproxy", "db-proxy"));
            }
            if db_routes {
                listens.push(Listen::new(ports::DB_WRITER, "the database's writer (HAProxy to the primary)", Reach::Local));
                listens.push(Listen::new(ports::DB_READER, "the database's reader (HAProxy to the replicas)", Reach::Local));
            }
            let mut balancer = tier(
                if h.has(Role::Lb) { "balancer" } else { "db-routes" },
                Some(if h.has(Role::Lb) { Role::Lb } else if h.has(Role::App) { Role::App } else { Role::Worker }),
                &["haproxy", "socat"],
                &[BALANCER_SERVICE],
                vec![file("haproxy/haproxy.cfg.j2", BALANCER_CONFIG).reloads(BALANCER_SERVICE)],
                listens,
            );
            balancer.check = Some(Check { unit: BALANCER_SERVICE, command: format!("haproxy -c -q -f {BALANCER_CONFIG}") });
            out.push(balancer);
        }
        if h.has(Role::Lb) {
            let lb = &self.load_balancer;
            let mut listens = vec![Listen::new(lb.listen, "the load balancer", Reach::Anyone)];
            if let Some(tls) = &lb.tls {
                listens.push(Listen::new(tls.listen, "the load balancer's TLS listener", Reach::Anyone));
            }
            listens.push(Listen::new(lb.status_port, "nginx stub_status", Reach::Local));
            listens.push(Listen::new(ports::NGINX_EXPORTER, "the nginx exporter", Reach::Monitor).scraped("nginx", "nginx-exporter"));
            listens.push(Listen::new(ports::MTAIL, "mtail (the access log as metrics)", Reach::Monitor).scraped("nginx-log", "mtail"));
            out.push(tier(
                "lb",
                Some(Role::Lb),
                &["nginx", "prometheus-nginx-exporter", "mtail"],
                &["nginx.service", "prometheus-nginx-exporter.service", "mtail.service"],
                vec![
                    file("nginx/site.conf.j2", site_path(&self.name)).reloads("nginx.service"),
                    file("exporters/prometheus-nginx-exporter.j2", "/etc/default/prometheus-nginx-exporter").restarts("prometheus-nginx-exporter.service"),
                    file("nginx/scalectl.mtail.j2", "/etc/mtail/scalectl-nginx.mtail").reloads("mtail.service"),
                    file("exporters/mtail.j2", "/etc/default/mtail").restarts("mtail.service"),
                ],
                listens,
            ));
            out.last_mut().expect("just pushed").check = Some(Check { unit: "nginx.service", command: "nginx -t -q".into() });
        }
        if let (true, Some(redis)) = (h.has(Role::Redis), &self.redis) {
            let mut t = tier(
                "redis",
                Some(Role::Redis),
                &["redis-server", "prometheus-redis-exporter"],
                &["redis-server.service", "prometheus-redis-exporter.service"],
                vec![
                    file("redis/redis.conf.j2", "/etc/redis/redis.conf").mode(0o640).group("redis").restarts("redis-server.service"),
                    file("redis/redis-server.override.conf.j2", "/etc/systemd/system/redis-server.service.d/scalectl.conf").restarts("redis-server.service"),
                    file("exporters/prometheus-redis-exporter.j2", "/etc/default/prometheus-redis-exporter").restarts("prometheus-redis-exporter.service"),
                    file("exporters/prometheus-redis-exporter.override.conf.j2", "/etc/systemd/system/prometheus-redis-exporter.service.d/scalectl.conf")
                        .restarts("prometheus-redis-exporter.service"),
                    file("redis/auth.conf.j2", "/etc/redis/scalectl-auth.conf").mode(0o640).group("redis").credentials(Credentials::Redis).secret(),
                    file("exporters/redis-exporter.json.j2", REDIS_EXPORTER_PASSWORDS).mode(0o640).group("prometheus").restarts("prometheus-redis-exporter.service").secret(),
                ]
                .into_iter()
                .chain(self.queue().map(|_| file("exporters/queue-oldest.lua.j2", super::QUEUE_EXPORTER_SCRIPT).restarts("prometheus-redis-exporter.service")))
                .collect(),
                vec![
                    Listen::new(redis.port, "redis", Reach::Fleet),
                    Listen::new(ports::REDIS_EXPORTER, "the redis exporter", Reach::Monitor).scraped("redis", "redis-exporter"),
                ],
            );
            // Its users change live through scalectl's admin user, which a password-less Redis has not.
            t.credentials = self.redis_password().map(|_| LiveCredentials { kind: Credentials::Redis, port: redis.port });
            out.push(t);
        }
        if let (true, Some(_)) = (h.has(Role::Etcd), &self.database) {
            out.push(tier(
                "etcd",
                Some(Role::Etcd),
                &["etcd-server"],
                &["etcd.service"],
                vec![
                    file("database/etcd.default.j2", "/etc/default/etcd").restarts("etcd.service"),
                    file("database/etcd.override.conf.j2", "/etc/systemd/system/etcd.service.d/scalectl.conf").restarts("etcd.service"),
                ],
                vec![
                    Listen::new(ports::ETCD_CLIENT, "etcd (Patroni's leader lock)", Reach::Etcd),
                    Listen::new(ports::ETCD_PEER, "etcd's peers", Reach::Etcd),
                ],
            ));
        }
        if let (true, Some(_)) = (h.has(Role::Database), &self.database) {
            out.push(tier(
                "database",
                Some(Role::Database),
                &["postgresql-15", "patroni", "python3-etcd", "curl", "prometheus-postgres-exporter"],
                &[PATRONI_SERVICE, "prometheus-postgres-exporter.service"],
                vec![
                    file("database/post-bootstrap.sh.j2", PATRONI_POST_BOOTSTRAP).mode(0o755),
                    // Patroni rereads it on a reload, and restarts PostgreSQL itself when a
                    // parameter asks for it.
                    file("database/patroni.yml.j2", PATRONI_CONFIG).mode(0o640).group("postgres").reloads(PATRONI_SERVICE),
                    file("database/patroni.override.conf.j2", "/etc/systemd/system/patroni.service.d/scalectl.conf").restarts(PATRONI_SERVICE),
                    file("database/patroni.env.j2", PATRONI_SECRETS).mode(0o600).restarts(PATRONI_SERVICE).secret(),
                    file("database/app-password.j2", DATABASE_APP_PASSWORD).mode(0o440).group("postgres").secret(),
                    file("exporters/prometheus-postgres-exporter.j2", "/etc/default/prometheus-postgres-exporter").restarts("prometheus-postgres-exporter.service"),
                    file("exporters/postgres-queries.yaml.j2", POSTGRES_EXPORTER_QUERIES).restarts("prometheus-postgres-exporter.service"),
                ],
                vec![
                    Listen::new(ports::POSTGRES, "PostgreSQL", Reach::Database),
                    // Its /metrics too, for Prometheus, which the firewall lets in besides.
                    Listen::new(ports::PATRONI, "Patroni's REST API", Reach::Database).scraped("patroni", "db"),
                    Listen::new(ports::POSTGRES_EXPORTER, "the postgres exporter", Reach::Monitor).scraped("postgres", "postgres-exporter"),
                ],
            ));
        }
        if h.has(Role::Monitor) {
            let o = &self.observability;
            let mut packages = vec!["prometheus"];
            let mut services = vec!["prometheus.service"];
            let mut files = vec![
                file("prometheus/prometheus.yml.j2", "/etc/prometheus/prometheus.yml").reloads("prometheus.service"),
                file("prometheus/rules.yml.j2", "/etc/prometheus/scalectl/rules.yml").reloads("prometheus.service"),
                // Prometheus rereads file_sd targets by itself.
                file("prometheus/targets.json.j2", "/etc/prometheus/scalectl/targets.json"),
                file("prometheus/default.j2", "/etc/default/prometheus").restarts("prometheus.service"),
            ];
            let mut listens = vec![Listen::new(o.prometheus_port, "prometheus", Reach::Anyone)];
            if o.grafana {
                files.push(file("grafana/datasource.yaml.j2", "/etc/grafana/provisioning/datasources/scalectl.yaml").restarts("grafana-server.service"));
                files.push(file("grafana/dashboards.yaml.j2", "/etc/grafana/provisioning/dashboards/scalectl.yaml").restarts("grafana-server.service"));
                listens.push(Listen::new(o.grafana_port, "grafana", Reach::Anyone));
            }
            if o.logs.destination == LogDestination::Collector {
                packages.push("logrotate");
                services.push(COLLECTOR_ROTATION_TIMER);
                files.push(file("logs/rsyslog-collector.conf.j2", "/etc/rsyslog.d/50-scalectl-collector.conf").restarts("rsyslog.service"));
                // The collector's files, rotated by size every few minutes: no sender fills its disk.
                files.push(file("logs/logrotate-collector.conf.j2", COLLECTOR_LOGROTATE));
                files.push(file("systemd/scalectl-logrotate.service.j2", "/etc/systemd/system/scalectl-logrotate.service").restarts(COLLECTOR_ROTATION_TIMER));
                files.push(file("systemd/scalectl-logrotate.timer.j2", "/etc/systemd/system/scalectl-logrotate.timer").restarts(COLLECTOR_ROTATION_TIMER));
            }
            if self.target == Target::Hosts {
                for other in &self.hosts {
                    listens.push(Listen::new(self.relp_port_of(&other.name), format!("the log collector (lines of {})", other.name), Reach::Fleet));
                }
            } else {
                listens.push(Listen::new(o.logs.relp_port, "the log collector", Reach::Fleet));
            }
            if let Some(a) = &o.alertmanager {
                packages.push("prometheus-alertmanager");
                services.push("prometheus-alertmanager.service");
                files.push(file("alertmanager/default.j2", "/etc/default/prometheus-alertmanager").restarts("prometheus-alertmanager.service"));
                files.push(
                    file("alertmanager/alertmanager.yml.j2", "/etc/prometheus/alertmanager.yml").mode(0o640).group("prometheus").reloads("prometheus-alertmanager.service").secret(),
                );
                listens.push(Listen::new(a.port, "alertmanager", Reach::Anyone));
            }
            if o.prometheus_password.is_some() {
                // Prometheus asks for the password (its web config holds only its bcrypt hash); its own
                // scrape and Grafana's data source read the password from a file.
                files.push(file("prometheus/web.yml.j2", PROMETHEUS_WEB_CONFIG).mode(0o640).group("prometheus").restarts("prometheus.service").secret());
                files.push(file("prometheus/password.j2", PROMETHEUS_PASSWORD_FILE).mode(0o640).group("prometheus").restarts("prometheus.service").secret());
            }
            out.push(tier("monitor", Some(Role::Monitor), &packages, &services, files, listens));
        }
        out
    }

    /// The ports of the app's instances on a host that runs `instances` of them (those past port
    /// 65535 left out: see [`Topology::port_conflict`]).
    pub fn instance_ports(&self, instances: u32) -> Vec<u16> {
        (0..instances).filter_map(|i| u16::try_from(u32::from(self.app.port) + i).ok()).collect()
    }

    /// The Prometheus jobs the fleet's tiers are scraped as, the app's first.
    pub fn scrape_jobs(&self) -> Vec<&'static str> {
        let mut jobs = vec!["app"];
        let everywhere = self.tiers_everywhere();
        for l in everywhere.iter().flat_map(|t| &t.listens) {
            if let Some(j) = l.job
                && !jobs.contains(&j)
            {
                jobs.push(j);
            }
        }
        jobs
    }

    /// The tiers the fleet runs somewhere: on hosts, each host's; on docker, the engine's.
    pub fn tiers_everywhere(&self) -> Vec<Tier> {
        match self.target {
            Target::Hosts => self.hosts.iter().flat_map(|h| self.tiers_on(h)).collect(),
            Target::Docker => self.tiers_on_one_engine(),
        }
    }

    /// The tiers as one Docker engine runs them (the docker target, and the compose bundle of
    /// any topology): as if one host had every role, each tier a container.
    pub fn tiers_on_one_engine(&self) -> Vec<Tier> {
        let mut roles = vec![Role::App, Role::Lb, Role::Redis, Role::Monitor];
        if self.database.is_some() {
            // Its members (`db-1..N`, each with its exporter); etcd has no port anyone scrapes.
            roles.push(Role::Database);
        }
        let all = Host {
            name: "engine".into(),
            address: "127.0.0.1".into(),
            ssh: Ssh { user: String::new(), port: 22, key: None },
            roles,
            weight: 1,
            cores: None,
            instances: None,
        };
        self.tiers_on(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Topology {
        crate::topology::parse("t.yaml", src).unwrap_or_else(|p| panic!("{p}"))
    }

    #[test]
    fn every_scraped_port_is_an_exporter_port_claimed_once_and_reached_by_the_monitor_only() {
        let t = parse("name: t\napp: {port: 4000, instances: 2}\nredis: {password: {env: P}}\nhosts:\n  a: {address: 10.0.0.1, roles: [lb, redis, monitor]}\n  b: {address: 10.0.0.2, roles: [app]}\n");
        for h in &t.hosts {
            let tiers = t.tiers_on(h);
            let claims = t.port_claims(h, 2);
            for l in tiers.iter().flat_map(|tier| &tier.listens) {
                assert_eq!(claims.iter().filter(|(p, _, _)| *p == l.port).count(), 1, "{} on {}", l.what, h.name);
                assert_eq!(l.job.is_some(), l.reach == Reach::Monitor, "{}: scraped exactly when only Prometheus reaches it", l.what);
            }
            assert_eq!(tiers[0].services[0], FIREWALL_SERVICE, "the packet filter starts first");
        }
        assert_eq!(t.scrape_jobs(), ["app", "node", "haproxy", "nginx", "nginx-log", "redis"]);
    }

    /// Patroni's port is the database's (HAProxy's checks, the other members) and Prometheus'
    /// (its /metrics): the one scraped port others reach too. Every other is the monitor's alone.
    #[test]
    fn scraped_ports_of_a_database_fleet() {
        let t = parse("name: t\napp: {instances: 1}\nredis: {password: {env: Q}}\nhosts:\n  a: {address: 10.0.0.1, roles: [lb, monitor, redis]}\n  b: {address: 10.0.0.2, roles: [app]}\n  d: {address: 10.0.0.3, roles: [database, etcd]}\ndatabase: {password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n");
        for h in &t.hosts {
            for l in t.tiers_on(h).iter().flat_map(|tier| &tier.listens).filter(|l| l.job.is_some()) {
                let shared = l.job == Some("patroni");
                assert_eq!(l.reach, if shared { Reach::Database } else { Reach::Monitor }, "{} on {}", l.what, h.name);
            }
        }
        assert_eq!(t.scrape_jobs(), ["app", "node", "haproxy", "nginx", "nginx-log", "redis", "patroni", "postgres"]);
        // The app host's HAProxy (the database's routes) is scraped as the balancer is.
        let app = t.hosts.iter().find(|h| h.name == "b").unwrap();
        assert!(t.tiers_on(app).iter().flat_map(|tier| &tier.listens).any(|l| l.job == Some("haproxy")));
    }

    #[test]
    fn a_fleet_without_redis_has_no_redis_tier_anywhere() {
        let t = parse("name: t\napp:\n  port: 4000\n  instances: 1\n  program: {release: ./x, command: [node, bin/www]}\nhosts:\n  a: {address: 10.0.0.1, roles: [app, lb, monitor]}\n");
        let tiers = t.tiers_everywhere();
        assert!(tiers.iter().all(|tier| tier.name != "redis" && !tier.packages.iter().any(|p| p.contains("redis"))));
        assert_eq!(t.scrape_jobs(), ["app", "node", "haproxy", "nginx", "nginx-log"]);
        assert!(!t.tiers_on_one_engine().iter().any(|tier| tier.name == "redis"));
    }
}
