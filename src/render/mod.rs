//! Topology -> every config file scalectl writes anywhere, from the templates in templates/.
//!
//! Pure: the caller passes the validated topology, the facts that only the targets know (cores per
//! host, for `instances: max`) and the template texts (embedded, or overridden from a directory by
//! the CLI). No config text is assembled here: Rust builds a context of validated values and
//! decides which template goes to which host and path; the templates say what the files contain.
//! Same inputs, byte-identical output.

mod context;
mod filters;

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::topology::{Role, Target, Topology};
pub use context::{Facts, Instance};
pub use filters::{duration, hostport, redis_exporter_password, secret_is_safe, sha256_hex};
pub use crate::topology::tiers::{
    COLLECTOR_LOGROTATE, COLLECTOR_ROTATION_TIMER, FIREWALL_RULES, FIREWALL_SERVICE, INSTANCES_SCRIPT, INSTANCES_TIMER, OnChange, PROMETHEUS_PASSWORD_FILE,
    PROMETHEUS_WEB_CONFIG, REDIS_EXPORTER_PASSWORDS, site_path,
};
use context::Ctx;
use crate::topology::tiers::{DATABASE_APP_PASSWORD, PATRONI_SECRETS, TierFile, file};

/// Every template scalectl ships, embedded at build time (`--templates DIR` overrides by name).
pub static EMBEDDED: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/templates");
/// The Terraform module the rendered root module calls, copied next to it.
pub static TERRAFORM_MODULE: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/terraform/modules/asg");
/// Grafana dashboards, copied verbatim (their `{{label}}` legends are Grafana's, not templates).
pub static DASHBOARDS: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/grafana/dashboards");

/// One file to be written: on a host (absolute `path`), or in a bundle (`docker`, `terraform`,
/// `ansible`) under a relative `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedFile {
    /// A host name, or one of the bundles `docker`, `terraform`, `ansible`.
    pub host: String,
    pub path: String,
    pub mode: u32,
    pub content: String,
    /// Group owning it on a host (the owner is root); what a change asks of its service; whether
    /// it holds a secret. One table (`host_jobs`, `secret_jobs`) says all three for every file.
    #[serde(skip)]
    pub group: &'static str,
    #[serde(skip)]
    pub on_change: OnChange,
    #[serde(skip)]
    pub sensitive: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("template {0} is missing (neither embedded nor in --templates)")]
    Missing(String),
    #[error("template {name} rendered something unreadable: {message}")]
    Invalid { name: String, message: String },
}

/// The template texts by name (path under templates/).
#[derive(Debug, Clone, Default)]
pub struct Templates {
    sources: BTreeMap<String, String>,
}

impl Templates {
    /// The templates built into the binary.
    pub fn embedded() -> Self {
        let mut sources = BTreeMap::new();
        collect(&EMBEDDED, &mut sources);
        Templates { sources }
    }

    /// Replace or add templates by name (used by `--templates DIR`).
    pub fn with_overrides(mut self, overrides: BTreeMap<String, String>) -> Self {
        self.sources.extend(overrides);
        self
    }

    fn environment(&self) -> Environment<'_> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files, not HTML: quoting is explicit (filters), never automatic by file extension.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).keep_trailing_newline(true).build() {
            env.set_syntax(syntax);
        }
        filters::register(&mut env);
        for (name, src) in &self.sources {
            // Syntax errors surface at render time with the template's name.
            let _ = env.add_template(name, src);
        }
        env
    }
}

fn collect(dir: &include_dir::Dir<'static>, out: &mut BTreeMap<String, String>) {
    for f in dir.files() {
        if let Some(text) = f.contents_utf8() {
            out.insert(f.path().to_string_lossy().into_owned(), text.to_string());
        }
    }
    for d in dir.dirs() {
        collect(d, out);
    }
}

/// Secret values resolved from their references by the caller (apply, plan), never by render.
#[derive(Clone, Default)]
pub struct SecretValues {
    /// app.secrets: environment name -> value.
    pub app: Vec<(String, String)>,
    pub redis_password: Option<String>,
    /// observability.alertmanager.webhook.
    pub alertmanager_webhook: Option<String>,
    /// observability.prometheus.password.
    pub prometheus_password: Option<String>,
    /// database.password, replication_password and rest_password.
    pub database: Option<DatabaseSecrets>,
}

