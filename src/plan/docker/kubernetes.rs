//! The Kubernetes manifests of `scalectl render` (out/kubernetes/): the docker target's container
//! specs once more, as a cluster runs them, so that a pod runs what a replica runs (image, argv,
//! environment, secrets as files, limits, drain time). What only a cluster has is added here: the
//! probes on the topology's paths, a `preStop` pause, the HorizontalPodAutoscaler at the scale-out
//! threshold, a PodDisruptionBudget, the Ingress and Redis' StatefulSet.

use serde::Serialize;

use super::desired::{self, Commands, commands, rendered};
use super::*;
use crate::render::{self, RenderError, Templates};
use crate::topology::{Instances, Role};

/// The Kubernetes version whose OpenAPI schemas the manifests are validated against (strict:
/// no field the schema does not know), in the tests and the README.
pub const KUBERNETES_VERSION: &str = "1.35";

/// The Secret every pod reads its secret files from (made by the user: its values are never
/// rendered), named after the topology.
pub fn secret_name(t: &Topology) -> String {
    format!("{}-secrets", t.name)
}

/// The app's and workers' database URLs, keys of the topology's Secret (the writer twice: the
/// name most libraries read, and the writer's own).
pub const DATABASE_URLS: [&str; 3] = ["DATABASE_URL", "DB_WRITER_URL", "DB_READER_URL"];

/// The CloudNativePG cluster of a topology's database: its Services are `NAME-db-rw` (the
/// primary) and `NAME-db-ro` (the replicas).
pub fn database_cluster(t: &Topology) -> String {
    format!("{}-db", t.name)
}

/// PostgreSQL's image for CloudNativePG: the major version the hosts target runs (Debian 12's).
pub const POSTGRES_IMAGE: &str = "ghcr.io/cloudnative-pg/postgresql:15";

/// Each database member's volume. The topology has no size for it: the README says to change it
/// here, in the rendered Cluster, or with a kustomize patch.
pub const DATABASE_VOLUME: &str = "10Gi";

/// Seconds a pod waits in `preStop` before it gets SIGTERM: the endpoints controller and every
/// node's proxy (and the ingress controller) stop sending it requests meanwhile, so that none
/// reaches a process that has begun to drain (kubernetes#43576).
pub const PRE_STOP_S: u64 = 5;

/// The user and group every pod runs as: numeric (the kubelet cannot check a user name against
/// `runAsNonRoot`), above the range images give their own users.
pub const POD_UID: u64 = 10001;

/// One container of a pod, from a container spec.
#[derive(Serialize)]
struct Container {
    image: String,
    /// Replaces the image's entrypoint (the secrets' wrapper), empty: the image's.
    command: Vec<String>,
    args: Vec<String>,
    /// Plain values; INSTANCE is the pod's name (the downward API) rather than a slot's.
    env: Vec<(String, String)>,
    /// Keys of the topology's Secret, each a file in [`SECRETS_DIR`].
    secrets: Vec<String>,
    /// A quantity (`512Mi`): the request and the limit.
    memory: Option<String>,
    /// Thousandths of a core: the limit, and the request the autoscaler's utilisation is a share of.
    cpu_millis: u64,
    cpu_limited: bool,
    grace_s: i64,
    /// The image is named `latest` or by no tag: its tag is set when the release is built.
    floating_tag: bool,
}

