//! The values templates see: the topology plus what is derived from it (instances, endpoints).
//!
//! Three views of one topology: `hosts` (one context per host, over SSH), `docker` (compose
//! service names as addresses, replicas instead of hosts) and `asg` (what every autoscaling
//! instance runs). Templates branch on `view` only where paths or addresses differ.

use std::collections::BTreeMap;

use minijinja::Value;
use serde::Serialize;

use crate::topology::tiers::Reach;
use crate::topology::{Host, Instances, Role, Ssh, Topology, ports};

/// What only the targets know, passed in so rendering stays pure.
#[derive(Debug, Clone)]
pub struct Facts {
    /// CPU cores per host name (observed), for `instances: max`.
    pub cores: BTreeMap<String, u32>,
    /// Cores assumed where neither an observation nor the topology says (e.g. the engine's CPUs).
    pub default_cores: u32,
    /// App host addresses that are names, as the load balancer resolved them (observed there):
    /// nginx logs the upstream it connected to by IP, and Prometheus labels each instance with it.
    pub resolved: BTreeMap<String, std::net::IpAddr>,
}

impl Facts {
    pub fn with_default_cores(default_cores: u32) -> Self {
        Facts { cores: BTreeMap::new(), default_cores: default_cores.max(1), resolved: BTreeMap::new() }
    }

    /// An address as an IP: itself, or the name as resolved (else the name as it is).
    pub fn ip_of(&self, address: &str) -> String {
        if address.parse::<std::net::IpAddr>().is_ok() {
            return address.to_string();
        }
        self.resolved.get(address).map(|ip| ip.to_string()).unwrap_or_else(|| address.to_string())
    }

    /// Cores of a host: observed, else declared in the topology, else the default.
    pub fn cores_of(&self, h: &Host) -> u32 {
        self.cores.get(&h.name).copied().or(h.cores).unwrap_or(self.default_cores).max(1)
    }
}


/// One scale-api process: where the load balancer and Prometheus reach it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Instance {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub weight: u32,
    /// `address:port` as the load balancer logs it: by IP where it resolved the host's name
    /// (Facts::resolved). Prometheus and the instances' measuring script label the instance with it.
    pub upstream: String,
}

impl Instance {
    /// An instance the load balancer reaches at `address` itself.
    pub fn new(host: String, address: String, port: u16, weight: u32) -> Instance {
        let upstream = super::filters::hostport(&address, port);
        Instance { host, address, port, weight, upstream }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub address: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub name: String,
    pub address: String,
    pub roles: Vec<Role>,
    pub ssh: Ssh,
    /// Ports of this host's app instances.
    pub ports: Vec<u16>,
    /// Indexes of this host's workers (`APP-worker@N.service`).
    pub workers: Vec<u32>,
    /// The collector's RELP port for this host's lines (`Topology::relp_port_of`).
    pub relp_port: u16,
    /// Ports only Prometheus may reach here: the exporters of this host's tiers.
    pub exporter_ports: Vec<u16>,
    /// Ports only the hosts that use the database reach here (PostgreSQL, Patroni's REST API),
    /// and only Patroni and etcd's peers (etcd).
    pub database_ports: Vec<u16>,
    /// Those of them Prometheus on the monitor host scrapes too (Patroni's API: its /metrics).
    pub database_scraped_ports: Vec<u16>,
    pub etcd_ports: Vec<u16>,
    /// Its address as an IP: the address itself, or its name as the fleet resolved it
    /// (Facts::resolved); the name where nothing resolved it (`scalectl render`).
    pub ip: String,
}

/// The database tier as its templates see it: Patroni's members, etcd's, and the hosts whose
/// app connects (through HAProxy on their own host).
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseView {
    pub members: Vec<Member>,
    pub etcd: Vec<Member>,
    pub clients: Vec<Member>,
    pub postgres_port: u16,
    pub patroni_port: u16,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub writer_port: u16,
    pub reader_port: u16,
    pub data_dir: &'static str,
    pub post_bootstrap: &'static str,
    pub superuser: &'static str,
    pub replication_user: &'static str,
    pub rest_user: &'static str,
    pub monitor_user: &'static str,
    pub app_password_file: &'static str,
    pub exporter_port: u16,
    pub exporter_queries: &'static str,
}

impl DatabaseView {
    fn new(members: Vec<Member>, etcd: Vec<Member>, clients: Vec<Member>) -> DatabaseView {
        use crate::topology::tiers as tt;
        DatabaseView {
            members,
            etcd,
            clients,
            postgres_port: ports::POSTGRES,
            patroni_port: ports::PATRONI,
            etcd_client_port: ports::ETCD_CLIENT,
            etcd_peer_port: ports::ETCD_PEER,
            writer_port: ports::DB_WRITER,
            reader_port: ports::DB_READER,
            data_dir: tt::DATABASE_DATA_DIR,
            post_bootstrap: tt::PATRONI_POST_BOOTSTRAP,
            superuser: crate::topology::DB_SUPERUSER,
            replication_user: crate::topology::DB_REPLICATION_USER,
            rest_user: crate::topology::DB_REST_USER,
            monitor_user: crate::topology::DB_MONITOR_USER,
            app_password_file: tt::DATABASE_APP_PASSWORD,
            exporter_port: ports::POSTGRES_EXPORTER,
            exporter_queries: tt::POSTGRES_EXPORTER_QUERIES,
        }
    }