/// The database tier's passwords, resolved.
#[derive(Clone, Default)]
pub struct DatabaseSecrets {
    pub password: String,
    pub replication_password: String,
    pub rest_password: String,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.app.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("SecretValues")
            .field("app", &names)
            .field("redis_password", &self.redis_password.as_ref().map(|_| "***"))
            .field("alertmanager_webhook", &self.alertmanager_webhook.as_ref().map(|_| "***"))
            .field("prometheus_password", &self.prometheus_password.as_ref().map(|_| "***"))
            .field("database", &self.database.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The files that carry secrets, per host: what `render` never writes. Only apply and plan call
/// this, with values they resolved; the plan hides these files' contents.
pub fn render_secrets(t: &Topology, values: &SecretValues, templates: &Templates) -> Result<Vec<RenderedFile>, RenderError> {
    let env = templates.environment();
    let secrets: Vec<minijinja::Value> =
        values.app.iter().map(|(n, v)| minijinja::context! { name => n, value => v }).collect();
    let ctx = minijinja::context! {
        version => env!("CARGO_PKG_VERSION"),
        t => minijinja::Value::from(minijinja::value::Serde(t)),
        secrets => secrets,
        redis_password => values.redis_password.clone(),
        redis_password_sha256 => values.redis_password.as_deref().map(|p| sha256_hex(p.as_bytes())),
        // The exporter's password answers for its one target only (a map keyed by its address).
        redis_exporter_passwords => values.redis_password.as_deref().map(|p| {
            let mut m = std::collections::BTreeMap::new();
            m.insert(format!("redis://{}", hostport("127.0.0.1", t.redis_port().unwrap_or_default())), redis_exporter_password(p));
            m
        }),
        redis_exporter_password_sha256 => values.redis_password.as_deref().map(|p| sha256_hex(redis_exporter_password(p).as_bytes())),
        webhook => values.alertmanager_webhook.clone(),
        prometheus_password => values.prometheus_password.clone(),
        prometheus_password_bcrypt => values.prometheus_password.as_deref().map(prometheus_password_hash),
        // What the database's members and the app's connection URLs need: its passwords, the
        // users they go with, and the ports of HAProxy's writer and reader on each app host.
        database_secrets => values.database.as_ref().map(|d| minijinja::context! {
            password => d.password.clone(),
            replication_password => d.replication_password.clone(),
            rest_password => d.rest_password.clone(),
            rest_user => crate::topology::DB_REST_USER,
            writer_port => crate::topology::ports::DB_WRITER,
            reader_port => crate::topology::ports::DB_READER,
        }),
        queue => t.app.workers.as_ref().and_then(|w| w.queue.as_ref()).map(|q| minijinja::Value::from(minijinja::value::Serde(q.measures()))),
    };
    let mut out = Vec::new();
    if t.target == Target::Docker {
        // Replicas get app secrets as environment at creation; Redis reads its password from a file.
        if values.redis_password.is_some() {
            out.push(run(&env, &ctx, "redis", file("redis/auth.conf.j2", DOCKER_REDIS_USERS).mode(0o640).secret())?);
        }
        // Each database member's: Patroni's passwords, and the app's for its bootstrap.
        if t.database.is_some() && values.database.is_some() {
            out.push(run(&env, &ctx, "database", file("database/patroni.env.j2", PATRONI_SECRETS).mode(0o400).secret())?);
            out.push(run(&env, &ctx, "database", file("database/app-password.j2", DATABASE_APP_PASSWORD).mode(0o400).secret())?);
        }
        return Ok(out);
    }
    for h in &t.hosts {
        for j in secret_jobs(t, h) {
            out.push(run(&env, &ctx, &h.name, j)?);
        }
    }
    Ok(out)
}

/// One template with a context of its own (the lab's Ansible inventory): for files that are not
/// part of a topology's render.
pub fn render_one(templates: &Templates, name: &str, ctx: impl Serialize) -> Result<String, RenderError> {
    let env = templates.environment();
    let tmpl = env.get_template(name).map_err(|_| RenderError::Missing(name.to_string()))?;
    tmpl.render(minijinja::Value::from(minijinja::value::Serde(ctx))).map_err(|source| RenderError::Template { name: name.to_string(), source })
}

/// Render every file of the topology.
pub fn render(t: &Topology, facts: &Facts, templates: &Templates) -> Result<Vec<RenderedFile>, RenderError> {
    let env = templates.environment();
    let mut out = Vec::new();
    if t.target == Target::Hosts {
        let fleet = Ctx::hosts_view(t, facts);
        let fleet_value = fleet.value();
        for h in &t.hosts {
            let ctx = fleet.for_host(&fleet_value, &h.name);
            for j in host_jobs(t, h) {
                out.push(run(&env, &ctx, &h.name, j)?);
            }
            if h.has(Role::Monitor) && t.observability.grafana {
                copy_verbatim(&DASHBOARDS, &h.name, "/var/lib/grafana/dashboards/scalectl", OnChange::Restart("grafana-server.service"), &mut out);
            }
        }
        out.push(run(&env, &fleet_value, "ansible", file("ansible/inventory.yml.j2", "inventory.yml"))?);
    }
    let docker = Ctx::docker_view(t, facts).value();
    for j in docker_jobs(t) {
        out.push(run(&env, &docker, "docker", j)?);
    }
    out.extend(docker_database(t, &env, &docker)?);
    if t.redis_password().is_some() {
        out.push(redis_auth_in(&env, &docker)?);
    }
    if t.observability.grafana {
        copy_verbatim(&DASHBOARDS, "docker", "grafana/dashboards", OnChange::Nothing, &mut out);
    }
    if t.autoscaling.is_some() {
        // The autoscaling group's instances run the same units as app hosts: render them for cloud-init.
        let asg = Ctx::asg_view(t).value();
        let app = t.app.name();
        let mut jobs = vec![
            file("terraform/main.tf.j2", "main.tf"),
            file("terraform/outputs.tf.j2", "outputs.tf"),
            file("systemd/scale-api@.service.j2", format!("files/{app}@.service")),
            file("systemd/scale-api.env.j2", format!("files/{app}.env")),
            file("logs/rsyslog-ship.conf.j2", "files/60-scalectl-ship.conf"),
        ];
        // A program binds its own port: no socket unit (as on app hosts).
        if t.app.program.is_none() {
            jobs.push(file("systemd/scale-api@.socket.j2", "files/scale-api@.socket"));
        }
        for j in jobs {
            out.push(run(&env, &asg, "terraform", j)?);
        }
        copy_verbatim(&TERRAFORM_MODULE, "terraform", "modules/asg", OnChange::Nothing, &mut out);
    }
    Ok(out)
}

/// Redis' ACL users for the bundles that hold no secret value (compose's and Kubernetes'): their
/// Redis writes the users with the password's hash at start, where the placeholder is. (Their
/// exporter logs in with the same password as the apps: there is no value to derive its own from.)
pub fn bundle_redis_auth(t: &Topology, templates: &Templates) -> Result<RenderedFile, RenderError> {
    redis_auth_in(&templates.environment(), &Ctx::docker_view(t, &Facts::with_default_cores(1)).value())
}

/// [`bundle_redis_auth`] with the environment and the docker view a render already has.
fn redis_auth_in(env: &Environment<'_>, docker: &minijinja::Value) -> Result<RenderedFile, RenderError> {
    let ctx = minijinja::context! {
        redis_password_sha256 => REDIS_PASSWORD_SHA256_PLACEHOLDER,
        redis_exporter_password_sha256 => REDIS_PASSWORD_SHA256_PLACEHOLDER,
        ..docker.clone()
    };
    run(env, &ctx, "docker", file("redis/auth.conf.j2", REDIS_AUTH_TEMPLATE))
}

/// What the docker target deploys, rendered for one set of replicas (the planner renders the load
/// balancer and Prometheus targets for every step of a rolling release): path -> content, with
/// paths as in the docker bundle, plus `replica.env` per replica keyed `env/<slot>` and what the
/// containers run (`commands.yaml`).
pub fn render_docker_deploy(t: &Topology, replicas: &[Instance], templates: &Templates) -> Result<BTreeMap<String, String>, RenderError> {
    let env = templates.environment();
    let mut c = Ctx::docker_view(t, &Facts::with_default_cores(1));
    c.instances = replicas.to_vec();
    let ctx = c.value();
    let mut out = BTreeMap::new();
    for j in docker_jobs(t) {
        let f = run(&env, &ctx, "docker", j)?;
        out.insert(f.path, f.content);
    }
    let f = run(&env, &ctx, "docker", file("docker/commands.yaml.j2", "commands.yaml"))?;
    out.insert(f.path, f.content);
    out.extend(docker_database(t, &env, &ctx)?.into_iter().map(|f| (f.path, f.content)));
    for i in replicas {
        let ctx = minijinja::context! { instance => minijinja::Value::from(minijinja::value::Serde(i)), ..ctx.clone() };
        let f = run(&env, &ctx, "docker", file("docker/replica.env.j2", format!("env/{}", i.host)))?;
        out.insert(f.path, f.content);
    }
    if t.observability.grafana {
        let mut dash = Vec::new();
        copy_verbatim(&DASHBOARDS, "docker", "grafana/dashboards", OnChange::Nothing, &mut dash);
        out.extend(dash.into_iter().map(|f| (f.path, f.content)));
    }
    Ok(out)
}

/// Each docker worker's environment (templates/docker/worker.env.j2), keyed `env/SLOT`: what a
/// replica gets but its port, and the workers' own settings.
pub fn render_docker_workers(t: &Topology, slots: &[String], templates: &Templates) -> Result<BTreeMap<String, String>, RenderError> {
    let env = templates.environment();
    let ctx = Ctx::docker_view(t, &Facts::with_default_cores(1)).value();
    let mut out = BTreeMap::new();
    for slot in slots {
        let instance = Instance::new(slot.clone(), slot.clone(), 0, 1);
        let ctx = minijinja::context! { instance => minijinja::Value::from(minijinja::value::Serde(&instance)), ..ctx.clone() };
        let f = run(&env, &ctx, "docker", file("docker/worker.env.j2", format!("env/{slot}")))?;
        out.insert(f.path, f.content);
    }
    Ok(out)
}

/// The database tier's files on one engine (a topology with a database): each member's Patroni
/// configuration (`database/db-N/patroni.yml`: its own name and address), what they share, and
/// HAProxy's in front of them (`haproxy/db-proxy.cfg`). No secret: the passwords are files apply
/// writes into the members ([`crate::plan::docker`]).
fn docker_database(t: &Topology, env: &Environment<'_>, docker: &minijinja::Value) -> Result<Vec<RenderedFile>, RenderError> {
    let Some(db) = &t.database else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for i in 1..=db.docker_members {
        let slot = crate::topology::tiers::database_slot(i);
        let host = minijinja::context! { name => slot.clone(), address => slot.clone(), ip => "0.0.0.0" };
        let ctx = minijinja::context! { host => host, ..docker.clone() };
        out.push(run(env, &ctx, "docker", file("database/patroni.yml.j2", format!("database/{slot}/patroni.yml")))?);
    }
    // The exporter listens on its container's every address, for Prometheus on the network.
    let exporter = minijinja::context! { host => minijinja::context! { address => "0.0.0.0" }, ..docker.clone() };
    out.push(run(env, &exporter, "docker", file("exporters/prometheus-postgres-exporter.j2", "database/postgres-exporter.default"))?);
    out.push(run(env, docker, "docker", file("exporters/postgres-queries.yaml.j2", "database/postgres-queries.yaml"))?);
    out.push(run(env, docker, "docker", file("database/post-bootstrap.sh.j2", "database/post-bootstrap.sh").mode(0o755))?);
    let proxy = minijinja::context! { db_proxy => true, ..docker.clone() };
    out.push(run(env, &proxy, "docker", file("haproxy/haproxy.cfg.j2", "haproxy/db-proxy.cfg"))?);
    Ok(out)
}

/// Files shipped as they are (not templates), placed under `dest` for `host`.
fn copy_verbatim(dir: &include_dir::Dir<'static>, host: &str, dest: &str, on_change: OnChange, out: &mut Vec<RenderedFile>) {
    for f in dir.files() {
        if let Some(text) = f.contents_utf8() {
            out.push(RenderedFile {
                host: host.into(),
                path: format!("{dest}/{}", f.path().display()),
                mode: 0o644,
                content: text.to_string(),
                group: "root",
                on_change,
                sensitive: false,
            });
        }
    }
    for d in dir.dirs() {
        copy_verbatim(d, host, dest, on_change, out);
    }
}

fn run(env: &Environment<'_>, ctx: &minijinja::Value, host: &str, j: TierFile) -> Result<RenderedFile, RenderError> {
    let tmpl = env.get_template(j.template).map_err(|e| match e.kind() {
        minijinja::ErrorKind::TemplateNotFound => RenderError::Missing(j.template.to_string()),
        _ => RenderError::Template { name: j.template.to_string(), source: e },
    })?;
    let content = tmpl
        .render(ctx.clone())
        .map_err(|source| RenderError::Template { name: j.template.to_string(), source })?;
    Ok(RenderedFile { host: host.to_string(), path: j.path, mode: j.mode, content, group: j.group, on_change: j.on_change, sensitive: j.secret })
}


/// Where a host of the hosts target keeps its log TLS files: the collector and every shipper
/// speak RELP over TLS, each with a certificate naming its host, issued by the fleet's log CA
/// (kept on the monitor host, under `ca/`). A host makes its own key; neither key leaves its host.
pub const LOG_TLS_DIR: &str = "/etc/scalectl/tls";

/// A host's log TLS files, as the rsyslog configurations and apply's scripts name them.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct LogTlsFiles {
    /// The fleet log CA's certificate: what the peer's certificate must be issued by.
    pub ca: String,
    /// This host's certificate (its name in subjectAltName).
    pub cert: String,
    /// This host's key (0400 root).
    pub key: String,
}

impl LogTlsFiles {
    pub fn in_dir(dir: &str) -> LogTlsFiles {
        LogTlsFiles { ca: format!("{dir}/log-ca.pem"), cert: format!("{dir}/log.pem"), key: format!("{dir}/log.key") }
    }