impl Container {
    fn of(t: &Topology, spec: &ContainerSpec, run: &Commands, argv: Vec<String>) -> Container {
        // The kubelet reads `$(NAME)` in a value as another variable and `$$` as `$`: each `$` of a
        // value is written `$$`, so the pod gets it as the replica does.
        // The docker replica's database settings name its HAProxy container; a pod's are the
        // cluster's Services' (below).
        let docker_only = |k: &str| ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE"].contains(&k) || super::desired::DATABASE_SECRETS.contains(&k);
        let env = spec
            .env
            .iter()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| *k != "INSTANCE" && !docker_only(k))
            .map(|(k, v)| (k.to_string(), v.replace('$', "$$")))
            .collect();
        let mut secrets: Vec<String> = spec.secret_env.iter().map(|e| e.name.clone()).filter(|n| !docker_only(n)).collect();
        if t.database.is_some() {
            // The database's URLs, as the hosts target writes them into the app's secrets file:
            // on a cluster they name CloudNativePG's `-rw` and `-ro` Services.
            secrets.extend(DATABASE_URLS.iter().map(|n| n.to_string()));
        }
        // As compose runs it: the secrets' wrapper exports the files, then scale-api's binary or
        // the program's argv (where the kubelet expands `$(PORT)` and `$(INSTANCE)`); without
        // secrets, the image's entrypoint with scale-api's arguments, or the program's argv.
        let argv = kubelet_args(argv);
        let (command, args) = match &t.app.program {
            None if !secrets.is_empty() => (secrets_entrypoint(), run.compose_app_command.iter().chain(&argv).cloned().collect()),
            _ if !secrets.is_empty() => (secrets_entrypoint(), argv),
            _ => (Vec::new(), argv),
        };
        Container {
            image: spec.image.clone(),
            command,
            args,
            env,
            secrets,
            memory: spec.memory_bytes.map(quantity),
            cpu_millis: spec.nano_cpus.map_or(1000, |n| (n / 1_000_000).max(1) as u64),
            cpu_limited: spec.nano_cpus.is_some(),
            // The web kind's pods pause before SIGTERM (preStop); a worker's drain starts at once.
            grace_s: spec.stop_timeout_s + if spec.role == "app" { PRE_STOP_S as i64 } else { 0 },
            floating_tag: match spec.image.rsplit_once(':') {
                Some((_, tag)) if !tag.contains('/') => tag == "latest",
                _ => !spec.image.contains('@'),
            },
        }
    }
}

