//! Raw topology -> validated [`Topology`], collecting every problem with its location.
//!
//! Checks run in one pass and keep going after a problem, so a user fixes a file in one round.
//! Values that fail a check are replaced by their default so later checks still run; the result
//! is only returned when there were no problems at all.

use indexmap::IndexMap;

use super::model::*;
use super::problem::Problem;
use super::raw::*;
use super::syntax::{self, Check};

mod fleet;

/// Validate a parsed file; whole-file problems point at the `name` value.
pub fn validate(raw: &RawTopology) -> Result<Topology, Vec<Problem>> {
    let mut v = V::default();
    let t = v.topology(raw);
    if v.problems.is_empty() {
        Ok(t)
    } else {
        v.problems.sort_by_key(|p| (p.line, p.column));
        v.problems.dedup();
        Err(v.problems)
    }
}

#[derive(Default)]
struct V {
    problems: Vec<Problem>,
}

/// Names scalectl sets itself in every instance's environment.
const RESERVED_ENV: &[&str] =
    &["PORT", "INSTANCE", "REDIS_URL", "REDIS_PASSWORD", "HEAVY_POOL", "DRAIN_TIMEOUT", "SLOW_REQUEST", "LIVENESS_PATH", "READINESS_PATH"];

/// scale-api's own routes: a health path must be none of them (scale-api refuses to start).
const APP_ROUTES: &[&str] = &["/", "/heavy", "/count", "/login", "/profile", "/logout", "/metrics"];

impl V {
    fn at(&mut self, loc: Loc, message: impl Into<String>) {
        self.problems.push(Problem::at(loc, message));
    }

    fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    fn check<T>(&mut self, sp: &Sp<T>, r: Check) {
        if let Err(m) = r {
            self.at(sp.loc(), m);
        }
    }

    fn string(&mut self, sp: &Option<Sp<String>>, default: &str, check: impl Fn(&str) -> Check) -> String {
        match sp {
            Some(s) => match check(s.value()) {
                Ok(()) => s.value().clone(),
                Err(m) => {
                    self.at(s.loc(), m);
                    default.to_string()
                }
            },
            None => default.to_string(),
        }
    }

    fn duration(&mut self, sp: &Option<Sp<String>>, what: &str, default_ms: u64, max_ms: u64) -> u64 {
        let Some(s) = sp else { return default_ms };
        match syntax::duration(s.value(), what) {
            Ok(d) if d.as_millis() == 0 => {
                self.at(s.loc(), format!("{what} must be more than zero"));
                default_ms
            }
            // Compared unnarrowed: a duration past u64 milliseconds must not wrap to a small one.
            Ok(d) if d.as_millis() > u128::from(max_ms) => {
                self.at(s.loc(), format!("{what} `{}` is longer than the maximum of {}", s.value(), fmt_ms(max_ms)));
                default_ms
            }
            Ok(d) => d.as_millis() as u64,
            Err(m) => {
                self.at(s.loc(), m);
                default_ms
            }
        }
    }

    fn size(&mut self, sp: &Option<Sp<String>>, what: &str, default: u64, min: u64) -> u64 {
        self.size_within(sp, what, default, min, u64::MAX)
    }

    fn size_within(&mut self, sp: &Option<Sp<String>>, what: &str, default: u64, min: u64, max: u64) -> u64 {
        let Some(s) = sp else { return default };
        match syntax::size(s.value(), what) {
            Ok(b) if b < min => {
                self.at(s.loc(), format!("{what} `{}` is below the minimum of {} bytes", s.value(), min));
                default
            }
            Ok(b) if b > max => {
                self.at(s.loc(), format!("{what} `{}` is above the maximum of {}", s.value(), bytesize::ByteSize::b(max).display().iec()));
                default
            }
            Ok(b) => b,
            Err(m) => {
                self.at(s.loc(), m);
                default
            }
        }
    }

    fn int(&mut self, sp: &Option<Sp<i64>>, what: &str, default: i64, min: i64, max: i64) -> i64 {
        let Some(s) = sp else { return default };
        let n = *s.value();
        if n < min || n > max {
            self.at(s.loc(), format!("{what} must be between {min} and {max}, found {n}"));
            return default;
        }
        n
    }

    fn percent(&mut self, sp: &Option<Sp<f64>>, what: &str, default: f64) -> f64 {
        let Some(s) = sp else { return default };
        let n = *s.value();
        if !(n > 0.0 && n <= 100.0) {
            self.at(s.loc(), format!("{what} must be a percentage above 0 and at most 100, found {n}"));
            return default;
        }
        n
    }

    fn instances(&mut self, sp: &Sp<Instances>) -> Instances {
        match sp.value() {
            Instances::Count(n) if *n < 1 => {
                self.at(sp.loc(), format!("instances must be at least 1, found {n}"));
                Instances::Count(1)
            }
            Instances::Count(n) if *n > 256 => {
                self.at(sp.loc(), format!("instances must be at most 256, found {n}"));
                Instances::Count(1)
            }
            other => *other,
        }
    }