    /// The fleet's log CA on its host: its key (0400; it never leaves the host) and certificate.
    pub fn authority_in(dir: &str) -> (String, String) {
        (format!("{dir}/ca/log-ca.key"), format!("{dir}/ca/log-ca.pem"))
    }
}


/// The files a host gets: its tiers' (topology/tiers.rs), secrets apart. Paths are Debian's
/// standard places; each says its mode, group and what a change means (`plan::desired` reads it).
fn host_jobs(t: &Topology, h: &crate::topology::Host) -> Vec<TierFile> {
    t.tiers_on(h).into_iter().flat_map(|tier| tier.files).filter(|f| !f.secret).collect()
}

/// The files of a host that hold secrets: rendered only by `render_secrets`, with resolved values;
/// never diffed, printed or read back (observed by hash).
fn secret_jobs(t: &Topology, h: &crate::topology::Host) -> Vec<TierFile> {
    t.tiers_on(h).into_iter().flat_map(|tier| tier.files).filter(|f| f.secret).collect()
}

/// The user Prometheus asks for.
pub const PROMETHEUS_USER: &str = "scalectl";

/// The bcrypt hash of Prometheus' password, its salt derived from the password (so the same
/// password renders the same file, and a plan sees no change where there is none).
pub fn prometheus_password_hash(password: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("scalectl-prometheus-salt:{password}").as_bytes());
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    bcrypt::hash_with_salt(password, 10, salt).map(|h| h.format_for_version(bcrypt::Version::TwoB)).unwrap_or_default()
}


