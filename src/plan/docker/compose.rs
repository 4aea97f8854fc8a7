//! The compose bundle's `compose.yaml`: the docker target's container specs as compose services,
//! so the two cannot drift. Compose holds no secret value, so what apply writes into a container
//! (secret files, Redis' ACL users) comes from compose secrets at `up` instead.

use std::collections::BTreeMap;

use serde::Serialize;

use super::desired::{Commands, commands, rendered};
use super::*;
use crate::render::{self, RenderError, Templates};
use crate::topology::SecretRef;
use crate::topology::tiers::DB_PROXY_SLOT;
// The app's settings that hold the database's password: under compose they are made from
// PGPASSWORD when the container starts ([`database_urls_entrypoint`]).
use super::kubernetes::DATABASE_URLS;

/// One compose service: a spec, with its files as bind mounts of the bundle's files.
#[derive(Serialize)]
struct ComposeService<'a> {
    spec: &'a ContainerSpec,
    /// `./rsyslog` for images scalectl builds itself besides the release image.
    build: Option<&'static str>,
    /// Replaces the image's entrypoint (secrets exported from their files, or Redis' start).
    entrypoint: Option<Vec<String>>,
    /// The spec's command, or what runs behind `entrypoint`.
    command: Vec<String>,
    /// The spec's health check.
    health_test: Vec<String>,
    /// The image's own check turned off (a worker).
    health_disabled: bool,
    /// Who the container starts as, when not the image's user.
    user: Option<String>,
    /// Capabilities its entrypoint needs beside a dropped set (a member's: it writes its password
    /// files as root, then runs Patroni as PostgreSQL's user).
    cap_add: Vec<&'static str>,
    /// `unless-stopped`, or `no` for the release command, which runs once.
    restart: &'static str,
    environment: Vec<(String, String)>,
    /// (name, environment variable of this shell): secrets that reach a container only as variables.
    secret_env: Vec<(&'a str, &'a str)>,
    /// (compose secret, path in the container).
    secrets: Vec<(&'a str, String)>,
    /// (compose config, path in the container): the Redis exporter's password map.
    configs: Vec<(&'static str, String)>,
    /// (source, target, read_only): volumes, binds of the engine's machine, the bundle's files.
    mounts: Vec<(String, &'a str, bool)>,
    labels: BTreeMap<String, String>,
    cpus: Option<f64>,
    /// (service, condition): what must be started, healthy, or done first.
    depends_on: Vec<(&'a str, &'static str)>,
}

impl ComposeService<'_> {
    /// Compose reads `$NAME` in a value as its shell's variable at `up`: the scripts', health
    /// checks' and environment's own `$` are written `$$`, so the container gets them as they are.
    fn escape_dollars(&mut self) {
        let escape = |v: &mut String| *v = v.replace('$', "$$");
        self.entrypoint.iter_mut().flatten().chain(&mut self.command).chain(&mut self.health_test).for_each(escape);
        self.environment.iter_mut().for_each(|(_, v)| escape(v));
    }
}

/// A compose secret: its name (the variable it becomes) and where compose reads it at `up`.
#[derive(Serialize, PartialEq)]
struct ComposeSecret {
    name: String,
    /// `environment` (a variable of the shell that runs compose) or `file` (a path on its machine).
    kind: &'static str,
    source: String,
}

/// A member's compose secrets, as commands.yaml.j2's `compose_patroni_entrypoint` reads them.
const MEMBER_SECRETS: [&str; 3] = ["DB_REPLICATION_PASSWORD", "DB_REST_PASSWORD", "PGPASSWORD"];

/// The secrets' wrapper, which then makes the database's URLs from PGPASSWORD as the docker target
/// writes them ([`super::desired::database_urls`]: HAProxy's container, the writer and reader ports).
fn database_urls_entrypoint(db: &crate::topology::Database) -> Vec<String> {
    use crate::topology::ports::{DB_READER, DB_WRITER};
    let mut e = secrets_entrypoint();
    let (user, name) = (&db.user, &db.name);
    let urls = format!(
        "u=\"postgresql://{user}:$PGPASSWORD@{DB_PROXY_SLOT}\"; export DATABASE_URL=\"$u:{DB_WRITER}/{name}\" DB_WRITER_URL=\"$u:{DB_WRITER}/{name}\" DB_READER_URL=\"$u:{DB_READER}/{name}\"; exec \"$@\""
    );
    e[2] = e[2].replace("exec \"$@\"", &urls);
    e
}

/// Where compose's Redis finds the bundle's ACL users template (commands.yaml.j2 reads it there).
pub(super) const COMPOSE_REDIS_AUTH_TEMPLATE: &str = "/etc/scalectl/redis-auth.conf.in";

/// The compose config that holds the Redis exporter's password map (its image has no shell to
/// read a plain file): JSON made at `up` from the shell's variable.
const COMPOSE_EXPORTER_CONFIG: &str = "redis-exporter-password";

/// `compose.yaml` of the docker bundle, rendered from [`bundle_specs`]. Compose has no secret value
/// to put into a file of the bundle: each secret reaches its containers as a compose secret (a
/// file in the container, read from the shell's variable or the file the topology names).
pub fn compose_file(t: &Topology, cores: u32, templates: &Templates) -> Result<render::RenderedFile, RenderError> {
    let d = bundle_specs(t, cores, templates)?;
    let run = commands(&rendered(t, &[], templates)?)?;
    let app_slots: Vec<&str> = d.app.iter().map(|c| c.slot.as_str()).collect();
    let mut exporter_password = None;
    let services: Vec<ComposeService> = d
        .containers()
        .into_iter()
        .chain(d.release_command.iter())
        .map(|spec| {
            let mut service = ComposeService::of(t, &d, spec, &app_slots);
            if let Some(var) = service.deliver_secrets(t, &run) {
                exporter_password = Some(serde_json::json!({ "name": COMPOSE_EXPORTER_CONFIG, "address": redis_address(t), "var": var }));
            }
            service.escape_dollars();
            service
        })
        .collect();
    let volumes: std::collections::BTreeSet<&str> = d.containers().iter().flat_map(|c| c.volumes.iter().map(|(v, _)| v.as_str())).collect();
    let ctx = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "t": t,
        "services": services,
        "secrets": compose_secrets(t, &d),
        "exporter_password": exporter_password,
        "volumes": volumes,
    });
    let content = render::render_one(templates, "docker/compose.yaml.j2", ctx)?;
    Ok(render::RenderedFile {
        host: "docker".into(),
        path: "compose.yaml".into(),
        mode: 0o644,
        content,
        group: "root",
        on_change: render::OnChange::Nothing,
        sensitive: false,
    })
}