    fn topology(&mut self, raw: &RawTopology) -> Topology {
        self.check(&raw.name, syntax::dns_label(raw.name.value(), "name"));
        let target = raw.target.as_ref().map(|t| *t.value()).unwrap_or(Target::Hosts);
        let mut app = self.app(&raw.app);
        app.program = raw.app.program.as_ref().map(|p| self.program(p, raw, target));
        app.workers = raw.app.workers.as_ref().map(|w| self.workers(w, &raw.app));
        app.release_command = raw.app.release_command.as_ref().map(|c| self.release_command(c, &raw.app));
        let hosts = self.hosts(raw, target);
        let load_balancer = self.load_balancer(raw.load_balancer.as_ref());
        // Redis runs where the topology places it: a host with the `redis` role, or on docker a
        // `redis` section (scale-api, which keeps its state there, always gets one).
        let wants_redis = match target {
            Target::Hosts => hosts.iter().any(|h| h.has(Role::Redis)),
            Target::Docker => raw.redis.is_some() || app.program.is_none(),
        };
        let queue = app.workers.as_ref().and_then(|w| w.queue.as_ref());
        let redis = wants_redis.then(|| self.redis(raw.redis.as_ref(), queue));
        let database = raw.database.as_ref().map(|d| self.database(d, raw.name.value(), target));
        let observability = self.observability(raw.observability.as_ref());
        let autoscaling = raw.autoscaling.as_ref().map(|a| self.autoscaling(a));
        let docker = self.docker(raw.docker.as_ref(), raw.name.value());
        let lab = self.lab(raw.lab.as_ref());
        let t = Topology {
            name: raw.name.value().clone(),
            target,
            app,
            hosts,
            load_balancer,
            redis,
            database,
            observability,
            autoscaling,
            docker,
            lab,
        };
        self.fleet(raw, &t);
        t
    }

    fn app(&mut self, a: &RawApp) -> App {
        let port = a.port.as_ref().map(|p| *p.value()).unwrap_or(3000);
        if let Some(p) = &a.port
            && *p.value() < 1024
        {
            self.at(p.loc(), format!("app.port must be 1024 or above (scale-api runs unprivileged), found {}", p.value()));
        }
        let instances = a.instances.as_ref().map(|i| self.instances(i)).unwrap_or(Instances::Max);
        let env = self.env(&a.env, "app.env");
        let mut secrets = IndexMap::new();
        for (k, r) in &a.secrets {
            self.check(k, syntax::env_name(k.value()));
            if RESERVED_ENV.contains(&k.value().as_str()) {
                self.at(k.loc(), format!("`{}` is set by scalectl for every instance; remove it from app.secrets", k.value()));
            }
            if a.env.keys().any(|e| e.value() == k.value()) {
                self.at(k.loc(), format!("`{}` is both in app.env and app.secrets", k.value()));
            }
            self.secret_ref(r);
            secrets.insert(k.value().clone(), r.value().clone());
        }
        let (liveness, readiness) = match &a.health {
            Some(h) => {
                let liveness = self.string(&h.liveness, "/healthz", |s| syntax::url_path(s, "liveness path"));
                let readiness = self.string(&h.readiness, "/readyz", |s| syntax::url_path(s, "readiness path"));
                for (sp, path, what) in [(&h.liveness, &liveness, "liveness"), (&h.readiness, &readiness, "readiness")] {
                    let scale_api = a.program.is_none();
                    if let Some(sp) = sp.as_ref().filter(|_| scale_api && (APP_ROUTES.contains(&path.as_str()) || path.starts_with("/users/"))) {
                        self.at(sp.loc(), format!("the {what} path `{path}` is one of scale-api's own routes; pick another, such as /healthz or /readyz"));
                    }
                }
                // One path for both is common (`/health`, or `/`), and Kubernetes and every load
                // balancer accept it: `validate` notes it (cli/validate.rs), nothing refuses it.
                (liveness, readiness)
            }
            None => ("/healthz".into(), "/readyz".into()),
        };
        let heavy_pool = a.heavy_pool.as_ref().map(|_| self.int(&a.heavy_pool, "app.heavy_pool", 1, 1, 256) as u32);
        let (memory_max, cpu_quota, nofile) = match &a.limits {
            Some(l) => (
                self.size_within(&l.memory_max, "app.limits.memory_max", 512 << 20, 16 << 20, MEMORY_MAX_LIMIT),
                l.cpu_quota.as_ref().map(|_| self.int(&l.cpu_quota, "app.limits.cpu_quota", 100, 1, 25600) as u32),
                self.int(&l.nofile, "app.limits.nofile", 65536, 1024, 1 << 20) as u64,
            ),
            None => (512 << 20, None, 65536),
        };
        let drain_timeout_ms = self.duration(&a.drain_timeout, "app.drain_timeout", 10_000, 600_000);
        let slow_request_ms = self.duration(&a.slow_request, "app.slow_request", 2_000, 3_600_000);
        App {
            port,
            instances,
            env,
            secrets,
            liveness,
            readiness,
            heavy_pool,
            memory_max,
            cpu_quota,
            nofile,
            drain_timeout_ms,
            slow_request_ms,
            program: None,
            workers: None,
            release_command: None,
        }
    }