    /// On one engine: the members `db-1..N` and etcd, each a container reached by its slot name
    /// on the topology's network, listening on every address of its own; pg_hba admits that
    /// network (`samenet`: the subnets the member's container is on), which holds the topology's
    /// containers only.
    fn on_engine(db: &crate::topology::Database) -> DatabaseView {
        let container = |name: String| Member { address: name.clone(), name, ip: "0.0.0.0".into(), hba: "samenet".into() };
        let members = (1..=db.docker_members).map(|i| container(crate::topology::tiers::database_slot(i))).collect();
        DatabaseView::new(members, vec![container(crate::topology::tiers::ETCD_SLOT.into())], vec![container("app".into())])
    }
}

/// A host as another tier reaches it: its name, address, and that address as an IP.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub ip: String,
    /// As pg_hba.conf names it: `IP/32` (or `/128`), else the name itself (`scalectl render`,
    /// which resolves nothing; PostgreSQL then checks the name both ways).
    pub hba: String,
}

impl Member {
    fn of(h: &Host, facts: &Facts) -> Member {
        let ip = facts.ip_of(&h.address);
        let hba = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => format!("{ip}/32"),
            Ok(std::net::IpAddr::V6(_)) => format!("{ip}/128"),
            Err(_) => ip.clone(),
        };
        Member { name: h.name.clone(), address: h.address.clone(), ip, hba }
    }
}

/// One target Prometheus scrapes besides the app's instances, from the tier table.
#[derive(Debug, Clone, Serialize)]
pub struct Scrape {
    pub job: &'static str,
    /// The `host` label: the host's name, or on docker what the container stands for.
    pub host: String,
    /// `address:port`, or `container:port` on docker.
    pub target: String,
}

/// The fixed ports the exporters listen on (`topology::ports`), for templates.
#[derive(Debug, Clone, Serialize)]
pub struct Ports {
    pub node_exporter: u16,
    pub redis_exporter: u16,
    pub nginx_exporter: u16,
    pub mtail: u16,
    pub balancer_exporter: u16,
}

/// The balancer behind nginx (HAProxy) as its template and nginx's see it.
#[derive(Debug, Clone, Serialize)]
pub struct Balancer {
    /// Where it listens for nginx: loopback on a host, the topology's network on docker.
    pub port: u16,
    /// The runtime API's socket.
    pub socket: String,
    /// The backend that holds the app's instances.
    pub backend: String,
    /// How long nginx keeps an idle connection to it...
    pub nginx_idle_ms: u64,
    /// ...and how long it keeps one from nginx: longer, so that nginx always closes first and never
    /// sends a request into a connection the balancer is closing.
    pub idle_ms: u64,
    /// Connection attempts after the first (`next_upstream.tries` - 1).
    pub retries: u32,
    /// `next_upstream.on` in HAProxy's words (`retry-on`).
    pub retry_on: Vec<&'static str>,
}

