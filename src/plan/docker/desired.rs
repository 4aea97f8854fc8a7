//! The containers a topology wants on the engine, as specs: image, command, environment, health
//! check, limits, ports, volumes, files. The docker target creates exactly these, and the compose
//! bundle is rendered from them, so the two cannot drift.

use std::collections::BTreeMap;

use super::*;
use crate::render::{self, Instance, RenderError, SecretValues, Templates};
use crate::topology::Persistence;

/// A file baked into a container at `path`, rendered as the bundle's `source`.
fn file(path: &str, files: &BTreeMap<String, String>, source: &str, live: bool) -> FileSpec {
    let content = get(files, source);
    FileSpec {
        path: path.into(),
        source: source.into(),
        mode: 0o644,
        content: content.into(),
        content_sha256: sha256_hex(content.as_bytes()),
        sensitive: false,
        live,
        owner: FileOwner::Root,
    }
}

/// A secret written into a container: 0400, readable by `owner` alone, never printed, its digest
/// keyed by the engine.
fn secret_file(path: &str, content: String, owner: FileOwner, live: bool, digest_key: &str) -> FileSpec {
    FileSpec { path: path.into(), source: String::new(), mode: 0o400, content_sha256: secret_digest(digest_key, content.as_bytes()), content, sensitive: true, live, owner }
}

/// What the containers run (templates/docker/commands.yaml.j2).
#[derive(serde::Deserialize)]
pub(super) struct Commands {
    /// The program's argv (empty: the image's own command, scale-api's).
    app_cmd: Vec<String>,
    app_health: Vec<String>,
    redis: Vec<String>,
    lb: Vec<String>,
    balancer: Vec<String>,
    prometheus: Vec<String>,
    node_exporter: Vec<String>,
    redis_exporter_env: Vec<String>,
    nginx_exporter: Vec<String>,
    collector: Vec<String>,
    logship: Vec<String>,
    mtail: Vec<String>,
    /// The compose bundle's: what a replica runs behind the secrets' wrapper, and Redis' start.
    pub(super) compose_app_command: Vec<String>,
    pub(super) compose_redis_entrypoint: Vec<String>,
    /// Kubernetes' Redis: the init container that writes its ACL users (it runs as Redis' user).
    pub(super) kubernetes_redis_acl: Vec<String>,
    /// The database tier's (empty without one).
    #[serde(default)]
    etcd: Vec<String>,
    #[serde(default)]
    etcd_health: Vec<String>,
    #[serde(default)]
    patroni: Vec<String>,
    #[serde(default)]
    patroni_health: Vec<String>,
    #[serde(default)]
    postgres_exporter: Vec<String>,
    #[serde(default)]
    db_proxy: Vec<String>,
    #[serde(default)]
    db_proxy_health: Vec<String>,
    /// Compose's members: their password files from compose's secrets, then Patroni.
    #[serde(default)]
    pub(super) compose_patroni_entrypoint: Vec<String>,
}

pub(super) fn commands(files: &BTreeMap<String, String>) -> Result<Commands, RenderError> {
    serde_saphyr::from_str(get(files, "commands.yaml")).map_err(|e| RenderError::Invalid { name: "docker/commands.yaml.j2".into(), message: e.to_string() })
}

/// json-file rotation for every container: the engine keeps at most 30 MB of each one's output.
fn log_rotation() -> BTreeMap<String, String> {
    BTreeMap::from([("max-size".to_string(), "10m".to_string()), ("max-file".to_string(), "3".to_string())])
}

/// The rendered files for a set of replicas (slot, container name).
pub(super) fn rendered(t: &Topology, replicas: &[(String, String)], templates: &Templates) -> Result<BTreeMap<String, String>, RenderError> {
    let instances: Vec<Instance> =
        replicas.iter().map(|(slot, name)| Instance::new(slot.clone(), name.clone(), t.app.port, 1)).collect();
    render::render_docker_deploy(t, &instances, templates)
}

pub(super) fn get<'a>(files: &'a BTreeMap<String, String>, path: &str) -> &'a str {
    files.get(path).map(String::as_str).unwrap_or_default()
}