/// A program's argv for the kubelet, which expands `$(PORT)` and `$(INSTANCE)` from the pod's
/// environment and reads `$$(` as a literal `$(`, as the topology's syntax does; it also reads
/// any other `$$` as `$`, which the topology keeps as it is: that one is doubled.
fn kubelet_args(argv: Vec<String>) -> Vec<String> {
    argv.into_iter()
        .map(|a| {
            let mut out = String::with_capacity(a.len());
            let mut rest = a.as_str();
            while let Some(at) = rest.find("$$") {
                out.push_str(&rest[..at]);
                rest = &rest[at + 2..];
                out.push_str(if rest.starts_with('(') { "$$" } else { "$$$$" });
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// The longest scale-down stabilisation window the API server admits (an hour).
pub const MAX_STABILIZATION_S: u64 = 3600;

/// The HorizontalPodAutoscaler's bounds and threshold.
#[derive(Serialize)]
struct Autoscaler {
    min: u32,
    max: u32,
    cpu_percent: u32,
    scale_down_window_s: u64,
}

/// How many processes of `role` (the app's instances, or its workers) the topology runs: one
/// pod each. On docker, its replicas or workers; on hosts, what each host runs by the topology's
/// own count (a host's `instances:` included; `max` with its declared cores, else `cores`).
fn processes(t: &Topology, cores: u32, role: Role) -> u32 {
    let facts = render::Facts::with_default_cores(cores);
    match t.target {
        crate::topology::Target::Docker if role == Role::Worker => worker_slots(t, cores).len() as u32,
        crate::topology::Target::Docker => replica_slots(t, cores).len() as u32,
        _ => t
            .hosts
            .iter()
            .filter(|h| h.has(role))
            .map(|h| match role {
                Role::Worker => t.workers_on(h, facts.cores_of(h)).len() as u32,
                _ => t.instances_on(h, facts.cores_of(h)),
            })
            .sum::<u32>()
            .max(1),
    }
}

fn autoscaler(t: &Topology, replicas: u32, cores: u32) -> Autoscaler {
    match &t.autoscaling {
        // The group's bounds are hosts: each runs the app's instances per host.
        Some(a) => {
            let per_host = match t.app.instances {
                Instances::Count(n) => (n as u32).clamp(1, 256),
                Instances::Max => cores.max(1),
            };
            Autoscaler {
                min: (a.min * per_host).max(1),
                max: (a.max * per_host).max(1),
                cpu_percent: a.cpu_scale_out.round() as u32,
                scale_down_window_s: (a.cooldown_scale_in_ms / 1000).min(MAX_STABILIZATION_S),
            }
        }
        // No autoscaling section: the topology's count is the floor, twice it the ceiling.
        None => Autoscaler {
            min: replicas,
            max: replicas * 2,
            cpu_percent: crate::topology::DEFAULT_CPU_SCALE_OUT as u32,
            scale_down_window_s: crate::topology::DEFAULT_COOLDOWN_SCALE_IN_MS / 1000,
        },
    }
}

/// The manifests, as files of the render tree's `kubernetes/` (a kustomization lists them).
pub fn kubernetes_files(t: &Topology, cores: u32, templates: &Templates) -> Result<Vec<render::RenderedFile>, RenderError> {
    let d = bundle_specs(t, cores, templates)?;
    // The docker bundle's files, once: what its containers run, and the alert rules.
    let base = rendered(t, &[], templates)?;
    let run = commands(&base)?;
    let spec = d.app.first().ok_or_else(|| RenderError::Invalid { name: "kubernetes".into(), message: "the app has no replica".into() })?;
    let argv = match &t.app.program {
        Some(p) => p.command.clone(),
        None => Vec::new(),
    };
    let app = Container::of(t, spec, &run, argv);
    let replicas = processes(t, cores, Role::App);
    let workers = match (&t.app.workers, d.workers.first()) {
        (Some(w), Some(spec)) => {
            let mut argv = w.command.clone();
            if t.app.program.is_none() {
                // `[scale-api, worker]`: scale-api's binary comes from the wrapper's command.
                argv.remove(0);
            }
            Some(serde_json::json!({ "container": Container::of(t, spec, &run, argv), "replicas": processes(t, cores, Role::Worker) }))
        }
        _ => None,
    };
    let redis_auth = match t.redis_password() {
        Some(_) => Some(render::bundle_redis_auth(t, templates)?.content),
        None => None,
    };
    let redis = d.services.iter().find(|s| s.role == "redis").map(|spec| {
        let conf = spec.files.iter().find(|f| f.path.ends_with("redis.conf")).map(|f| f.content.clone()).unwrap_or_default();
        serde_json::json!({
            "image": spec.image,
            "memory": t.redis.as_ref().map(|r| quantity(r.maxmemory)),
            "memory_limit": t.redis.as_ref().map(|r| quantity(r.maxmemory * 2)),
            "command": spec.cmd,
            "conf": conf,
            "auth": t.redis_password().is_some(),
            // Twice its memory: an RDB snapshot is written beside the one it replaces.
            "volume_mib": (t.redis.as_ref().map_or(0, |r| r.maxmemory) * 2).div_ceil(1 << 20).max(1024),
            "grace_s": spec.stop_timeout_s,
            // A changed redis.conf or users template restarts the pod (a subPath mount is never
            // updated in place).
            "checksum": sha256_hex(format!("{conf}\0{}", redis_auth.as_deref().unwrap_or_default()).as_bytes()),
        })
    });
    // The database hosts, or on docker its containers.
    let members = match t.target {
        crate::topology::Target::Hosts => t.hosts.iter().filter(|h| h.has(Role::Database)).count().max(1),
        crate::topology::Target::Docker => t.database.as_ref().map_or(1, |d| d.docker_members as usize),
    };
    let database = t.database.as_ref().map(|db| {
        serde_json::json!({
            "cluster": database_cluster(t),
            "instances": members,
            // With replicas, reads go to them (`-ro`); one member alone takes them (`-r`: any
            // instance), as the hosts' reader falls back to the primary.
            "reader": if members > 1 { "ro" } else { "r" },
            "image": POSTGRES_IMAGE,
            "volume": DATABASE_VOLUME,
            "name": db.name,
            "user": db.user,
            "max_connections": db.max_connections.to_string(),
        })
    });
    // The release command: the app's process, its argv the command (behind the same wrapper).
    let release = t.app.release_command.as_ref().map(|argv| {
        let argv = match &t.app.program {
            Some(_) => argv.clone(),
            // `[scale-api, migrate]`: scale-api's binary comes from the wrapper's command.
            None => argv.iter().skip(1).cloned().collect(),
        };
        Container::of(t, spec, &run, argv)
    });
    // The alert rules as the docker bundle's Prometheus loads them (promtool-tested there).
    let rules = desired::get(&base, "prometheus/rules.yml");
    let rules = rules.find("\ngroups:").map(|at| &rules[at + 1..]).ok_or_else(|| RenderError::Invalid { name: "prometheus/rules.yml.j2".into(), message: "no groups".into() })?;
    let metrics_path = match &t.app.program {
        Some(p) => p.metrics.clone(),
        None => Some("/metrics".to_string()),
    };
    let lb = &t.load_balancer;
    let ctx = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "t": t,
        "name": t.name,
        "app_name": t.app.name(),
        "secret": secret_name(t),
        "secrets_dir": SECRETS_DIR,
        "uid": POD_UID,
        "pre_stop_s": PRE_STOP_S,
        "app": app,
        "replicas": replicas,
        "autoscaler": autoscaler(t, replicas, cores),
        "workers": workers,
        "redis": redis,
        "redis_auth": redis_auth,
        "redis_acl_script": run.kubernetes_redis_acl,
        "database": database,
        "release": release,
        "rules": rules,
        "metrics_path": metrics_path,
        "hosts": lb.server_names.iter().filter(|n| *n != "_" && !n.contains('*')).collect::<Vec<_>>(),
    });
    let mut files = vec![("namespace.yaml", "kubernetes/namespace.yaml.j2"), ("app.yaml", "kubernetes/app.yaml.j2"), ("ingress.yaml", "kubernetes/ingress.yaml.j2")];
    if workers.is_some() {
        files.push(("workers.yaml", "kubernetes/workers.yaml.j2"));
    }
    if redis.is_some() {
        files.push(("redis.yaml", "kubernetes/redis.yaml.j2"));
    }
    if t.database.is_some() {
        files.push(("database.yaml", "kubernetes/database.yaml.j2"));
    }
    let mut out = Vec::new();
    // The kustomization applies these; the release Job has its own (`release/`: it runs before a
    // rollout, README), and so do the operator's resources, for where the Prometheus operator runs
    // (`monitoring/`).
    let kustomize = |dir: &str, files: &[(&str, &str)], out: &mut Vec<render::RenderedFile>| -> Result<(), RenderError> {
        for (path, template) in files {
            out.push(manifest(&format!("{dir}{path}"), render::render_one(templates, template, &ctx)?));
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        let k = render::render_one(templates, "kubernetes/kustomization.yaml.j2", serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "name": t.name, "resources": names, "dir": dir }))?;
        out.push(manifest(&format!("{dir}kustomization.yaml"), k));
        Ok(())
    };
    kustomize("", &files, &mut out)?;
    let mut monitoring = vec![("rules.yaml", "kubernetes/rules.yaml.j2")];
    if metrics_path.is_some() {
        monitoring.insert(0, ("servicemonitor.yaml", "kubernetes/servicemonitor.yaml.j2"));
    }
    kustomize("monitoring/", &monitoring, &mut out)?;
    if release.is_some() {
        kustomize("release/", &[("job.yaml", "kubernetes/release.yaml.j2")], &mut out)?;
    }
    Ok(out)
}

/// Bytes as a Kubernetes quantity: whole MiB or GiB where they are, else bytes.
fn quantity(bytes: u64) -> String {
    match bytes {
        b if b > 0 && b % (1 << 30) == 0 => format!("{}Gi", b >> 30),
        b if b > 0 && b % (1 << 20) == 0 => format!("{}Mi", b >> 20),
        b => b.to_string(),
    }
}

fn manifest(path: &str, content: String) -> render::RenderedFile {
    render::RenderedFile { host: "kubernetes".into(), path: path.into(), mode: 0o644, content, group: "root", on_change: render::OnChange::Nothing, sensitive: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_reads_a_programs_argv_as_the_topology_means_it() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // `$(PORT)` is the kubelet's to expand; `$$(` is a literal `$(` for both.
        assert_eq!(kubelet_args(argv(&["node", "--port=$(PORT)", "$$(not)"])), argv(&["node", "--port=$(PORT)", "$$(not)"]));
        // Any other `$$` is two dollars in the topology, one for the kubelet: doubled.
        assert_eq!(kubelet_args(argv(&["echo", "a$$b", "$$", "$x"])), argv(&["echo", "a$$$$b", "$$$$", "$x"]));
    }

    #[test]
    fn a_pod_per_instance_the_hosts_run_a_hosts_own_count_included() {
        let t = crate::topology::parse(
            "k.yaml",
            "name: k\napp:\n  port: 3000\n  instances: 2\nhosts:\n  a: {address: 10.0.0.2, roles: [app]}\n  \
             b: {address: 10.0.0.3, roles: [app], instances: 3}\n  c: {address: 10.0.0.4, roles: [app], instances: max, cores: 4}\n  \
             l: {address: 10.0.0.5, roles: [lb, redis]}\nredis: {password: {env: K_REDIS}}\n",
        )
        .unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(processes(&t, 8, Role::App), 2 + 3 + 4);
    }

    #[test]
    fn bytes_become_the_largest_exact_quantity() {
        assert_eq!(quantity(512 << 20), "512Mi");
        assert_eq!(quantity(2 << 30), "2Gi");
        assert_eq!(quantity(1000), "1000");
    }
}