/// Every secret of the containers, once: where compose reads it at `up`.
fn compose_secrets(t: &Topology, d: &Desired) -> Vec<ComposeSecret> {
    let mut secrets: Vec<ComposeSecret> = Vec::new();
    // The app's database URLs are made from PGPASSWORD when its container starts; the members'
    // passwords are files their start writes.
    let app = d.containers().into_iter().flat_map(|c| &c.secret_env).filter(|e| !DATABASE_URLS.contains(&e.name.as_str())).map(|e| (e.name.clone(), e.from.clone()));
    let members = t.database.iter().flat_map(|db| {
        [(MEMBER_SECRETS[0], &db.replication_password), (MEMBER_SECRETS[1], &db.rest_password), (MEMBER_SECRETS[2], &db.password)].map(|(n, r)| (n.to_string(), Some(r.clone())))
    });
    for (name, from) in app.chain(members) {
        let (kind, source) = match from {
            Some(SecretRef::Env(var)) => ("environment", var),
            Some(SecretRef::File(path)) => ("file", path),
            None => continue,
        };
        let secret = ComposeSecret { name, kind, source };
        if !secrets.contains(&secret) {
            secrets.push(secret);
        }
    }
    secrets
}

/// What a service waits for at `up`: nginx for the replicas, the shipper for the collector; with a
/// database, HAProxy for the members it resolves when it starts, the release command for every
/// member healthy and HAProxy, and the app's containers for the release command's success.
fn depends_on<'a>(t: &Topology, d: &'a Desired, spec: &ContainerSpec, app_slots: &[&'a str]) -> Vec<(&'a str, &'static str)> {
    let started = |slots: Vec<&'a str>| slots.into_iter().map(|s| (s, "service_started")).collect::<Vec<_>>();
    let members = || d.services.iter().filter(|c| crate::topology::tiers::is_database_slot(&c.slot)).map(|c| c.slot.as_str());
    match spec.slot.as_str() {
        "lb" => started(app_slots.to_vec()),
        "logship" => started(vec!["collector"]),
        DB_PROXY_SLOT => started(members().collect()),
        _ if spec.role == ROLE_RELEASE => members().map(|m| (m, "service_healthy")).chain([(DB_PROXY_SLOT, "service_healthy")]).collect(),
        _ if (spec.role == "app" || spec.role == ROLE_WORKER) && t.app.release_command.is_some() => vec![(ROLE_RELEASE, "service_completed_successfully")],
        _ => Vec::new(),
    }
}