/// Every container the topology wants, sealed (named by hash): the app's replicas, and every
/// other tier's containers as one list. A new tier adds its specs to `services`; nothing here
/// names it.
pub struct Desired {
    pub image: String,
    /// The rendered Dockerfile the release image is built from.
    pub dockerfile: String,
    /// The app's replicas (the final ones), rolled one at a time behind the load balancer.
    pub app: Vec<ContainerSpec>,
    /// The app's workers (`app.workers`): the release image running the workers' argv, no port,
    /// rolled one at a time after the replicas, each new one running before the old one stops.
    pub workers: Vec<ContainerSpec>,
    /// Every other container, in the order a first apply creates them: those the replicas need
    /// when they start ([`before_app`]) first.
    pub services: Vec<ContainerSpec>,
    /// `app.release_command`, run once per release image before any replica switches to it: a
    /// one-off container of the release, kept (stopped) once it succeeded as the record that it ran.
    pub release_command: Option<ContainerSpec>,
    /// A rollback: the release's command ran when it was deployed; it is not run again.
    pub rolling_back: bool,
    /// scalectl's own image (rsyslog and mtail, from Debian's packages) and its Dockerfile.
    pub tools_image: String,
    pub tools_dockerfile: String,
}

/// The services the app's replicas (and its release command) need when they start: Redis, and
/// the database tier (etcd, its members, HAProxy in front of them; not the members' exporters).
pub fn before_app(slot: &str) -> bool {
    use crate::topology::tiers::{DB_PROXY_SLOT, ETCD_SLOT};
    slot == "redis" || slot == ETCD_SLOT || slot == DB_PROXY_SLOT || crate::topology::tiers::is_database_slot(slot)
}

pub fn desired(t: &Topology, release: &Release, secrets: &SecretValues, engine: &Engine, templates: &Templates) -> Result<Desired, RenderError> {
    let image = release_image(t, release);
    let slots = replica_slots(t, engine.cores);
    // Replicas first: their names (hashes) do not depend on the load balancer.
    let base = rendered(t, &slots.iter().map(|s| (s.clone(), s.clone())).collect::<Vec<_>>(), templates)?;
    let run = commands(&base)?;
    let secret_env = secret_env(t, secrets, &engine.digest_key);
    let app: Vec<ContainerSpec> = slots.iter().map(|slot| replica(t, slot, &image, &base, &run, &secret_env)).collect();
    let workers = match &t.app.workers {
        Some(w) => {
            let slots = worker_slots(t, engine.cores);
            let envs = render::render_docker_workers(t, &slots, templates)?;
            slots.iter().map(|slot| worker(t, w, slot, &image, &envs, &secret_env)).collect()
        }
        None => Vec::new(),
    };
    // Everything else sees the final replicas.
    let final_replicas: Vec<(String, String)> = app.iter().map(|c| (c.slot.clone(), c.name.clone())).collect();
    let files = rendered(t, &final_replicas, templates)?;
    let seal = |c: ContainerSpec| c.sealed(&t.name);
    let tools_dockerfile = get(&files, "rsyslog/Dockerfile").to_string();
    let tools_image = tools_image(&tools_dockerfile);
    let mut services = Vec::new();
    // The files that hold secrets, by the tier they are for (rendered only with resolved values:
    // none for the compose bundle; a hosts topology's are its hosts', none of a container's).
    let secret_files = if t.target == crate::topology::Target::Docker { render::render_secrets(t, secrets, templates)? } else { Vec::new() };
    let secrets_of = |tier: &str| secret_files.iter().filter(|f| f.host == tier).cloned().collect::<Vec<_>>();
    if let Some(r) = &t.redis {
        services.push(redis(t, r, &files, &run, secrets, &secrets_of("redis"), &engine.digest_key, templates)?);
    }
    if let Some(db) = &t.database {
        services.extend(database(t, db, &files, &run, &secrets_of("database"), &engine.digest_key, &tools_image));
    }
    // The balancer before nginx, which resolves its name when it starts.
    services.push(balancer(t, &files, &run, &tools_image));
    services.push(load_balancer(t, &files, &run));
    services.push(prometheus(t, &files, &run));
    if t.observability.grafana {
        services.push(grafana(t, &files));
    }
    services.extend(exporters(t, &files, &run, &secret_env, &tools_image));
    if t.observability.logs.destination == crate::topology::LogDestination::Collector {
        services.extend(log_shipping(t, &files, &run, engine, &tools_image));
    }
    let release_command = t.app.release_command.as_ref().map(|argv| release_command(t, argv, &image, &base, &secret_env).sealed(&t.name));
    Ok(Desired {
        release_command,
        rolling_back: false,
        image,
        // An image of the engine's own is only labelled as this topology's release.
        dockerfile: match &release.image {
            Some(id) => render::render_one(templates, "docker/image.Dockerfile.j2", serde_json::json!({ "image": id }))?,
            None => get(&files, "Dockerfile").to_string(),
        },
        app,
        workers,
        services: services.into_iter().map(seal).collect(),
        tools_image,
        tools_dockerfile,
    })
}

