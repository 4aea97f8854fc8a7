//! Checks across the sections of a topology (the fleet as a whole): what the docker target does
//! not run, the roles hosts must have, port collisions per host, published lab services.

use super::*;

impl V {
    /// Checks across sections: what the target supports, which roles exist, port collisions per
    /// host, and that published lab services have a host.
    pub(super) fn fleet(&mut self, raw: &RawTopology, t: &Topology) {
        if t.target == Target::Docker {
            self.docker_limits(raw, t);
            return;
        }
        let Some(raw_hosts) = &raw.hosts else {
            self.push(Problem::at(raw.name.loc(), "no hosts: `target: hosts` needs a hosts section with at least one app host").help("add hosts, or set `target: docker`"));
            return;
        };
        self.roles(raw, raw_hosts, t);
        self.one_host_per_machine(raw_hosts, t);
        for h in &t.hosts {
            self.port_collisions(raw_hosts, t, h);
        }
        self.published(raw, t);
        self.app_user_is_not_a_login(raw, t);
    }

    /// The app must not run as the user scalectl logs in as: that user has passwordless sudo, so
    /// the app (and anyone who takes it over) would be root on its hosts.
    fn app_user_is_not_a_login(&mut self, raw: &RawTopology, t: &Topology) {
        let Some(user) = raw.app.program.as_ref().and_then(|p| p.user.as_ref()).filter(|u| syntax::app_user(u.value()).is_ok()) else { return };
        if let Some(h) = t.hosts.iter().find(|h| h.ssh.user == *user.value()) {
            self.push(
                Problem::at(user.loc(), format!("app.program.user `{}` is the user scalectl logs in to host `{}` as: it has passwordless sudo, so the app would be root there", user.value(), h.name))
                    .help("name a user of the app's own, or leave `user` out (systemd makes one per instance)"),
            );
        }
    }

    /// What `target: docker` does not run.
    fn docker_limits(&mut self, raw: &RawTopology, t: &Topology) {
        let anchor = raw.name.loc();
        if let Some(raw_db) = &raw.database
            && let Some((problem, help)) = t.pool_overflow(|_| 1)
        {
            let at = raw_db.pool.as_ref().map(|p| p.loc()).or(raw_db.max_connections.as_ref().map(|m| m.loc())).unwrap_or(raw_db.password.loc());
            self.push(Problem::at(at, problem).help(help));
        }
        if let Some(Sp(s)) = &raw.app.instances
            && let Instances::Count(n) = s.value
            && n > 64
        {
            self.at(Loc::from(&s.referenced), "the docker target runs at most 64 replicas");
        }
        if !t.observability.grafana
            && let Some((svc, _)) = raw.lab.iter().flat_map(|l| l.publish.iter()).find(|(s, _)| *s.value() == Service::Grafana)
        {
            self.at(svc.loc(), "grafana is published but observability.grafana is false");
        }
        if let Some(pw) = raw.observability.as_ref().and_then(|o| o.prometheus.as_ref()).and_then(|p| p.password.as_ref()) {
            self.push(
                Problem::at(pw.loc(), "observability.prometheus.password is for `target: hosts`: the docker target publishes Prometheus on 127.0.0.1 only")
                    .help("remove it, or deploy with `target: hosts`"),
            );
        }
        if let Some(a) = raw.observability.as_ref().and_then(|o| o.alertmanager.as_ref()) {
            let at = a.webhook.as_ref().map(|w| w.loc()).or_else(|| a.group_wait.as_ref().map(|g| g.loc())).unwrap_or(anchor);
            self.push(
                Problem::at(at, "observability.alertmanager is deployed on the monitor host of `target: hosts`; the docker target has no Alertmanager yet")
                    .help("remove observability.alertmanager, or deploy with `target: hosts`"),
            );
        }
        if let Some(d) = raw.observability.as_ref().and_then(|o| o.logs.as_ref()).and_then(|l| l.destination.as_ref())
            && *d.value() == LogDestination::Loki
        {
            self.push(
                Problem::at(d.loc(), "logs.destination loki renders a Promtail config per host of `target: hosts`; the docker target ships to its own collector container")
                    .help("remove logs.destination (the collector is the default), or deploy with `target: hosts`"),
            );
        }
    }