/// Redis' ACL users in the docker bundle, with [`REDIS_PASSWORD_SHA256_PLACEHOLDER`] where the
/// password's hash goes (templates/docker/commands.yaml.j2 says how compose's Redis fills it in).
pub const REDIS_AUTH_TEMPLATE: &str = "redis/auth.conf.in";
/// The docker target's Redis (the paths its redis.conf includes): the ACL users, with the
/// password's sha256, rewritten live on a rotation; scalectl's admin user, which changes them
/// live; and the admin's password (all three Redis' alone, in the container).
pub const DOCKER_REDIS_USERS: &str = "/run/secrets/redis-auth.conf";

/// In a tier's container, the users file its credentials are changed live to.
pub fn users_file(kind: crate::topology::tiers::Credentials) -> &'static str {
    match kind {
        crate::topology::tiers::Credentials::Redis => DOCKER_REDIS_USERS,
    }
}
pub const DOCKER_REDIS_ADMIN_CONF: &str = "/run/secrets/scalectl-admin.conf";
pub const DOCKER_REDIS_ADMIN_PASS: &str = "/run/secrets/scalectl-admin.pass";
/// What scalectl's Redis admin user may do: authenticate and change users, nothing else.
pub const REDIS_ADMIN_RULES: &str = "-@all +@connection +acl|setuser";
pub const REDIS_PASSWORD_SHA256_PLACEHOLDER: &str = "@REDIS_PASSWORD_SHA256@";