/// Every secret the topology references; the value when the caller resolved it (apply, plan),
/// none for the compose bundle.
fn secret_env(t: &Topology, secrets: &SecretValues, digest_key: &str) -> Vec<SecretEnv> {
    let value = |name: &str| secrets.app.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
    t.app
        .secrets
        .iter()
        .map(|(n, r)| (n.clone(), r.clone(), value(n)))
        .chain(t.redis_password().into_iter().map(|r| ("REDIS_PASSWORD".to_string(), r.clone(), secrets.redis_password.clone().unwrap_or_default())))
        .chain(t.database.iter().flat_map(|db| {
            let password = secrets.database.as_ref().map(|d| d.password.clone()).unwrap_or_default();
            database_urls(db, &password).into_iter().map(|(name, url)| (name.to_string(), db.password.clone(), url))
        }))
        .map(|(name, from, v)| SecretEnv { name, from: Some(from), value_sha256: secret_digest(digest_key, v.as_bytes()), value: v })
        .collect()
}

/// The app's connection settings that hold the database's password, through HAProxy's container
/// ([`DB_PROXY_SLOT`](crate::topology::tiers::DB_PROXY_SLOT)): the writer (`DB_WRITER_URL`, and
/// `DATABASE_URL`, the name most libraries read), the reader (`DB_READER_URL`), and libpq's
/// `PGPASSWORD` beside the plain `PG*` variables of replica.env. As on hosts (secrets.env.j2).
pub(super) const DATABASE_SECRETS: [&str; 4] = ["DATABASE_URL", "DB_WRITER_URL", "DB_READER_URL", "PGPASSWORD"];