    /// One redis and at most one monitor host, at least one app host, an lb when several instances serve.
    fn roles(&mut self, raw: &RawTopology, raw_hosts: &Map<RawHost>, t: &Topology) {
        let anchor = raw.name.loc();
        let with = |role: Role| t.hosts.iter().filter(move |h| h.has(role));
        if with(Role::App).next().is_none() {
            self.push(Problem::at(anchor, "no host has the app role: at least one host must run scale-api").help("add `app` to some host's roles"));
        }
        let redis_hosts: Vec<_> = with(Role::Redis).collect();
        if redis_hosts.is_empty() && t.app.program.is_none() {
            self.push(
                Problem::at(anchor, "no host has the redis role: scale-api keeps sessions, counters and cache in Redis")
                    .help("add `redis` to one host's roles"),
            );
        }
        if let Some(section) = &raw.redis
            && redis_hosts.is_empty()
            && t.app.program.is_some()
        {
            let at = [section.port.as_ref().map(|x| x.loc()), section.maxmemory.as_ref().map(|x| x.loc()), section.eviction.as_ref().map(|x| x.loc()),
                section.persistence.as_ref().map(|x| x.loc()), section.password.as_ref().map(|x| x.loc())]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(anchor);
            self.push(
                Problem::at(at, "the redis section configures a Redis that no host runs")
                    .help("add `redis` to one host's roles (the app then gets REDIS_URL), or remove the section if the app keeps no shared state"),
            );
        }
        if let Some(r) = redis_hosts.first()
            && t.redis_reached_remotely()
            && t.redis.as_ref().is_some_and(|r| r.password.is_none())
        {
            self.push(
                Problem::at(role_loc(raw_hosts, &r.name, Role::Redis), format!("Redis on host `{}` is reached from other machines but has no password: anyone who reaches its port could read every session and change or erase any data", r.name))
                    .help("set `redis.password` to a secret reference, such as `password: {file: /etc/scalectl/redis-password}` or `password: {env: REDIS_PASSWORD}`"),
            );
        }
        self.worker_roles(raw, raw_hosts, t);
        self.database_roles(raw, raw_hosts, t);
        for extra in redis_hosts.iter().skip(1) {
            self.at(role_loc(raw_hosts, &extra.name, Role::Redis), format!("host `{}` is a second redis host; one redis host is supported", extra.name));
        }
        for extra in with(Role::Monitor).skip(1) {
            self.at(role_loc(raw_hosts, &extra.name, Role::Monitor), format!("host `{}` is a second monitor host; one monitor host is supported", extra.name));
        }
        // The lb is needed once more than one instance serves: count with known cores, else 1 per `max`.
        let total: u64 = with(Role::App).map(|h| known_instances(t, h) as u64).sum();
        let any_max = with(Role::App).any(|h| h.instances.unwrap_or(t.app.instances) == Instances::Max && h.cores.is_none());
        if (total > 1 || any_max || with(Role::App).count() > 1) && with(Role::Lb).next().is_none() {
            self.push(
                Problem::at(anchor, "more than one app instance but no host has the lb role: nothing spreads requests across them")
                    .help("add `lb` to one host's roles, or set `app.instances: 1` on a single app host"),
            );
        }
    }

    /// The database tier: its hosts and its section go together; etcd (Patroni's leader lock)
    /// with an odd number of members; and the app's pools fit in `max_connections`.
    fn database_roles(&mut self, raw: &RawTopology, raw_hosts: &Map<RawHost>, t: &Topology) {
        let members: Vec<&Host> = t.hosts.iter().filter(|h| h.has(Role::Database)).collect();
        let etcd: Vec<&Host> = t.hosts.iter().filter(|h| h.has(Role::Etcd)).collect();
        let (Some(raw_db), Some(_)) = (&raw.database, &t.database) else {
            for (h, role) in members.iter().map(|h| (h, Role::Database)).chain(etcd.iter().map(|h| (h, Role::Etcd))) {
                self.push(
                    Problem::at(role_loc(raw_hosts, &h.name, role), format!("host `{}` has the {} role, but the topology has no database section", h.name, role_name(role)))
                        .help("add a `database` section (its passwords by reference), or remove the role"),
                );
            }
            return;
        };
        if members.is_empty() {
            self.push(
                Problem::at(raw_db.password.loc(), "the database section configures a database that no host runs")
                    .help("add `database` to the roles of the hosts that should run PostgreSQL (the first becomes the primary, the others its replicas)"),
            );
        }
        if etcd.is_empty() && !members.is_empty() {
            self.push(
                Problem::at(raw_db.password.loc(), "no host has the etcd role: Patroni keeps the database's leader lock in etcd, and without it no member may lead")
                    .help("add `etcd` to the roles of one host (a lab), or three or five (production: each a machine of its own), such as the database hosts"),
            );
        } else if !etcd.is_empty() && etcd.len().is_multiple_of(2) {
            self.push(
                Problem::at(role_loc(raw_hosts, &etcd[etcd.len() - 1].name, Role::Etcd), format!("{} etcd hosts: etcd needs a majority of its members, and an even number tolerates no more failures than one fewer (2 members stop when either fails, as 1 does)", etcd.len()))
                    .help("use an odd number of etcd hosts: 1, 3 or 5"),
            );
        }
        // With the cores the topology declares (one where it declares none: plan checks again
        // with the cores it observes).
        if let Some((problem, help)) = t.pool_overflow(|h| h.cores.unwrap_or(1)) {
            let at = raw_db.pool.as_ref().map(|p| p.loc()).or(raw_db.max_connections.as_ref().map(|m| m.loc())).unwrap_or(raw_db.password.loc());
            self.push(Problem::at(at, problem).help(help));
        }
    }