    /// Plain environment variables (`section`: where they are written): names a shell and systemd
    /// take, none that scalectl sets itself, none that looks like a secret.
    fn env(&mut self, vars: &Map<Sp<String>>, section: &str) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        for (k, val) in vars {
            self.check(k, syntax::env_name(k.value()));
            if RESERVED_ENV.contains(&k.value().as_str()) {
                self.at(k.loc(), format!("`{}` is set by scalectl for every instance; remove it from {section}", k.value()));
            }
            if super::problem::names_a_secret(k.value()) {
                self.push(
                    Problem::at(k.loc(), format!("`{}` looks like a secret but is written inline in {section}", k.value()))
                        .help(format!("move it to app.secrets as `{}: {{env: VAR_NAME}}` or `{{file: /path}}`", k.value()))
                        .concealing(val.loc()),
                );
            }
            self.check(val, syntax::env_value(val.value()));
            env.insert(k.value().clone(), val.value().clone());
        }
        env
    }

    /// The worker kind: an argv of the release with no port, its own env and drain timeout.
    fn release_command(&mut self, c: &Sp<Vec<Sp<String>>>, a: &RawApp) -> Vec<String> {
        if c.value().is_empty() {
            self.push(Problem::at(c.loc(), "app.release_command is empty").help("give the command and its arguments as a list, such as [node, migrate.js]"));
        }
        for arg in c.value() {
            self.check(arg, syntax::argument(arg.value()));
            if let Ok(parts) = syntax::argument_parts(arg.value())
                && parts.iter().any(|p| matches!(p, syntax::ArgumentPart::Value(_)))
            {
                self.push(Problem::at(arg.loc(), "the release command runs once, not per instance: `$(PORT)` and `$(INSTANCE)` mean nothing in it"));
            }
        }
        if let Some(first) = c.value().first() {
            if a.program.is_none() && first.value() != SCALE_API {
                self.push(
                    Problem::at(first.loc(), "without app.program the release is scale-api's: its release command is `[scale-api, migrate]`")
                        .help("run scale-api's migration, or add app.program (your app and its command, such as [node, migrate.js])"),
                );
            }
            if first.value().split('/').any(|c| c == "..") {
                self.at(first.loc(), "the release command must be inside its release directory or on the host (no `..`)");
            }
            self.check(first, syntax::program(first.value()));
        }
        c.value().iter().map(|a| a.value().clone()).collect()
    }

    fn workers(&mut self, w: &RawWorkers, a: &RawApp) -> Workers {
        if a.program.is_none() {
            // scale-api's own worker: its release's binary, on a Redis stream.
            if w.command.value().first().map(|c| c.value().as_str()) != Some(SCALE_API) {
                self.push(
                    Problem::at(w.command.loc(), "without app.program the workers are scale-api's own: `command: [scale-api, worker]`")
                        .help("run scale-api's worker, or add app.program (your app and its worker, such as [node, worker.js])"),
                );
            }
            match &w.queue {
                Some(q) if *q.kind.value() == QueueKind::Stream => {}
                Some(q) => self.push(
                    Problem::at(q.kind.loc(), "scale-api's worker consumes a Redis stream, not a BullMQ queue").help("queue: {kind: stream, name: jobs}"),
                ),
                None => self.push(
                    Problem::at(w.command.loc(), "scale-api's worker needs its queue named: it is the stream that POST /jobs adds to").help("queue: {kind: stream, name: jobs}"),
                ),
            }
        }
        if w.command.value().is_empty() {
            self.push(Problem::at(w.command.loc(), "app.workers.command is empty").help("give the program and its arguments as a list, such as [node, worker.js]"));
        }
        for arg in w.command.value() {
            self.check(arg, syntax::argument(arg.value()));
            if let Ok(parts) = syntax::argument_parts(arg.value())
                && parts.contains(&syntax::ArgumentPart::Value(syntax::InstanceValue::Port))
            {
                self.push(Problem::at(arg.loc(), "a worker has no port: `$(PORT)` means nothing in app.workers.command").help("a worker takes jobs from its queue; `$(INSTANCE)` names each one"));
            }
        }
        if let Some(first) = w.command.value().first() {
            if first.value().split('/').any(|c| c == "..") {
                self.at(first.loc(), "the program must be inside its release directory or on the host (no `..`)");
            }
            self.check(first, syntax::program(first.value()));
        }
        let env = self.env(&w.env, "app.workers.env");
        for k in w.env.keys().filter(|k| a.secrets.keys().any(|s| s.value() == k.value())) {
            self.at(k.loc(), format!("`{}` is both in app.workers.env and app.secrets", k.value()));
        }
        let queue = w.queue.as_ref().map(|q| {
            self.check(&q.name, syntax::queue_name(q.name.value()));
            Queue { kind: *q.kind.value(), name: q.name.value().clone() }
        });
        Workers {
            command: w.command.value().iter().map(|a| a.value().clone()).collect(),
            instances: w.instances.as_ref().map(|i| self.instances(i)).unwrap_or(Instances::Count(1)),
            env,
            queue,
            drain_timeout_ms: self.duration(&w.drain_timeout, "app.workers.drain_timeout", crate::topology::DEFAULT_WORKER_DRAIN_MS, 600_000),
        }
    }

    /// The user's program: a safe name for units and paths, an argv that systemd runs as written.
    fn program(&mut self, p: &RawProgram, raw: &RawTopology, target: Target) -> Program {
        let name = self.string(&p.name, raw.name.value(), |s| syntax::dns_label(s, "app.program.name"));
        if let Some(r) = &p.release {
            self.check(r, syntax::local_path(r.value(), "app.program.release"));
        }
        if let Some(i) = &p.image {
            self.check(i, syntax::image(i.value()));
        }
        match (&p.release, &p.image) {
            (_, Some(i)) if target == Target::Hosts => self.push(
                Problem::at(i.loc(), "app.program.image is for `target: docker`: hosts run a release that apply uploads")
                    .help("name the program's directory or .tar as `release` instead"),
            ),
            (Some(_), Some(i)) => self.push(
                Problem::at(i.loc(), "app.program names both a release and an image: the image would never be the one that runs")
                    .help("keep `image` to run an image the engine has or can pull, or `release` to build one from a directory"),
            ),
            (None, None) => self.push(Problem::at(p.command.loc(), "app.program names nothing to deploy").help(if target == Target::Docker {
                "add `release: ./dir` (a build context with its Dockerfile) or `image: NAME:TAG` (an image the engine has or can pull)"
            } else {
                "add `release: ./dir`: the program's directory (its node_modules included) or a .tar of it"
            })),
            _ => {}
        }
        if p.command.value().is_empty() {
            self.push(Problem::at(p.command.loc(), "app.program.command is empty").help("give the program and its arguments as a list, such as [node, server.js]"));
        }
        for arg in p.command.value() {
            self.check(arg, syntax::argument(arg.value()));
        }
        if let Some(first) = p.command.value().first() {
            if first.value().split('/').any(|c| c == "..") {
                self.at(first.loc(), "the program must be inside its release directory or on the host (no `..`)");
            }
            self.check(first, syntax::program(first.value()));
        }
        for pkg in &p.packages {
            self.check(pkg, syntax::debian_package(pkg.value()));
        }
        let user = p.user.as_ref().map(|u| {
            self.check(u, syntax::unix_user(u.value(), "app.program.user").and_then(|()| syntax::app_user(u.value())));
            u.value().clone()
        });
        Program {
            name,
            release: p.release.as_ref().map(|r| r.value().clone()),
            image: p.image.as_ref().map(|i| i.value().clone()),
            command: p.command.value().iter().map(|a| a.value().clone()).collect(),
            packages: p.packages.iter().map(|x| x.value().clone()).collect(),
            user,
            metrics: p.metrics.as_ref().map(|m| {
                self.check(m, syntax::url_path(m.value(), "app.program.metrics"));
                m.value().clone()
            }),
        }
    }

    fn secret_ref(&mut self, r: &Sp<SecretRef>) {
        match r.value() {
            SecretRef::Env(name) => self.check(r, syntax::env_name(name)),
            SecretRef::File(path) => self.check(r, syntax::abs_path(path, "secret file")),
        }
    }

    fn hosts(&mut self, raw: &RawTopology, target: Target) -> Vec<Host> {
        let Some(hosts) = &raw.hosts else { return Vec::new() };
        if target == Target::Docker && !hosts.is_empty() {
            let first = hosts.keys().next().map(|k| k.loc()).unwrap_or_default();
            self.push(
                Problem::at(first, "hosts are not used with `target: docker`")
                    .help("remove the hosts section, or set `target: hosts`"),
            );
        }
        let mut out = Vec::new();
        for (name, h) in hosts {
            self.check(name, syntax::dns_label(name.value(), "host name"));
            self.check(&h.address, syntax::address(h.address.value()));
            let ssh = self.ssh(h.ssh.as_ref(), raw.ssh.as_ref());
            let mut roles: Vec<Role> = Vec::new();
            if h.roles.value().is_empty() {
                self.at(h.roles.loc(), format!("host `{}` has no roles: give it at least one of app, worker, lb, redis, monitor, database, etcd", name.value()));
            }
            for r in h.roles.value() {
                if roles.contains(r.value()) {
                    self.at(r.loc(), format!("role `{}` is listed twice", role_name(*r.value())));
                } else {
                    roles.push(*r.value());
                }
            }
            let weight = self.int(&h.weight, "weight", 1, 1, 100) as u32;
            let cores = h.cores.as_ref().map(|_| self.int(&h.cores, "cores", 1, 1, 1024) as u32);
            let instances = h.instances.as_ref().map(|i| self.instances(i));
            if let Some(i) = &h.instances
                && !roles.contains(&Role::App)
            {
                self.at(i.loc(), format!("host `{}` sets instances but has no app role", name.value()));
            }
            out.push(Host {
                name: name.value().clone(),
                address: h.address.value().clone(),
                ssh,
                roles,
                weight,
                cores,
                instances,
            });
        }
        out
    }

    /// A host's SSH settings: its own, else the topology's `ssh` defaults, else root on port 22 via the agent.
    fn ssh(&mut self, own: Option<&RawSsh>, defaults: Option<&RawSsh>) -> Ssh {
        let pick = |f: fn(&RawSsh) -> bool| own.filter(|s| f(s)).or(defaults.filter(|s| f(s)));
        let user = match pick(|s| s.user.is_some()) {
            Some(s) => self.string(&s.user, "root", |u| syntax::unix_user(u, "ssh user")),
            None => "root".into(),
        };
        let port = match pick(|s| s.port.is_some()).and_then(|s| s.port.as_ref()) {
            Some(p) if *p.value() == 0 => {
                self.at(p.loc(), "ssh port must not be 0");
                22
            }
            Some(p) => *p.value(),
            None => 22,
        };
        let key = pick(|s| s.key.is_some()).and_then(|s| s.key.as_ref()).map(|k| {
            self.check(k, syntax::key_path(k.value()));
            k.value().clone()
        });
        Ssh { user, port, key }
    }

    fn load_balancer(&mut self, lb: Option<&RawLoadBalancer>) -> LoadBalancer {
        let Some(lb) = lb else { return self.load_balancer_defaults() };
        let mut server_names = Vec::new();
        if let Some(sn) = &lb.server_name {
            for name in sn.value().split(' ').filter(|s| !s.is_empty()) {
                if name == "_" {
                    server_names.push(name.to_string());
                } else if let Err(m) = syntax::hostname(name, "server_name", true) {
                    self.push(Problem::at(sn.loc(), m).help("server_name is one or more host names separated by spaces, or `_`"));
                    break;
                } else {
                    server_names.push(name.to_string());
                }
            }
        }
        if server_names.is_empty() {
            server_names.push("_".into());
        }
        let tls = lb.tls.as_ref().map(|t| {
            self.check(&t.certificate, syntax::abs_path(t.certificate.value(), "tls.certificate"));
            self.check(&t.key, syntax::abs_path(t.key.value(), "tls.key"));
            Tls {
                certificate: t.certificate.value().clone(),
                key: t.key.value().clone(),
                listen: t.listen.as_ref().map(|p| *p.value()).unwrap_or(443),
            }
        });
        let rate_limit = lb.rate_limit.as_ref().map(|r| RateLimit {
            rps: self.int(&Some(r.rps.clone()), "rate_limit.rps", 10, 1, 1_000_000) as u32,
            burst: self.int(&r.burst, "rate_limit.burst", 20, 0, 1_000_000) as u32,
        });
        let mut statics = Vec::new();
        for s in &lb.statics {
            self.check(&s.path, syntax::url_path(s.path.value(), "static path"));
            self.check(&s.root, syntax::abs_path(s.root.value(), "static root"));
            if let Some(system) = system_dir(s.root.value()) {
                self.at(s.root.loc(), format!("static root `{}` would publish {system} through the load balancer; give the directory of the files to serve, such as /srv/static", s.root.value()));
            }
            if statics.iter().any(|o: &Static| &o.path == s.path.value()) {
                self.at(s.path.loc(), format!("static path `{}` is listed twice", s.path.value()));
            }
            statics.push(Static {
                path: s.path.value().clone(),
                root: s.root.value().clone(),
                expires_ms: self.duration(&s.expires, "static expires", 7 * 86_400_000, 3650 * 86_400_000),
                immutable: s.immutable.as_ref().is_some_and(|b| *b.value()),
            });
        }
        let cache = lb.cache.as_ref().map(|c| {
            let mut paths: Vec<CachePath> = Vec::new();
            if c.paths.value().is_empty() {
                self.push(Problem::at(c.paths.loc(), "load_balancer.cache has no paths").help("list the paths whose GET answers may be cached, such as `paths: [{path: /users/, ttl: 30s}]`"));
            }
            for p in c.paths.value() {
                self.check(&p.path, syntax::url_path(p.path.value(), "cache path"));
                if p.path.value() == "/" {
                    self.push(Problem::at(p.path.loc(), "cache path `/` would cache every answer of the app").help("list the paths whose answers are the same for everyone, such as /users/"));
                }
                if paths.iter().any(|o| &o.path == p.path.value()) {
                    self.at(p.path.loc(), format!("cache path `{}` is listed twice", p.path.value()));
                }
                if statics.iter().any(|s| &s.path == p.path.value()) {
                    self.at(p.path.loc(), format!("cache path `{}` is also a static path: nginx serves those files itself, with their own lifetime", p.path.value()));
                }
                let ttl_ms = self.duration(&Some(p.ttl.clone()), "cache ttl", 0, 30 * 86_400_000);
                // nginx reads a cache's validity in whole seconds.
                if !ttl_ms.is_multiple_of(1000) {
                    self.at(p.ttl.loc(), format!("cache ttl `{}` is not a whole number of seconds", p.ttl.value()));
                }
                paths.push(CachePath { path: p.path.value().clone(), ttl_ms });
            }
            // The keys' memory grows with the size (1 MiB per 32 MiB): 64 GiB takes 2 GiB of it.
            Cache::new(self.size_within(&c.size, "cache.size", 256 << 20, 1 << 20, 64 << 30), paths)
        });
        let d = self.load_balancer_defaults();
        let (next_upstream, next_upstream_tries) = match &lb.next_upstream {
            Some(n) => (
                match &n.on {
                    Some(on) => {
                        for o in on.iter().filter(|o| *o.value() == NextUpstreamOn::Http429) {
                            self.push(
                                Problem::at(o.loc(), "http_429 cannot send a request on: the balancer behind nginx (HAProxy 2.6) retries on 500, 502, 503 and 504 only")
                                    .help("remove http_429: a 429 goes back to the client, who is told when to try again"),
                            );
                        }
                        on.iter().map(|o| *o.value()).filter(|o| *o != NextUpstreamOn::Http429).collect()
                    }
                    None => d.next_upstream.clone(),
                },
                self.int(&n.tries, "next_upstream.tries", 2, 1, 32) as u32,
            ),
            None => (d.next_upstream.clone(), d.next_upstream_tries),
        };
        let flag = |b: &Option<Sp<bool>>, default: bool| b.as_ref().map(|b| *b.value()).unwrap_or(default);
        LoadBalancer {
            strategy: lb.strategy.as_ref().map(|s| *s.value()).unwrap_or(d.strategy),
            listen: lb.listen.as_ref().map(|p| *p.value()).unwrap_or(d.listen),
            server_names,
            tls,
            gzip: flag(&lb.gzip, d.gzip),
            rate_limit,
            statics,
            max_fails: self.int(&lb.max_fails, "max_fails", 3, 0, 1000) as u32,
            fail_timeout_ms: self.duration(&lb.fail_timeout, "fail_timeout", d.fail_timeout_ms, 3_600_000),
            next_upstream,
            next_upstream_tries,
            websocket: flag(&lb.websocket, d.websocket),
            keepalive: self.int(&lb.keepalive, "keepalive", 32, 0, 10_000) as u32,
            request_buffering: flag(&lb.request_buffering, d.request_buffering),
            forwarded_headers: flag(&lb.forwarded_headers, d.forwarded_headers),
            request_id: flag(&lb.request_id, d.request_id),
            client_max_body_size: self.size(&lb.client_max_body_size, "client_max_body_size", d.client_max_body_size, 1),
            connect_timeout_ms: self.duration(&lb.connect_timeout, "connect_timeout", d.connect_timeout_ms, 75_000),
            read_timeout_ms: self.duration(&lb.read_timeout, "read_timeout", d.read_timeout_ms, 3_600_000),
            status_port: d.status_port,
            cache,
        }
    }

    fn load_balancer_defaults(&self) -> LoadBalancer {
        LoadBalancer {
            strategy: Strategy::LeastConn,
            listen: 80,
            server_names: vec!["_".into()],
            tls: None,
            gzip: true,
            rate_limit: None,
            statics: Vec::new(),
            max_fails: 3,
            fail_timeout_ms: 30_000,
            next_upstream: vec![NextUpstreamOn::Error, NextUpstreamOn::Timeout, NextUpstreamOn::Http502, NextUpstreamOn::Http503],
            next_upstream_tries: 2,
            websocket: true,
            keepalive: 32,
            request_buffering: true,
            forwarded_headers: true,
            request_id: true,
            client_max_body_size: 1 << 20,
            connect_timeout_ms: 5_000,
            read_timeout_ms: 60_000,
            status_port: ports::NGINX_STATUS,
            cache: None,
        }
    }

    /// Redis as configured; with a queue on it (`queue`), one that evicts nothing.
    fn redis(&mut self, r: Option<&RawRedis>, queue: Option<&Queue>) -> Redis {
        // An evicted job is a lost job: Redis that holds a queue refuses writes at maxmemory instead.
        let eviction = if queue.is_some() { Eviction::Noeviction } else { Eviction::AllkeysLru };
        let Some(r) = r else {
            return Redis { port: 6379, maxmemory: 256 << 20, eviction, persistence: Persistence::Rdb, password: None };
        };
        if let (Some(q), Some(e)) = (queue, &r.eviction)
            && *e.value() != Eviction::Noeviction
        {
            self.push(
                Problem::at(e.loc(), format!("redis.eviction {} would drop the jobs of queue `{}` when Redis is full: a job evicted is a job lost, silently", serde_json::to_value(e.value()).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(), q.name))
                    .help("set `eviction: noeviction` (the default with a queue): at maxmemory Redis then refuses new writes, which the app sees and reports, and no queued job is lost"),
            );
        }
        if let Some(p) = &r.password {
            self.secret_ref(p);
        }
        Redis {
            port: r.port.as_ref().map(|p| *p.value()).unwrap_or(6379),
            maxmemory: self.size(&r.maxmemory, "redis.maxmemory", 256 << 20, 1 << 20),
            eviction: r.eviction.as_ref().map(|e| *e.value()).unwrap_or(eviction),
            persistence: r.persistence.as_ref().map(|e| *e.value()).unwrap_or(Persistence::Rdb),
            password: r.password.as_ref().map(|p| p.value().clone()),
        }
    }

    fn database(&mut self, d: &RawDatabase, topology: &str, target: Target) -> Database {
        let name = match &d.name {
            Some(n) => {
                self.check(n, syntax::pg_identifier(n.value(), "database.name"));
                n.value().clone()
            }
            None => {
                // The topology's name, `-` as `_`: checked as the name it becomes.
                let derived = topology.replace('-', "_");
                if let Err(e) = syntax::pg_identifier(&derived, "the database's name (the topology's name with `-` as `_`)") {
                    self.push(Problem::at(d.password.loc(), e).help("set database.name"));
                }
                derived
            }
        };
        let user = match &d.user {
            Some(u) => {
                self.check(u, syntax::pg_identifier(u.value(), "database.user"));
                if [DB_SUPERUSER, DB_REPLICATION_USER, DB_REST_USER, DB_MONITOR_USER].contains(&u.value().as_str()) {
                    self.at(u.loc(), format!("database.user `{}` is a role scalectl's database tier uses itself; name the app's own", u.value()));
                }
                u.value().clone()
            }
            None => "app".to_string(),
        };
        for r in [&d.password, &d.replication_password, &d.rest_password] {
            self.secret_ref(r);
        }
        let max_connections = self.int(&d.max_connections, "database.max_connections", 100, 20, 10_000) as u32;
        let pool = self.int(&d.pool, "database.pool", 5, 1, 1_000) as u32;
        if let (Some(m), Target::Hosts) = (&d.members, target) {
            self.push(
                Problem::at(m.loc(), "database.members counts the containers of `target: docker`; on hosts, the hosts with the database role are the members")
                    .help("remove `members`, and give `database` to the roles of each host that should run PostgreSQL"),
            );
        }
        let docker_members = self.int(&d.members, "database.members", 2, 1, 9) as u32;
        Database {
            name,
            user,
            password: d.password.value().clone(),
            replication_password: d.replication_password.value().clone(),
            rest_password: d.rest_password.value().clone(),
            max_connections,
            pool,
            replica_max_lag: self.size(&d.replica_max_lag, "database.replica_max_lag", 1 << 20, 0),
            docker_members,
        }
    }

    fn observability(&mut self, o: Option<&RawObservability>) -> Observability {
        let prom = o.and_then(|o| o.prometheus.as_ref());
        let alerts = o.and_then(|o| o.alerts.as_ref());
        let logs = o.and_then(|o| o.logs.as_ref());
        let none_s = None;
        let none_f = None;
        let destination = logs.and_then(|l| l.destination.as_ref()).map(|d| *d.value()).unwrap_or(LogDestination::Collector);
        let loki_url = logs.and_then(|l| l.loki_url.as_ref()).map(|u| {
            self.check(u, syntax::url(u.value(), "logs.loki_url"));
            u.value().clone()
        });
        if destination == LogDestination::Loki
            && loki_url.is_none()
            && let Some(d) = logs.and_then(|l| l.destination.as_ref())
        {
            self.at(d.loc(), "logs.destination is loki but logs.loki_url is not set");
        }
        Observability {
            scrape_interval_ms: self.duration(prom.map_or(&none_s, |p| &p.scrape_interval), "scrape_interval", 15_000, 3_600_000),
            retention_ms: self.duration(prom.map_or(&none_s, |p| &p.retention), "retention", 15 * 86_400_000, 3650 * 86_400_000),
            prometheus_port: prom.and_then(|p| p.port.as_ref()).map(|p| *p.value()).unwrap_or(9090),
            prometheus_password: prom.and_then(|p| p.password.as_ref()).map(|r| {
                self.secret_ref(r);
                r.value().clone()
            }),
            alerts: Alerts {
                latency_p99_ms: self.duration(alerts.map_or(&none_s, |a| &a.latency_p99), "alerts.latency_p99", 1_000, 600_000),
                error_rate_percent: self.percent(alerts.map_or(&none_f, |a| &a.error_rate), "alerts.error_rate", 1.0),
                cpu_percent: self.percent(alerts.map_or(&none_f, |a| &a.cpu), "alerts.cpu", 80.0),
                memory_available_percent: self.percent(alerts.map_or(&none_f, |a| &a.memory_available), "alerts.memory_available", 10.0),
                fds_percent: self.percent(alerts.map_or(&none_f, |a| &a.fds), "alerts.fds", 90.0),
                scheduling_delay_ms: self.duration(alerts.map_or(&none_s, |a| &a.scheduling_delay), "alerts.scheduling_delay", 100, 60_000),
                down_for_ms: self.duration(alerts.map_or(&none_s, |a| &a.down_for), "alerts.down_for", 60_000, 3_600_000),
            },
            grafana: o.and_then(|o| o.grafana.as_ref()).map(|g| *g.value()).unwrap_or(true),
            grafana_port: ports::GRAFANA,
            logs: Logs {
                shipper: logs.and_then(|l| l.shipper.as_ref()).map(|s| *s.value()).unwrap_or(Shipper::Rsyslog),
                destination,
                loki_url,
                relp_port: ports::RELP,
            },
            alertmanager: o.and_then(|o| o.alertmanager.as_ref()).map(|a| {
                if let Some(w) = &a.webhook {
                    self.secret_ref(w);
                }
                Alertmanager {
                    port: ports::ALERTMANAGER,
                    webhook: a.webhook.as_ref().map(|w| w.value().clone()),
                    group_wait_ms: self.duration(&a.group_wait, "alertmanager.group_wait", 30_000, 3_600_000),
                    repeat_interval_ms: self.duration(&a.repeat_interval, "alertmanager.repeat_interval", 4 * 3_600_000, 30 * 86_400_000),
                }
            }),
        }
    }

    fn autoscaling(&mut self, a: &RawAutoscaling) -> Autoscaling {
        self.check(&a.region, syntax::aws_region(a.region.value()));
        self.check(&a.instance_type, syntax::instance_type(a.instance_type.value()));
        self.check(&a.ami, syntax::aws_id(a.ami.value(), "ami-", "ami"));
        self.check(&a.vpc_id, syntax::aws_id(a.vpc_id.value(), "vpc-", "vpc_id"));
        for s in a.subnets.value() {
            self.check(s, syntax::aws_id(s.value(), "subnet-", "subnet"));
        }
        if a.subnets.value().len() < 2 {
            self.at(a.subnets.loc(), "autoscaling.subnets needs at least two subnets (an application load balancer spans two availability zones)");
        }
        let min = self.int(&Some(a.min.clone()), "autoscaling.min", 1, 0, 10_000);
        let max = self.int(&Some(a.max.clone()), "autoscaling.max", 1, 1, 10_000);
        if min > max {
            self.at(a.min.loc(), format!("autoscaling.min ({min}) is above autoscaling.max ({max})"));
        }
        let desired = match &a.desired {
            Some(d) => {
                let n = *d.value();
                if n < min || n > max {
                    self.at(d.loc(), format!("autoscaling.desired must be between min ({min}) and max ({max}), found {n}"));
                }
                n
            }
            None => min,
        };
        let none_f = None;
        let cpu = a.cpu.as_ref();
        let out = self.percent(cpu.map_or(&none_f, |c| &c.scale_out), "autoscaling.cpu.scale_out", crate::topology::DEFAULT_CPU_SCALE_OUT);
        let inn = self.percent(cpu.map_or(&none_f, |c| &c.scale_in), "autoscaling.cpu.scale_in", 30.0);
        if inn >= out
            && let Some(l) = cpu.and_then(|c| c.scale_in.as_ref())
        {
            self.at(l.loc(), format!("autoscaling.cpu.scale_in ({inn}) must be below scale_out ({out})"));
        }
        let none_s = None;
        let cd = a.cooldown.as_ref();
        Autoscaling {
            provider: *a.provider.value(),
            region: a.region.value().clone(),
            instance_type: a.instance_type.value().clone(),
            ami: a.ami.value().clone(),
            vpc_id: a.vpc_id.value().clone(),
            subnets: a.subnets.value().iter().map(|s| s.value().clone()).collect(),
            min: min as u32,
            max: max as u32,
            desired: desired.clamp(0, 10_000) as u32,
            cpu_scale_out: out,
            cpu_scale_in: inn,
            policy: cpu.and_then(|c| c.policy.as_ref()).map_or(ScalingPolicy::TargetTracking, |p| *p.value()),
            cooldown_scale_out_ms: self.duration(cd.map_or(&none_s, |c| &c.scale_out), "cooldown.scale_out", 60_000, 86_400_000),
            cooldown_scale_in_ms: self.duration(cd.map_or(&none_s, |c| &c.scale_in), "cooldown.scale_in", crate::topology::DEFAULT_COOLDOWN_SCALE_IN_MS, 86_400_000),
            health_check_grace_ms: self.duration(&a.health_check_grace, "health_check_grace", 120_000, 7_200_000),
            min_healthy_percentage: self.int(
                a.instance_refresh.as_ref().map_or(&None, |r| &r.min_healthy_percentage),
                "instance_refresh.min_healthy_percentage",
                90,
                0,
                100,
            ) as u32,
        }
    }

    fn docker(&mut self, d: Option<&RawDocker>, name: &str) -> Docker {
        let none = None;
        let images = d.and_then(|d| d.images.as_ref());
        let mut image = |sp: Option<&Option<Sp<String>>>, default: &str| self.string(sp.unwrap_or(&none), default, syntax::image);
        let images = Images {
            scale_api: image(images.map(|i| &i.scale_api), "scale-api:latest"),
            base: image(images.map(|i| &i.base), "debian:bookworm-slim"),
            nginx: image(images.map(|i| &i.nginx), "nginx:1.27"),
            redis: image(images.map(|i| &i.redis), "redis:7"),
            prometheus: image(images.map(|i| &i.prometheus), "prom/prometheus:v2.53.0"),
            grafana: image(images.map(|i| &i.grafana), "grafana/grafana:11.1.0"),
            node_exporter: image(images.map(|i| &i.node_exporter), "prom/node-exporter:v1.8.2"),
            redis_exporter: image(images.map(|i| &i.redis_exporter), "oliver006/redis_exporter:v1.62.0"),
            nginx_exporter: image(images.map(|i| &i.nginx_exporter), "nginx/nginx-prometheus-exporter:1.3.0"),
        };
        Docker {
            endpoint: self.string(d.map_or(&none, |d| &d.endpoint), "unix:///var/run/docker.sock", syntax::docker_endpoint),
            network: self.string(d.map_or(&none, |d| &d.network), name, |s| syntax::dns_label(s, "docker.network")),
            images,
        }
    }

    fn lab(&mut self, l: Option<&RawLab>) -> Lab {
        let mut lab = Lab::default();
        for (svc, port) in l.map(|l| l.publish.iter()).into_iter().flatten() {
            if *port.value() == 0 {
                self.at(port.loc(), "a published port must not be 0");
            } else if let Some((other, _)) = lab.publish.iter().find(|(_, p)| *p == *port.value()) {
                self.at(port.loc(), format!("127.0.0.1:{} is already published for {}", port.value(), service_name(other)));
            }
            lab.publish.set(*svc.value(), *port.value());
        }
        lab
    }
}