pub(super) fn database_urls(db: &crate::topology::Database, password: &str) -> [(&'static str, String); 4] {
    use crate::topology::{ports, tiers::DB_PROXY_SLOT};
    let url = |port: u16| format!("postgresql://{}:{password}@{DB_PROXY_SLOT}:{port}/{}", db.user, db.name);
    [("DATABASE_URL", url(ports::DB_WRITER)), ("DB_WRITER_URL", url(ports::DB_WRITER)), ("DB_READER_URL", url(ports::DB_READER)), ("PGPASSWORD", password.to_string())]
}

/// What every process of the app's release shares as a container: its environment (rendered
/// as `env/SLOT`), its secrets as files, the app's limits, no capability, the labels its log lines
/// carry to the shipper. `replica` and `worker` add what their kind is.
fn app_process(t: &Topology, role: &str, slot: &str, image: &str, envs: &BTreeMap<String, String>, secret_env: &[SecretEnv]) -> ContainerSpec {
    let env: Vec<String> = get(envs, &format!("env/{slot}")).lines().filter(|l| l.contains('=') && !l.starts_with('#')).map(str::to_string).collect();
    let mut log_opts = log_rotation();
    if t.observability.logs.destination == crate::topology::LogDestination::Collector {
        log_opts.insert("labels".to_string(), APP_LOG_LABELS.to_string());
    }
    ContainerSpec {
        aliases: Vec::new(),
        env,
        secret_env: secret_env.to_vec(),
        memory_bytes: Some(t.app.memory_max),
        nano_cpus: t.app.cpu_quota.map(|q| i64::from(q) * 10_000_000),
        nofile: Some(t.app.nofile),
        log_opts,
        // No capability is needed to serve an unprivileged port or take jobs. scale-api writes
        // nothing, so its root is read-only unless secrets are written into it (the engine writes
        // no file into a read-only root); a program's files are its own business.
        cap_drop_all: true,
        read_only: t.app.program.is_none() && secret_env.is_empty(),
        secrets: SecretDelivery::Files,
        pids_limit: Some(4 * DEFAULT_PIDS_LIMIT),
        ..service(role, slot, image)
    }
}

/// Replica `slot` of the release image, sealed: health-checked on the readiness path, limited as
/// `app.limits` says, its environment rendered (templates/docker/replica.env.j2).
fn replica(t: &Topology, slot: &str, image: &str, base: &BTreeMap<String, String>, run: &Commands, secret_env: &[SecretEnv]) -> ContainerSpec {
    let process = app_process(t, "app", slot, image, base, secret_env);
    // The program's own argv with this replica's `$(PORT)` and `$(INSTANCE)` (the values its
    // environment gives it); scale-api's image runs its own command.
    let cmd = match &t.app.program {
        Some(p) if !run.app_cmd.is_empty() => p.argv(t.app.port, env_value(&process.env, "INSTANCE").unwrap_or(slot)),
        _ => run.app_cmd.clone(),
    };
    ContainerSpec {
        // Checked every second; an answer may take 5 s, because a program's check starts a runtime
        // (`node -e`), which a host busy with the very load a deploy rolls under can slow past 2 s
        // (measured: a rolling release refused for that on a saturated 2-core machine).
        health: Some(Health { test: run.app_health.clone(), interval_ms: 1000, timeout_ms: 5000, retries: 3, start_period_ms: 2000 }),
        stop_timeout_s: drain_stop_timeout(t),
        cmd,
        ..process
    }
    .sealed(&t.name)
}

/// Worker `slot`: the release image running the workers' argv with its `$(INSTANCE)` (scale-api's
/// image: the arguments of its own entrypoint, `worker`), its environment rendered
/// (templates/docker/worker.env.j2), no port and no health check: it must still run a moment after
/// it started ([`WORKER_SETTLE_S`]), and it gets its drain timeout to finish the job in hand.
fn worker(t: &Topology, w: &crate::topology::Workers, slot: &str, image: &str, envs: &BTreeMap<String, String>, secret_env: &[SecretEnv]) -> ContainerSpec {
    let process = app_process(t, ROLE_WORKER, slot, image, envs, secret_env);
    let mut argv = w.argv(env_value(&process.env, "INSTANCE").unwrap_or(slot));
    if t.app.program.is_none() {
        // `[scale-api, worker]`: the image's entrypoint is scale-api.
        argv.remove(0);
    }
    ContainerSpec { stop_timeout_s: worker_stop_timeout(t), cmd: argv, no_health_check: true, settle_s: Some(WORKER_SETTLE_S), ..process }.sealed(&t.name)
}

/// `app.release_command` as a one-off container of the release image: a replica's environment
/// and secrets (so the writer is reached as the app reaches it), no port, no health check, its
/// argv (scale-api's image: the arguments of its own entrypoint, `migrate`).
fn release_command(t: &Topology, argv: &[String], image: &str, envs: &BTreeMap<String, String>, secret_env: &[SecretEnv]) -> ContainerSpec {
    let slot = envs.keys().find_map(|k| k.strip_prefix("env/")).unwrap_or_default().to_string();
    let mut process = app_process(t, ROLE_RELEASE, &slot, image, envs, secret_env);
    process.slot = ROLE_RELEASE.into();
    process.aliases.clear();
    let mut cmd = argv.to_vec();
    if t.app.program.is_none() {
        cmd.remove(0);
    }
    ContainerSpec { cmd, no_health_check: true, ..process }
}

/// The database tier on one engine: etcd; the members `db-1..N`, each Patroni running PostgreSQL
/// as its user on a volume of its own, with its passwords as files only that user reads; beside
/// each, its exporter, over the socket directory they share; HAProxy in front of them, where the
/// app's writer and reader ports are.
fn database(
    t: &Topology,
    db: &crate::topology::Database,
    files: &BTreeMap<String, String>,
    run: &Commands,
    secret_files: &[render::RenderedFile],
    digest_key: &str,
    tools_image: &str,
) -> Vec<ContainerSpec> {
    use crate::topology::tiers::{self as tt, DB_PROXY_SLOT, ETCD_SLOT, database_slot};
    let mut etcd = service(ROLE_DATABASE, ETCD_SLOT, tools_image);
    etcd.cmd = run.etcd.clone();
    etcd.user = Some("etcd".into());
    etcd.volumes.push((database_volume(t, ETCD_SLOT), "/var/lib/etcd/scalectl".into()));
    etcd.health = Some(Health { test: run.etcd_health.clone(), interval_ms: 1000, timeout_ms: 3000, retries: 3, start_period_ms: 10_000 });
    etcd.cap_drop_all = true;
    let mut out = vec![etcd];
    // Patroni's passwords and the app's, PostgreSQL's user's alone.
    let secret_files: Vec<FileSpec> = secret_files.iter().map(|f| secret_file(&f.path, f.content.clone(), FileOwner::User("postgres".into()), false, digest_key)).collect();
    let mut exporters = Vec::new();
    for i in 1..=db.docker_members {
        let slot = database_slot(i);
        let sockets = database_volume(t, &format!("{slot}-run"));
        let mut m = service(ROLE_DATABASE, &slot, tools_image);
        m.cmd = run.patroni.clone();
        m.user = Some("postgres".into());
        m.files.push(file(tt::PATRONI_CONFIG, files, &format!("database/{slot}/patroni.yml"), false));
        m.files.push(FileSpec { mode: 0o755, ..file(tt::PATRONI_POST_BOOTSTRAP, files, "database/post-bootstrap.sh", false) });
        m.files.extend(secret_files.iter().cloned());
        m.volumes.push((database_volume(t, &slot), tt::DATABASE_DATA_DIR.into()));
        m.volumes.push((sockets.clone(), "/run/postgresql".into()));
        // Healthy once its PostgreSQL runs: at once for the first, after its copy for a replica.
        m.health = Some(Health { test: run.patroni_health.clone(), interval_ms: 2000, timeout_ms: 3000, retries: 3, start_period_ms: 120_000 });
        // A primary's shutdown checkpoint, and Patroni's handing over, in time.
        m.stop_timeout_s = 60;
        m.cap_drop_all = true;
        out.push(m);
        let mut e = service("monitor", &format!("postgres-exporter-{i}"), tools_image);
        e.cmd = run.postgres_exporter.clone();
        e.user = Some(DB_MONITOR_OS_USER.into());
        e.files.push(file("/etc/default/prometheus-postgres-exporter", files, "database/postgres-exporter.default", false));
        e.files.push(file(tt::POSTGRES_EXPORTER_QUERIES, files, "database/postgres-queries.yaml", false));
        e.volumes.push((sockets, "/run/postgresql".into()));
        e.cap_drop_all = true;
        exporters.push(e);
    }
    let mut proxy = service(ROLE_DATABASE, DB_PROXY_SLOT, tools_image);
    proxy.cmd = run.db_proxy.clone();
    // Healthy once its checks found the one primary: the release command and the replicas after it
    // write through it.
    proxy.health = Some(Health { test: run.db_proxy_health.clone(), interval_ms: 1000, timeout_ms: 3000, retries: 3, start_period_ms: 30_000 });
    proxy.files.push(file("/etc/haproxy/db-proxy.cfg", files, "haproxy/db-proxy.cfg", false));
    // Recreated with its members: it resolves their fallback servers once, when it starts.
    let members: Vec<String> = out.iter().filter(|c| c.slot != ETCD_SLOT).map(|c| c.clone().sealed(&t.name).name).collect();
    proxy.env.push(format!("SCALECTL_MEMBERS={}", members.join(",")));
    proxy.cap_drop_all = true;
    out.push(proxy);
    out.extend(exporters);
    out
}

/// The OS user the postgres exporter runs as: PostgreSQL's peer authentication maps it to the
/// exporter's role ([`crate::topology::DB_MONITOR_USER`]).
const DB_MONITOR_OS_USER: &str = "prometheus";

/// The value of `name` in KEY=VALUE lines.
fn env_value<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// Seconds a worker gets to finish its job before the engine kills it: its drain timeout (the
/// default one when the topology no longer has workers) and 5 s.
pub(super) fn worker_stop_timeout(t: &Topology) -> i64 {
    let drain_ms = t.app.workers.as_ref().map_or(crate::topology::DEFAULT_WORKER_DRAIN_MS, |w| w.drain_timeout_ms);
    (drain_ms / 1000) as i64 + 5
}

/// Seconds a container that serves requests gets to drain before the engine kills it.
pub(super) fn drain_stop_timeout(t: &Topology) -> i64 {
    (t.app.drain_timeout_ms / 1000) as i64 + 5
}

/// Processes and threads a container may run: far above what any of them needs, far below what
/// a fork bomb or a thread leak would take from the engine's machine.
const DEFAULT_PIDS_LIMIT: i64 = 1024;

/// A container of `role` in `slot`, reached by its slot name, with the defaults every one has
/// (every one also runs with `no-new-privileges`).
fn service(role: &str, slot: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
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
        user: None,
        volumes: Vec::new(),
        binds_ro: Vec::new(),
        log_opts: log_rotation(),
        cap_drop_all: false,
        read_only: false,
        pids_limit: Some(DEFAULT_PIDS_LIMIT),
        secrets: SecretDelivery::Env,
        pid_host: false,
        previous: String::new(),
        files: Vec::new(),
        stop_timeout_s: 10,
        no_health_check: false,
        settle_s: None,
        hash: String::new(),
    }
}