/// The docker bundle: an image for scale-api and the files its containers mount (its compose file is
/// rendered from the docker target's container specs: `plan::docker::compose_file`).
fn docker_jobs(t: &Topology) -> Vec<TierFile> {
    let mut jobs = Vec::new();
    // scale-api's image is built from this Dockerfile; a program's from its own release directory.
    if t.app.program.is_none() {
        jobs.push(file("docker/Dockerfile.j2", "Dockerfile"));
    }
    jobs.extend([
        file("nginx/site.conf.j2", format!("nginx/{}.conf", t.name)),
        file("docker/nginx-follow.sh.j2", "nginx/follow.sh").mode(0o755),
        file("haproxy/haproxy.cfg.j2", "haproxy/haproxy.cfg"),
    ]);
    if t.redis.is_some() {
        jobs.push(file("redis/redis.conf.j2", "redis/redis.conf"));
        if t.queue().is_some() {
            jobs.push(file("exporters/queue-oldest.lua.j2", "exporters/queue-oldest.lua"));
        }
    }
    jobs.extend([
        file("prometheus/prometheus.yml.j2", "prometheus/prometheus.yml"),
        file("prometheus/rules.yml.j2", "prometheus/rules.yml"),
        file("prometheus/targets.json.j2", "prometheus/targets.json"),
    ]);
    if t.observability.grafana {
        jobs.push(file("grafana/datasource.yaml.j2", "grafana/provisioning/datasources/scalectl.yaml"));
        jobs.push(file("grafana/dashboards.yaml.j2", "grafana/provisioning/dashboards/scalectl.yaml"));
    }
    // scalectl's own image (rsyslog, mtail) and mtail's program over the load balancer's log.
    jobs.push(file("docker/rsyslog.Dockerfile.j2", "rsyslog/Dockerfile"));
    jobs.push(file("nginx/scalectl.mtail.j2", "mtail/scalectl-nginx.mtail"));
    // Log shipping: a shipper container reading the engine's json-file logs, a collector container.
    if t.observability.logs.destination == crate::topology::LogDestination::Collector {
        jobs.push(file("docker/rsyslog-ship.conf.j2", "rsyslog/ship.conf"));
        jobs.push(file("logs/rsyslog-collector.conf.j2", "rsyslog/collector.conf"));
    }
    jobs
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    fn topology(extra: &str) -> Topology {
        let src = format!(
            "name: s\napp:\n  port: 3000\n  instances: 1\n  secrets: {{API_KEY: {{env: S_API_KEY}}}}\n\
hosts:\n  a: {{address: 10.0.0.2, roles: [app]}}\n  r: {{address: 10.0.0.3, roles: [redis]}}\n{extra}"
        );
        crate::topology::parse("s.yaml", &src).unwrap_or_else(|p| panic!("{p}"))
    }

    #[test]
    fn secrets_land_only_in_their_own_files() {
        let t = topology("redis: {password: {env: S_REDIS}}\n");
        let values = SecretValues { app: vec![("API_KEY".into(), "k3y value".into())], redis_password: Some("pa55".into()), ..Default::default() };
        let files = render_secrets(&t, &values, &Templates::embedded()).unwrap();
        let get = |p: &str| files.iter().find(|f| f.path == p).unwrap();
        let env = get("/etc/scale-api/secrets.env");
        assert_eq!((env.host.as_str(), env.mode), ("a", 0o600));
        assert!(env.content.contains("API_KEY=\"k3y value\"\n") && env.content.contains("REDIS_PASSWORD=\"pa55\"\n"), "{}", env.content);
        // Redis' ACL users, the password as its sha256.
        let acl = get("/etc/redis/scalectl-auth.conf").content.clone();
        let hashed = format!("#{} ", sha256_hex(b"pa55"));
        assert!(acl.contains(&format!("user default on {hashed}~* &* +@all -@dangerous +info\n")), "{acl}");
        // The exporter's user has a password of its own, and reads; its password file names it
        // for its one target, readable by the exporter's group only.
        let exporter = redis_exporter_password("pa55");
        assert_ne!(exporter, "pa55");
        assert!(acl.contains(&format!("user scalectl-exporter on #{} -@all +auth", sha256_hex(exporter.as_bytes()))), "{acl}");
        let map = get(REDIS_EXPORTER_PASSWORDS);
        assert_eq!((map.host.as_str(), map.mode, map.group), ("r", 0o640, "prometheus"));
        let map: serde_json::Value = serde_json::from_str(&map.content).unwrap();
        assert_eq!(map, serde_json::json!({"redis://127.0.0.1:6379": exporter}));
        assert!(!files.iter().any(|f| f.host == "r" && f.content.contains("pa55")), "the apps' password on the Redis host in clear");
        // Nothing the ordinary render writes holds a value.
        let rendered = render(&t, &Facts::with_default_cores(1), &Templates::embedded()).unwrap();
        assert!(rendered.iter().all(|f| !f.content.contains("pa55") && !f.content.contains("k3y")));
        assert!(!format!("{values:?}").contains("pa55"));
    }

    #[test]
    fn the_database_passwords_reach_the_app_as_whole_quoted_urls_and_patroni_as_environment() {
        let src = "name: s\napp: {port: 3000, instances: 1}\nhosts:\n  a: {address: 10.0.0.2, roles: [app]}\n  r: {address: 10.0.0.3, roles: [redis]}\n  d: {address: 10.0.0.4, roles: [database, etcd]}\n\
redis: {password: {env: S_REDIS}}\ndatabase: {name: shop, user: web, password: {env: P}, replication_password: {env: R}, rest_password: {env: S}}\n";
        let t = crate::topology::parse("s.yaml", src).unwrap_or_else(|p| panic!("{p}"));
        let values = SecretValues {
            redis_password: Some("pa55".into()),
            database: Some(DatabaseSecrets { password: "app-pw_1".into(), replication_password: "repl-pw".into(), rest_password: "rest-pw".into() }),
            ..Default::default()
        };
        let files = render_secrets(&t, &values, &Templates::embedded()).unwrap();
        let env = &files.iter().find(|f| f.path == "/etc/scale-api/secrets.env").unwrap().content;
        // systemd reads a value as it is unless the whole of it is quoted: a quote inside a URL
        // would be part of the password.
        for line in ["DATABASE_URL=\"postgresql://web:app-pw_1@127.0.0.1:5433/shop\"", "DB_WRITER_URL=\"postgresql://web:app-pw_1@127.0.0.1:5433/shop\"", "DB_READER_URL=\"postgresql://web:app-pw_1@127.0.0.1:5434/shop\"", "PGPASSWORD=\"app-pw_1\"", "PGPORT=5433"] {
            assert!(env.lines().any(|l| l == line), "{line} missing from:\n{env}");
        }
        let patroni = files.iter().find(|f| f.host == "d" && f.path == crate::topology::tiers::PATRONI_SECRETS).unwrap();
        assert_eq!(patroni.mode, 0o600);
        assert!(patroni.content.contains("PATRONI_REPLICATION_PASSWORD=\"repl-pw\"\n") && patroni.content.contains("PATRONI_RESTAPI_PASSWORD=\"rest-pw\"\n"), "{}", patroni.content);
        // The app's password is not in Patroni's environment (every PostgreSQL process would
        // inherit it), but in a file of its own for the bootstrap script.
        assert!(!patroni.content.contains("app-pw_1"), "{}", patroni.content);
        let app = files.iter().find(|f| f.host == "d" && f.path == crate::topology::tiers::DATABASE_APP_PASSWORD).unwrap();
        assert_eq!((app.content.as_str(), app.mode, app.group), ("app-pw_1", 0o440, "postgres"));
        // None of them in what `render` writes.
        let rendered = render(&t, &Facts::with_default_cores(1), &Templates::embedded()).unwrap();
        assert!(rendered.iter().all(|f| ["app-pw_1", "repl-pw", "rest-pw"].iter().all(|p| !f.content.contains(p))));
        assert!(!format!("{values:?}").contains("pw"));
    }

    #[test]
    fn a_value_that_could_break_out_of_its_quotes_is_refused() {
        let t = topology("redis: {password: {env: S_REDIS}}\n");
        for bad in ["a\"b", "a\nb", "$(x)", "a\\b", ""] {
            let values = SecretValues { app: vec![("API_KEY".into(), bad.into())], redis_password: None, ..Default::default() };
            let err = render_secrets(&t, &values, &Templates::embedded()).unwrap_err().to_string();
            assert!(err.contains("cannot be written safely") && (bad.is_empty() || !err.contains(bad)), "{bad:?}: {err}");
        }
    }
}