/// Instances on a host as far as validation can know: `max` counts the declared cores, else 1.
fn known_instances(t: &Topology, h: &Host) -> u32 {
    t.instances_on(h, h.cores.unwrap_or(1))
}

/// Where a host's role is written (falls back to the host's name).
/// The most one instance may be given (systemd's MemoryMax, the engine's memory limit): 1 TiB.
const MEMORY_MAX_LIMIT: u64 = 1 << 40;

/// Directories nginx must never serve from: the whole filesystem, or the system's own.
fn system_dir(root: &str) -> Option<&'static str> {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return Some("the whole filesystem");
    }
    ["/etc", "/root", "/proc", "/sys", "/dev", "/boot", "/run", "/var/lib", "/usr", "/bin", "/sbin", "/lib"]
        .into_iter()
        .find(|d| root == *d || root.starts_with(&format!("{d}/")))
        .map(|_| "a system directory")
}

fn role_loc(hosts: &Map<RawHost>, host: &str, role: Role) -> Loc {
    hosts
        .iter()
        .find(|(k, _)| k.value() == host)
        .map(|(k, h)| h.roles.value().iter().find(|r| *r.value() == role).map(|r| r.loc()).unwrap_or(k.loc()))
        .unwrap_or_default()
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::App => "app",
        Role::Lb => "lb",
        Role::Redis => "redis",
        Role::Monitor => "monitor",
        Role::Worker => "worker",
        Role::Database => "database",
        Role::Etcd => "etcd",
    }
}

pub fn service_name(s: Service) -> &'static str {
    match s {
        Service::LoadBalancer => "load_balancer",
        Service::Prometheus => "prometheus",
        Service::Grafana => "grafana",
        Service::Redis => "redis",
    }
}

fn fmt_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}