/// Published on 127.0.0.1 when the topology's `lab.publish` says so.
fn publish(host: Option<u16>, container_port: u16) -> Vec<Publish> {
    host.map(|host_port| Publish { host_port, container_port }).into_iter().collect()
}

/// Nginx, run by a script that follows replicas the engine restarted at another address.
fn load_balancer(t: &Topology, files: &BTreeMap<String, String>, run: &Commands) -> ContainerSpec {
    let mut lb = service("lb", "lb", &t.docker.images.nginx);
    lb.cmd = run.lb.clone();
    // Where mtail's socket for the access log is.
    lb.volumes.push((lb_log_volume(t), LB_LOG_DIR.into()));
    lb.files.push(file(NGINX_CONF, files, &format!("nginx/{}.conf", t.name), true));
    lb.files.push(FileSpec { mode: 0o755, ..file("/etc/scalectl/nginx-follow.sh", files, "nginx/follow.sh", false) });
    lb.publish = publish(t.lab.publish.load_balancer, t.load_balancer.listen);
    lb.stop_timeout_s = drain_stop_timeout(t);
    lb
}

/// The balancer behind nginx: HAProxy from scalectl's own image (Debian's, with socat for its
/// runtime API), the replicas its servers by container name. Its file is live: apply rewrites it
/// as replicas come and go, without recreating it.
fn balancer(t: &Topology, files: &BTreeMap<String, String>, run: &Commands, tools_image: &str) -> ContainerSpec {
    let mut b = service("lb", BALANCER_SLOT, tools_image);
    b.cmd = run.balancer.clone();
    b.files.push(file(BALANCER_CONF, files, "haproxy/haproxy.cfg", true));
    // Requests in flight are answered before it stops.
    b.stop_timeout_s = drain_stop_timeout(t);
    b.cap_drop_all = true;
    b
}