impl Balancer {
    fn of(t: &Topology) -> Balancer {
        use crate::topology::NextUpstreamOn as On;
        let lb = &t.load_balancer;
        let mut retry_on: Vec<&'static str> = Vec::new();
        for on in &lb.next_upstream {
            let words: &[&'static str] = match on {
                On::Error => &["conn-failure", "empty-response"],
                On::Timeout => &["conn-failure", "response-timeout"],
                On::InvalidHeader => &["junk-response"],
                On::Http500 => &["500"],
                On::Http502 => &["502"],
                On::Http503 => &["503"],
                On::Http504 => &["504"],
                // Refused by validation (HAProxy 2.6 has no retry on 429).
                On::Http429 => &[],
            };
            for w in words {
                if !retry_on.contains(w) {
                    retry_on.push(w);
                }
            }
        }
        Balancer {
            port: ports::BALANCER,
            socket: crate::topology::tiers::BALANCER_SOCKET.into(),
            backend: crate::topology::tiers::balancer_backend(&t.name),
            // Short, so that a reloaded balancer's old process (which knows no drain after the
            // reload) is rid of nginx's idle connections within it.
            nginx_idle_ms: 10_000,
            idle_ms: 15_000,
            retries: lb.next_upstream_tries.saturating_sub(1),
            retry_on,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ctx {
    pub t: Topology,
    /// `hosts`, `docker` or `asg`.
    pub view: &'static str,
    /// The host being rendered (hosts view only).
    pub host: Option<HostView>,
    pub hosts: Vec<HostView>,
    pub instances: Vec<Instance>,
    pub lbs: Vec<Endpoint>,
    pub redis: Option<Endpoint>,
    pub monitor: Option<Endpoint>,
    /// The app's name (units `APP@PORT.service`, /etc/APP): the program's, or `scale-api`.
    pub app: String,
    /// Topology::redis_reached_remotely: Redis listens on its host's address too, not loopback only.
    pub redis_remote: bool,
    /// Hosts view with a collector on a monitor host: the log TLS files every host has (RELP
    /// over TLS, peers checked by name). None elsewhere: the docker target's RELP stays on its own
    /// network, and the autoscaling group's instances have no certificate.
    pub log_tls: Option<super::LogTlsFiles>,
    /// The load balancers' site file, where a drain marks an instance's upstream server down.
    pub site: String,
    /// What Prometheus scrapes besides the instances (hosts and docker views), grouped by job.
    pub scrapes: Vec<Scrape>,
    /// The Prometheus jobs, the app's first (`Topology::scrape_jobs`).
    pub jobs: Vec<&'static str>,
    pub ports: Ports,
    pub balancer: Balancer,
    /// The queue the app's workers consume, as the Redis exporter measures it.
    pub queue: Option<crate::topology::QueueMeasures>,
    /// The database tier (hosts view, where the topology has one).
    pub database: Option<DatabaseView>,
    pub version: &'static str,
}

impl Ctx {
    fn base(t: &Topology, view: &'static str) -> Ctx {
        Ctx {
            t: t.clone(),
            view,
            host: None,
            hosts: Vec::new(),
            instances: Vec::new(),
            lbs: Vec::new(),
            redis: None,
            monitor: None,
            app: t.app.name().to_string(),
            redis_remote: t.redis_reached_remotely(),
            log_tls: None,
            site: super::site_path(&t.name),
            scrapes: Vec::new(),
            jobs: t.scrape_jobs(),
            ports: Ports { node_exporter: ports::NODE_EXPORTER, redis_exporter: ports::REDIS_EXPORTER, nginx_exporter: ports::NGINX_EXPORTER, mtail: ports::MTAIL, balancer_exporter: ports::BALANCER_EXPORTER },
            balancer: Balancer::of(t),
            queue: t.queue().map(|q| q.measures()),
            database: None,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Orders the scrape targets by job, as `jobs` lists them (hosts in file order within each).
    fn sort_scrapes(&mut self) {
        let jobs = self.jobs.clone();
        self.scrapes.sort_by_key(|s| jobs.iter().position(|j| *j == s.job));
    }

    /// The fleet as hosts reached over the network.
    pub fn hosts_view(t: &Topology, facts: &Facts) -> Ctx {
        let mut c = Ctx::base(t, "hosts");
        for h in &t.hosts {
            let ports: Vec<u16> = if h.has(Role::App) {
                (0..t.instances_on(h, facts.cores_of(h))).filter_map(|i| u16::try_from(u32::from(t.app.port) + i).ok()).collect()
            } else {
                Vec::new()
            };
            for &port in &ports {
                let mut i = Instance::new(h.name.clone(), h.address.clone(), port, h.weight);
                if let Some(ip) = facts.resolved.get(&h.address) {
                    i.upstream = super::filters::hostport(&ip.to_string(), port);
                }
                c.instances.push(i);
            }
            let ep = Endpoint { host: h.name.clone(), address: h.address.clone() };
            if h.has(Role::Lb) {
                c.lbs.push(ep.clone());
            }
            if h.has(Role::Redis) && c.redis.is_none() {
                c.redis = Some(ep.clone());
            }
            if h.has(Role::Monitor) && c.monitor.is_none() {
                c.monitor = Some(ep);
            }
            let relp_port = t.relp_port_of(&h.name);
            let tiers = t.tiers_on(h);
            let listens = || tiers.iter().flat_map(|tier| &tier.listens);
            let exporter_ports = listens().filter(|l| l.reach == Reach::Monitor).map(|l| l.port).collect();
            // Patroni's API is the database's and Prometheus' too (its /metrics).
            let database_ports = listens().filter(|l| l.reach == Reach::Database && l.job.is_none()).map(|l| l.port).collect();
            let database_scraped_ports = listens().filter(|l| l.reach == Reach::Database && l.job.is_some()).map(|l| l.port).collect();
            let etcd_ports = listens().filter(|l| l.reach == Reach::Etcd).map(|l| l.port).collect();
            for l in listens() {
                if let Some(job) = l.job {
                    c.scrapes.push(Scrape { job, host: h.name.clone(), target: super::filters::hostport(&h.address, l.port) });
                }
            }
            c.hosts.push(HostView {
                name: h.name.clone(),
                address: h.address.clone(),
                roles: h.roles.clone(),
                ssh: h.ssh.clone(),
                ports,
                workers: t.workers_on(h, facts.cores_of(h)),
                relp_port,
                exporter_ports,
                database_ports,
                database_scraped_ports,
                etcd_ports,
                ip: facts.ip_of(&h.address),
            });
        }
        if t.database.is_some() {
            let with = |keep: &dyn Fn(&Host) -> bool| -> Vec<Member> {
                t.hosts.iter().filter(|h| keep(h)).map(|h| Member::of(h, facts)).collect()
            };
            c.database = Some(DatabaseView::new(with(&|h| h.has(Role::Database)), with(&|h| h.has(Role::Etcd)), with(&|h| h.has(Role::App) || h.has(Role::Worker))));
        }
        c.sort_scrapes();
        if c.monitor.is_some() && t.observability.logs.destination == crate::topology::LogDestination::Collector {
            c.log_tls = Some(super::LogTlsFiles::in_dir(super::LOG_TLS_DIR));
        }
        c
    }

    /// The template context. Converted once; per-host contexts share it (values are reference-counted).
    pub fn value(&self) -> Value {
        Value::from(minijinja::value::Serde(self))
    }

    /// The context for one host of the hosts view: the fleet plus `host`.
    pub fn for_host(&self, fleet: &Value, name: &str) -> Value {
        let host = self.hosts.iter().find(|h| h.name == name);
        minijinja::context! { host => Value::from(minijinja::value::Serde(host)), ..fleet.clone() }
    }

    /// The fleet as compose services: replicas `api-1..N`, `lb`, `redis`, `prometheus`.
    pub fn docker_view(t: &Topology, facts: &Facts) -> Ctx {
        let mut c = Ctx::base(t, "docker");
        let replicas = match t.app.instances {
            Instances::Count(n) => n.clamp(1, 64) as u32,
            Instances::Max => facts.default_cores,
        };
        for i in 1..=replicas {
            c.instances.push(Instance::new(format!("api-{i}"), format!("api-{i}"), t.app.port, 1));
        }
        c.lbs.push(Endpoint { host: "lb".into(), address: "lb".into() });
        c.redis = t.redis.is_some().then(|| Endpoint { host: "redis".into(), address: "redis".into() });
        // The exporter containers, reached by their slot names; the node exporter's is the engine's machine.
        for tier in t.tiers_on_one_engine() {
            for l in &tier.listens {
                match (l.job, l.container, &t.database) {
                    // Per member: `postgres-exporter-N` and Patroni's `db-N` for `db-N`.
                    (Some(job), Some(container), Some(db)) if tier.name == "database" => {
                        for i in 1..=db.docker_members {
                            c.scrapes.push(Scrape { job, host: crate::topology::tiers::database_slot(i), target: format!("{container}-{i}:{}", l.port) });
                        }
                    }
                    (Some(job), Some(container), _) => {
                        let host = match tier.name {
                            "host" => "engine",
                            other => other,
                        };
                        c.scrapes.push(Scrape { job, host: host.into(), target: format!("{container}:{}", l.port) });
                    }
                    _ => {}
                }
            }
        }
        if t.database.is_some() {
            // HAProxy in front of the members: a container of its own.
            let proxy = crate::topology::tiers::DB_PROXY_SLOT;
            c.scrapes.push(Scrape { job: "haproxy", host: proxy.into(), target: format!("{proxy}:{}", ports::BALANCER_EXPORTER) });
        }
        c.database = t.database.as_ref().map(DatabaseView::on_engine);
        c.sort_scrapes();
        c.monitor = Some(Endpoint { host: "prometheus".into(), address: "prometheus".into() });
        c
    }

    /// What every instance of the autoscaling group runs.
    pub fn asg_view(t: &Topology) -> Ctx {
        let mut c = Ctx::base(t, "asg");
        c.redis = t.hosts.iter().find(|h| h.has(Role::Redis)).map(|h| Endpoint { host: h.name.clone(), address: h.address.clone() });
        // Instances of the group ship their logs to the fleet's collector, like app hosts do.
        c.monitor = t.hosts.iter().find(|h| h.has(Role::Monitor)).map(|h| Endpoint { host: h.name.clone(), address: h.address.clone() });
        c
    }
}