    /// Workers where the topology has them, and the Redis their queue lives on.
    fn worker_roles(&mut self, raw: &RawTopology, raw_hosts: &Map<RawHost>, t: &Topology) {
        let worker_hosts: Vec<&Host> = t.hosts.iter().filter(|h| h.has(Role::Worker)).collect();
        match (&raw.app.workers, worker_hosts.first()) {
            (None, Some(h)) => self.push(
                Problem::at(role_loc(raw_hosts, &h.name, Role::Worker), format!("host `{}` has the worker role, but app.workers says nothing about what a worker runs", h.name))
                    .help("add app.workers with its command (such as `command: [node, worker.js]`), or remove the role"),
            ),
            (Some(w), None) if t.target == Target::Hosts => self.push(
                Problem::at(w.command.loc(), "app.workers is set but no host has the worker role: no worker would run")
                    .help("add `worker` to the roles of the hosts that should run them (an app host, or hosts of their own)"),
            ),
            _ => {}
        }
        if let Some(q) = raw.app.workers.as_ref().and_then(|w| w.queue.as_ref())
            && t.redis.is_none()
        {
            self.push(
                Problem::at(q.name.loc(), format!("queue `{}` lives on Redis, but no host runs Redis", q.name.value()))
                    .help("add `redis` to one host's roles: the app and its workers then get REDIS_URL"),
            );
        }
    }

    /// Two hosts reached at the same address and SSH port are one machine: their units, paths and
    /// ports would overwrite each other's. (One address behind different SSH ports is allowed.)
    fn one_host_per_machine(&mut self, raw_hosts: &Map<RawHost>, t: &Topology) {
        for (i, h) in t.hosts.iter().enumerate() {
            if let Some(first) = t.hosts[..i].iter().find(|o| o.address == h.address && o.ssh.port == h.ssh.port) {
                let loc = raw_hosts.iter().find(|(k, _)| k.value() == &h.name).map(|(_, r)| r.address.loc()).unwrap_or_default();
                self.at(
                    loc,
                    format!("host `{}` has the address and SSH port of host `{}` ({}:{}): one machine, listed twice", h.name, first.name, h.address, h.ssh.port),
                );
            }
        }
    }

    /// Every port a host's roles listen on, each claimed once (with the cores the topology knows).
    fn port_collisions(&mut self, raw_hosts: &Map<RawHost>, t: &Topology, h: &Host) {
        let n = known_instances(t, h);
        if h.has(Role::App) && u32::from(t.app.port) + n - 1 > 65535 {
            self.at(role_loc(raw_hosts, &h.name, Role::App), format!("app.port {} plus {n} instances runs past port 65535", t.app.port));
        }
        let claims = t.port_claims(h, n);
        for (i, (port, what, role)) in claims.iter().enumerate() {
            if let Some((_, other, _)) = claims[..i].iter().find(|(p, _, _)| p == port) {
                self.at(role_loc(raw_hosts, &h.name, *role), format!("port {port} on host `{}` is used by both {other} and {what}", h.name));
            }
        }
    }

    /// Published lab services need a host that runs them.
    fn published(&mut self, raw: &RawTopology, t: &Topology) {
        let with = |role: Role| t.hosts.iter().filter(move |h| h.has(role));
        for (svc, _) in raw.lab.iter().flat_map(|l| l.publish.iter()) {
            let needs = match svc.value() {
                Service::LoadBalancer => Role::Lb,
                Service::Prometheus | Service::Grafana => Role::Monitor,
                Service::Redis => Role::Redis,
            };
            if with(needs).next().is_none() {
                self.at(svc.loc(), format!("{} is published but no host has the {} role", service_name(*svc.value()), role_name(needs)));
            } else if *svc.value() == Service::Grafana && !t.observability.grafana {
                self.at(svc.loc(), "grafana is published but observability.grafana is false");
            }
        }
    }
}