/// Redis with the rendered redis.conf, its password file (a secret), its volume when persistent.
#[allow(clippy::too_many_arguments)]
fn redis(
    t: &Topology,
    r: &crate::topology::Redis,
    files: &BTreeMap<String, String>,
    run: &Commands,
    secrets: &SecretValues,
    secret_files: &[render::RenderedFile],
    digest_key: &str,
    templates: &Templates,
) -> Result<ContainerSpec, RenderError> {
    let mut redis = service("redis", "redis", &t.docker.images.redis);
    redis.cmd = run.redis.clone();
    redis.files.push(file("/usr/local/etc/redis/redis.conf", files, "redis/redis.conf", false));
    let secret = |path: &str, content: String, owner: FileOwner, live: bool| secret_file(path, content, owner, live, digest_key);
    for f in secret_files.iter().cloned() {
        // Readable by Redis alone (the official image and Debian's both run it as `redis`); live:
        // a new password changes the users in the running Redis (Step::Credentials), which keeps
        // its data and its clients.
        let live = f.path == render::DOCKER_REDIS_USERS;
        redis.files.push(secret(&f.path, f.content, FileOwner::User("redis".into()), live));
    }
    if secrets.redis_password.is_some() {
        // scalectl's admin user, which changes the users live. Its password is derived from the
        // engine's key: the same on every plan against this engine (a saved plan still plans the
        // same), and known only where the containers' files are readable anyway.
        let password = secret_digest(digest_key, format!("scalectl redis admin of {}", t.name).as_bytes());
        let conf = render::render_one(
            templates,
            "redis/admin.conf.j2",
            serde_json::json!({ "password_sha256": crate::plan::sha256_hex(password.as_bytes()), "rules": render::REDIS_ADMIN_RULES }),
        )?;
        redis.files.push(secret(render::DOCKER_REDIS_ADMIN_CONF, conf, FileOwner::User("redis".into()), false));
        redis.files.push(secret(render::DOCKER_REDIS_ADMIN_PASS, format!("{password}\n"), FileOwner::User("redis".into()), false));
    }
    if r.persistence != Persistence::None {
        redis.volumes.push((redis_volume(t), "/data".into()));
    }
    redis.publish = publish(t.lab.publish.redis, r.port);
    Ok(redis)
}