#[cfg(test)]
mod upstream_tests {
    use super::*;

    /// An app host named by a name is labelled, for Prometheus and in its measuring script, with the
    /// IP the load balancer resolved it to (what nginx logs); its scrape target keeps the name.
    #[test]
    fn resolved_app_hosts_are_labelled_with_the_address_the_load_balancer_logs() {
        let src = "name: u\napp: {port: 3000, instances: 1}\nredis: {password: {env: P}}\n\
hosts:\n  lb: {address: 10.0.0.1, roles: [lb, redis, monitor]}\n  app-1: {address: app-1.internal, roles: [app]}\n  app-2: {address: 10.0.0.3, roles: [app]}\n";
        let t = crate::topology::parse("u.yaml", src).unwrap_or_else(|p| panic!("{p}"));
        let mut facts = Facts::with_default_cores(1);
        facts.resolved.insert("app-1.internal".into(), "10.0.0.2".parse().unwrap());
        let files = render(&t, &facts, &Templates::embedded()).unwrap();
        let get = |host: &str, path: &str| files.iter().find(|f| f.host == host && f.path == path).unwrap().content.clone();
        let targets: serde_json::Value = serde_json::from_str(&get("lb", "/etc/prometheus/scalectl/targets.json")).unwrap();
        let app: Vec<(String, String)> = targets
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["labels"]["scalectl_job"] == "app")
            .map(|g| (g["targets"][0].as_str().unwrap().to_string(), g["labels"]["upstream"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(app, [("app-1.internal:3000".to_string(), "10.0.0.2:3000".to_string()), ("10.0.0.3:3000".into(), "10.0.0.3:3000".into())]);
        assert!(get("app-1", INSTANCES_SCRIPT).contains(r#"'instance_name="app-1-3000",upstream="10.0.0.2:3000"'"#));
        assert!(get("app-2", INSTANCES_SCRIPT).contains(r#"'instance_name="app-2-3000",upstream="10.0.0.3:3000"'"#));
        // Without the fact (`scalectl render`), the name.
        let files = render(&t, &Facts::with_default_cores(1), &Templates::embedded()).unwrap();
        let script = &files.iter().find(|f| f.host == "app-1" && f.path == INSTANCES_SCRIPT).unwrap().content;
        assert!(script.contains(r#"upstream="app-1.internal:3000""#), "{script}");
    }
}