impl<'a> ComposeService<'a> {
    /// The service as the spec is, its files mounted from the bundle.
    fn of(t: &Topology, d: &'a Desired, spec: &'a ContainerSpec, app_slots: &[&'a str]) -> ComposeService<'a> {
        ComposeService {
            spec,
            build: (spec.image == d.tools_image).then_some("./rsyslog"),
            entrypoint: None,
            command: spec.cmd.clone(),
            health_test: spec.health.as_ref().map(|h| h.test.clone()).unwrap_or_default(),
            health_disabled: spec.no_health_check,
            user: spec.user.clone(),
            cap_add: Vec::new(),
            restart: if spec.role == ROLE_RELEASE { "no" } else { "unless-stopped" },
            environment: spec.env.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            secret_env: Vec::new(),
            secrets: Vec::new(),
            configs: Vec::new(),
            mounts: spec
                .volumes
                .iter()
                .map(|(v, p)| (v.clone(), p.as_str(), false))
                .chain(spec.binds_ro.iter().map(|(s, p)| (s.clone(), p.as_str(), true)))
                .chain(spec.files.iter().filter(|f| !f.source.is_empty()).map(|f| (format!("./{}", f.source), f.path.as_str(), true)))
                .collect(),
            labels: spec.labels(&t.name),
            cpus: spec.nano_cpus.map(|n| n as f64 / 1e9),
            depends_on: depends_on(t, d, spec, app_slots),
        }
    }

    /// How the spec's secrets reach the container under compose, which holds no value: files
    /// (compose secrets) for replicas and Redis, the exporter's password map made at `up` (the
    /// shell variable it reads is returned), variables otherwise.
    fn deliver_secrets(&mut self, t: &Topology, run: &Commands) -> Option<&'a str> {
        let spec = self.spec;
        let mut exporter_var = None;
        match spec.secrets {
            _ if spec.secret_env.is_empty() => {}
            SecretDelivery::Files => {
                self.entrypoint = Some(match &t.database {
                    Some(db) => database_urls_entrypoint(db),
                    None => secrets_entrypoint(),
                });
                if t.app.program.is_none() {
                    // scale-api's image: its entrypoint, then the spec's arguments (`worker`).
                    self.command = run.compose_app_command.iter().chain(&spec.cmd).cloned().collect();
                }
                self.secrets = spec
                    .secret_env
                    .iter()
                    .filter(|e| !DATABASE_URLS.contains(&e.name.as_str()))
                    .map(|e| (e.name.as_str(), format!("{SECRETS_DIR}/{}", e.name)))
                    .collect();
            }
            SecretDelivery::RedisExporterFile => {
                exporter_var = spec.secret_env.iter().find_map(|e| match &e.from {
                    Some(SecretRef::Env(var)) if e.name == "REDIS_PASSWORD" => Some(var.as_str()),
                    _ => None,
                });
                if exporter_var.is_some() {
                    let path = redis_exporter_password_file();
                    self.environment.push(("REDIS_PASSWORD_FILE".into(), path.clone()));
                    self.configs.push((COMPOSE_EXPORTER_CONFIG, path));
                }
            }
            SecretDelivery::Env => {
                self.secret_env = spec
                    .secret_env
                    .iter()
                    .filter_map(|e| match &e.from {
                        Some(SecretRef::Env(var)) => Some((e.name.as_str(), var.as_str())),
                        _ => None,
                    })
                    .collect();
            }
        }
        // A member's passwords (files apply writes): made by its start from compose's secrets.
        if spec.role == ROLE_DATABASE && t.database.is_some() && spec.user.as_deref() == Some("postgres") {
            self.entrypoint = Some(run.compose_patroni_entrypoint.clone());
            self.user = Some("root".into());
            self.cap_add = vec!["CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID"];
            self.secrets = MEMBER_SECRETS.iter().map(|n| (*n, format!("{SECRETS_DIR}/{n}"))).collect();
        }
        // Redis' ACL users (a secret file apply writes): made by its start from the bundle's template.
        if spec.role == "redis" && t.redis_password().is_some() {
            self.entrypoint = Some(run.compose_redis_entrypoint.clone());
            self.user = Some("root".into());
            self.secrets = vec![("REDIS_PASSWORD", format!("{SECRETS_DIR}/REDIS_PASSWORD"))];
            self.mounts.push((format!("./{}", render::REDIS_AUTH_TEMPLATE), COMPOSE_REDIS_AUTH_TEMPLATE, true));
        }
        exporter_var
    }
}