fn prometheus(t: &Topology, files: &BTreeMap<String, String>, run: &Commands) -> ContainerSpec {
    let mut prometheus = service("monitor", "prometheus", &t.docker.images.prometheus);
    prometheus.cmd = run.prometheus.clone();
    prometheus.files.push(file("/etc/prometheus/prometheus.yml", files, "prometheus/prometheus.yml", false));
    prometheus.files.push(file("/etc/prometheus/scalectl/rules.yml", files, "prometheus/rules.yml", false));
    prometheus.files.push(file(TARGETS_JSON, files, "prometheus/targets.json", true));
    prometheus.publish = publish(t.lab.publish.prometheus, t.observability.prometheus_port);
    prometheus.cap_drop_all = true;
    prometheus
}

/// Grafana with its provisioning and the dashboards.
fn grafana(t: &Topology, files: &BTreeMap<String, String>) -> ContainerSpec {
    let mut g = service("monitor", "grafana", &t.docker.images.grafana);
    for path in files.keys().filter(|p| p.starts_with("grafana/")) {
        let dest = match path.strip_prefix("grafana/provisioning/") {
            Some(rest) => format!("/etc/grafana/provisioning/{rest}"),
            None => format!("/var/lib/grafana/dashboards/scalectl/{}", path.trim_start_matches("grafana/dashboards/")),
        };
        g.files.push(file(&dest, files, path, false));
    }
    g.publish = publish(t.lab.publish.grafana, t.observability.grafana_port);
    g
}

/// Exporters, reached by their slot names (targets.json): the engine's machine, Redis, Nginx, and
/// mtail, which counts the load balancer's answers per replica from its access log.
fn exporters(t: &Topology, files: &BTreeMap<String, String>, run: &Commands, secret_env: &[SecretEnv], tools_image: &str) -> Vec<ContainerSpec> {
    let images = &t.docker.images;
    let mut node = service("monitor", "node-exporter", &images.node_exporter);
    node.cmd = run.node_exporter.clone();
    node.binds_ro.push(("/".into(), "/host".into()));
    node.pid_host = true;
    let mut redis_exporter = service("monitor", "redis-exporter", &images.redis_exporter);
    redis_exporter.env = run.redis_exporter_env.clone();
    redis_exporter.secret_env = secret_env.iter().filter(|s| s.name == "REDIS_PASSWORD").cloned().collect();
    let mut nginx_exporter = service("monitor", "nginx-exporter", &images.nginx_exporter);
    nginx_exporter.cmd = run.nginx_exporter.clone();
    redis_exporter.secrets = SecretDelivery::RedisExporterFile;
    if let Some(q) = t.queue() {
        redis_exporter.files.push(file(q.measures().exporter_script, files, "exporters/queue-oldest.lua", false));
    }
    let mut mtail = service("monitor", "mtail", tools_image);
    mtail.cmd = run.mtail.clone();
    mtail.files.push(file("/etc/mtail/scalectl-nginx.mtail", files, "mtail/scalectl-nginx.mtail", false));
    mtail.volumes.push((lb_log_volume(t), LB_LOG_DIR.into()));
    // Exporters read and serve; none needs a capability or (but for a password file or mtail's
    // program, which the engine cannot write into a read-only root) its root.
    let mut all = vec![node, nginx_exporter, mtail];
    if t.redis.is_some() {
        all.insert(1, redis_exporter);
    }
    for e in &mut all {
        e.cap_drop_all = true;
        e.read_only = e.secret_env.is_empty() && e.files.is_empty();
    }
    all
}

/// The collector and the shipper: rsyslog in both, run as root (the engine's log files are
/// root's) with no capabilities.
fn log_shipping(t: &Topology, files: &BTreeMap<String, String>, run: &Commands, engine: &Engine, log_image: &str) -> [ContainerSpec; 2] {
    let mut collector = service(ROLE_LOGS, "collector", log_image);
    collector.cmd = run.collector.clone();
    collector.files.push(file("/etc/scalectl/collector.conf", files, "rsyslog/collector.conf", false));
    collector.volumes.push((logs_volume(t), "/var/log/scalectl".into()));
    collector.cap_drop_all = true;
    let mut shipper = service(ROLE_LOGS, "logship", log_image);
    shipper.cmd = run.logship.clone();
    shipper.files.push(file("/etc/scalectl/ship.conf", files, "rsyslog/ship.conf", false));
    shipper.volumes.push((logship_volume(t), "/var/spool/rsyslog".into()));
    shipper.binds_ro.push((format!("{}/containers", engine.data_root.trim_end_matches('/')), ENGINE_CONTAINERS.into()));
    shipper.cap_drop_all = true;
    [collector, shipper]
}


impl Desired {
    /// Every container, in the order a first apply creates them: the services the replicas need
    /// at start, the replicas, then the other services.
    pub fn containers(&self) -> Vec<&ContainerSpec> {
        let (before, after): (Vec<&ContainerSpec>, Vec<&ContainerSpec>) = self.services.iter().partition(|c| before_app(&c.slot));
        before.into_iter().chain(&self.app).chain(&self.workers).chain(after).collect()
    }

    /// The service in `slot`, if the topology runs it.
    pub fn service(&self, slot: &str) -> Option<&ContainerSpec> {
        self.services.iter().find(|c| c.slot == slot)
    }

    /// Every named volume a container mounts, in creation order, once each.
    pub fn volumes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (v, _) in self.containers().into_iter().flat_map(|c| &c.volumes) {
            if !out.contains(&v.as_str()) {
                out.push(v);
            }
        }
        out
    }
}

/// The specs the compose bundle is rendered from: those `target: docker` creates, for the image
/// named by `docker.images.scale_api` (built from the bundle's Dockerfile) and no secret values
/// (compose reads `{env:}` secrets from the shell at `up`).
pub fn bundle_specs(t: &Topology, cores: u32, templates: &Templates) -> Result<Desired, RenderError> {
    let image = &t.docker.images.scale_api;
    let tag = match &t.app.program {
        Some(_) => "latest",
        None => image.rsplit_once(':').map(|(_, tag)| tag).filter(|tag| !tag.contains('/')).unwrap_or("latest"),
    };
    let release = Release { id: tag.to_string(), bytes: 0, archive: false, image: None };
    let engine = Engine { cores, data_root: "/var/lib/docker".into(), digest_key: String::new() };
    let mut d = desired(t, &release, &SecretValues::default(), &engine, templates)?;
    if let Some(image) = t.app.program.as_ref().and_then(|p| p.image.as_ref()) {
        // Compose runs the image as it is named: nothing is built for it.
        for c in d.app.iter_mut().chain(&mut d.workers) {
            c.image = image.clone();
        }
    }
    Ok(d)
}

