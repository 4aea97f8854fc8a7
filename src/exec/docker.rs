//! The docker target's executor, through the Docker Engine API (bollard): observe what carries the
//! topology's labels, build the scale-api image from the release binary, and carry out a
//! `plan::docker::DockerPlan` step by step.
//!
//! Decisions are the plan's; this module only undoes, in reverse, the `activate` steps it already
//! took when a later one fails (a created container is removed, a stopped one started again, a
//! live file written back), so a release that never turns healthy leaves the old replicas serving.
//! bollard has no wait-for-healthy: health is polled from `inspect_container`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkCreateRequest, NetworkingConfig,
    PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::plan::docker::{
    ContainerSpec, DockerObserved, DockerPlan, Engine, LABEL_HASH, LABEL_IMAGE_ROLE, LABEL_IMAGE_TOPOLOGY, LABEL_LIVE, LABEL_PREVIOUS, LABEL_ROLE, LABEL_SLOT, LABEL_TOPOLOGY,
    FileOwner, ObservedContainer, ObservedImage, ROLE_LOGS, SECRETS_DIR, SecretDelivery, Step, redis_address, redis_exporter_password_file, secrets_entrypoint,
};
use crate::topology::Topology;
use crate::topology::tiers::BALANCER_SOCKET;

/// Progress lines for people; silent for pipelines.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// The engine of `docker.endpoint` (unix:// or tcp://), at an API version both sides speak.
pub async fn connect(t: &Topology) -> anyhow::Result<Docker> {
    let endpoint = &t.docker.endpoint;
    let d = Docker::connect_with_host(endpoint).with_context(|| format!("cannot use the Docker endpoint {endpoint}"))?;
    d.negotiate_version().await.with_context(|| format!("cannot reach the Docker engine at {endpoint} (is dockerd running? `docker info` tells)"))
}

/// What the engine says of itself that the containers depend on (`docker info`).
pub async fn facts(docker: &Docker) -> anyhow::Result<Engine> {
    let info = docker.info().await.context("cannot read the engine's info")?;
    Ok(Engine {
        cores: info.ncpu.unwrap_or(1).max(1) as u32,
        data_root: info.docker_root_dir.filter(|d| d.starts_with('/')).unwrap_or_else(|| "/var/lib/docker".into()),
        digest_key: info.id.unwrap_or_default(),
    })
}

/// The ID of the image `reference` names on the engine, pulled first when the engine lacks it
/// (`app.program.image`: the image behind the name is the release).
pub async fn resolve_image(docker: &Docker, reference: &str, progress: Progress<'_>) -> anyhow::Result<String> {
    if let Ok(image) = docker.inspect_image(reference).await {
        return image.id.with_context(|| format!("the engine gives no ID for image {reference}"));
    }
    progress(&format!("pulling {reference} (app.program.image): the engine does not have it"));
    let mut pull = docker.create_image(Some(CreateImageOptionsBuilder::default().from_image(reference).build()), None, None);
    while let Some(r) = pull.next().await {
        r.with_context(|| {
            format!("app.program.image `{reference}` is not on the engine and could not be pulled (build or load it there, or log the engine in to its registry)")
        })?;
    }
    let image = docker.inspect_image(reference).await.with_context(|| format!("app.program.image `{reference}` is not on the engine after its pull"))?;
    image.id.with_context(|| format!("the engine gives no ID for image {reference}"))
}

fn label_filter(label: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{label}={value}")])])
}

/// The ownership label of the networks and volumes scalectl creates (containers: their spec's).
fn owner_label(t: &Topology) -> HashMap<String, String> {
    HashMap::from([(LABEL_TOPOLOGY.to_string(), t.name.clone())])
}

/// A time as the engine writes it (RFC 3339 in UTC with nanoseconds: `2026-12-05T08:00:01.123456789Z`).
fn engine_time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z').split('.').next()?).ok()
}

/// A running replica as the engine knows it: see [`replica_facts`].
pub struct ReplicaFacts {
    pub upstream: String,
    pub crash_restarts: u32,
}

/// Each running replica as doctor needs it from the engine, by its instance name (`SLOT-PORT`):
/// its address as the load balancer logs it (`IP:port` on the topology's network, which nginx
/// resolved the replica's name to), and the restarts the engine made after it failed (its restart
/// policy's `RestartCount`) when its latest start is within `window`. A deploy or reload replaces
/// or restarts a replica without counting there: a planned restart is never a crash.
pub async fn replica_facts(docker: &Docker, t: &Topology, window: std::time::Duration) -> anyhow::Result<BTreeMap<String, ReplicaFacts>> {
    let mut filters = label_filter(LABEL_TOPOLOGY, &t.name);
    filters.get_mut("label").into_iter().for_each(|l| l.push(format!("{LABEL_ROLE}=app")));
    let list = docker.list_containers(Some(ListContainersOptionsBuilder::default().filters(&filters).build())).await.context("cannot list containers")?;
    let since = std::time::SystemTime::now() - window;
    let mut facts = BTreeMap::new();
    for c in list {
        let slot = c.labels.as_ref().and_then(|l| l.get(LABEL_SLOT)).cloned().unwrap_or_default();
        let ip = c.network_settings.as_ref().and_then(|n| n.networks.as_ref()).and_then(|n| n.get(&t.docker.network)).and_then(|e| e.ip_address.clone());
        let (Some(ip), Some(id)) = (ip.filter(|ip| !ip.is_empty() && !slot.is_empty()), c.id) else { continue };
        let inspect = docker.inspect_container(&id, None).await.with_context(|| format!("cannot inspect replica {slot}"))?;
        let started = inspect.state.as_ref().and_then(|s| s.started_at.as_deref()).and_then(engine_time);
        let recent = started.is_some_and(|s| s >= since);
        let restarts = if recent { inspect.restart_count.unwrap_or(0).max(0) as u32 } else { 0 };
        facts.insert(format!("{slot}-{}", t.app.port), ReplicaFacts { upstream: format!("{ip}:{}", t.app.port), crash_restarts: restarts });
    }
    Ok(facts)
}

/// In a tier's container, where `Step::Credentials { add }` records users not yet settled: the
/// script runs as the service's user (the users files are its alone), which may write here. A
/// new container starts with the users file, so the marker need not outlive its container.
fn credentials_marker(kind: crate::plan::Credentials) -> String {
    format!("/tmp/scalectl-{}", kind.pending())
}

/// Everything on the engine that scalectl created for the topology (its ownership label), the
/// live files of what runs (as each container's label lists them), and the images built for it.
pub async fn observe(docker: &Docker, t: &Topology) -> anyhow::Result<DockerObserved> {
    let mut o = DockerObserved::default();
    let filters = label_filter(LABEL_TOPOLOGY, &t.name);
    let list = docker
        .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
        .await
        .context("cannot list containers")?;
    for c in list {
        let Some(name) = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string()) else { continue };
        let label = |k: &str| c.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default();
        let inspect = docker.inspect_container(&name, None).await.with_context(|| format!("cannot inspect {name}"))?;
        let state = inspect.state.as_ref();
        let running = state.and_then(|s| s.running).unwrap_or(false);
        for path in label(LABEL_LIVE).split(',').filter(|p| running && !p.is_empty()) {
            if let Some(text) = download(docker, &name, path).await? {
                o.live_files.insert(format!("{name}:{path}"), text);
            }
        }
        for kind in crate::plan::Credentials::ALL.into_iter().filter(|k| running && label(LABEL_SLOT) == k.container()) {
            if download(docker, &name, &credentials_marker(kind)).await?.is_some() {
                o.credentials_pending.push(kind);
            }
        }
        o.containers.push(ObservedContainer {
            name: name.clone(),
            role: label(LABEL_ROLE),
            slot: label(LABEL_SLOT),
            hash: label(LABEL_HASH),
            state: state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default(),
            health: state.and_then(|s| s.health.as_ref()).and_then(|h| h.status).map(|s| s.to_string()),
            image: c.image.clone().unwrap_or_default(),
            previous: label(LABEL_PREVIOUS),
            exit_code: state.filter(|s| s.running != Some(true)).and_then(|s| s.exit_code),
        });
    }
    o.containers.sort_by(|a, b| a.name.cmp(&b.name));
    let nets = docker.list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build())).await?;
    o.network = nets.iter().any(|n| n.name.as_deref() == Some(t.docker.network.as_str()));
    let vols = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await?;
    o.volumes = vols.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
    o.volumes.sort();
    let image_filter = label_filter(LABEL_IMAGE_TOPOLOGY, &t.name);
    let images = docker.list_images(Some(ListImagesOptionsBuilder::default().filters(&image_filter).build())).await.context("cannot list images")?;
    o.images = images
        .into_iter()
        .flat_map(|i| {
            let role = i.labels.get(LABEL_IMAGE_ROLE).filter(|r| r.as_str() == ROLE_LOGS).cloned().unwrap_or_default();
            i.repo_tags.into_iter().filter(|t| t != "<none>:<none>").map(move |tag| ObservedImage { tag, created: i.created, role: role.clone() })
        })
        .collect();
    o.images.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(o)
}

/// The most scalectl reads of a file in a container (its live files, an image's /etc/passwd): an
/// image that makes one endless is refused rather than read into memory.
const MAX_DOWNLOAD: usize = 16 << 20;

/// The archive of `path` in a container, or None when it does not exist.
async fn download_tar(docker: &Docker, container: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut stream = docker.download_from_container(container, Some(DownloadFromContainerOptionsBuilder::default().path(path).build()));
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                anyhow::ensure!(bytes.len() + c.len() <= MAX_DOWNLOAD, "{path} in {container} is larger than {} MiB: not read", MAX_DOWNLOAD >> 20);
                bytes.extend_from_slice(&c)
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {path} from {container}")),
        }
    }
    Ok(Some(bytes))
}

/// The names of the entries under `path` in a container (none when it does not exist).
pub(crate) async fn names_in(docker: &Docker, container: &str, path: &str) -> anyhow::Result<Vec<String>> {
    let Some(bytes) = download_tar(docker, container, path).await? else { return Ok(Vec::new()) };
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries()? {
        names.push(entry?.path()?.to_string_lossy().into_owned());
    }
    Ok(names)
}

/// A file of a container, or None when it does not exist.
async fn download(docker: &Docker, container: &str, path: &str) -> anyhow::Result<Option<String>> {
    let Some(bytes) = download_tar(docker, container, path).await? else { return Ok(None) };
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).with_context(|| format!("{path} in {container} is not text"))?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// A tar of files at absolute paths (with their directories), for the archive endpoint at `/`.
pub(crate) fn tar_of(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let owned: Vec<OwnedFile<'_>> = files.iter().map(|(p, c, m)| (*p, *c, *m, (0, 0))).collect();
    tar_of_owned(&owned)
}

/// A file to write into a container: path, content, mode, (uid, gid).
type OwnedFile<'a> = (&'a str, &'a [u8], u32, (u64, u64));

/// [`tar_of`] with each file's owner (uid, gid).
fn tar_of_owned(files: &[OwnedFile<'_>]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, content, mode, (uid, gid)) in files {
        let rel = path.trim_start_matches('/');
        let mut acc = String::new();
        for part in rel.split('/').collect::<Vec<_>>().split_last().map(|(_, d)| d.to_vec()).unwrap_or_default() {
            acc = if acc.is_empty() { part.to_string() } else { format!("{acc}/{part}") };
            if dirs.insert(acc.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{acc}/"), std::io::empty())?;
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_size(content.len() as u64);
        b.append_data(&mut h, rel, *content)?;
    }
    Ok(b.into_inner()?)
}

pub(crate) async fn upload(docker: &Docker, container: &str, files: &[(&str, &[u8], u32)]) -> anyhow::Result<()> {
    let owned: Vec<OwnedFile<'_>> = files.iter().map(|(p, c, m)| (*p, *c, *m, (0, 0))).collect();
    upload_owned(docker, container, &owned).await
}

async fn upload_owned(docker: &Docker, container: &str, files: &[OwnedFile<'_>]) -> anyhow::Result<()> {
    let tar = tar_of_owned(files)?;
    docker
        .upload_to_container(container, Some(UploadToContainerOptionsBuilder::default().path("/").build()), bollard::body_full(tar.into()))
        .await
        .with_context(|| format!("cannot write files into {container}"))
}

/// Run a command in a container as root; its exit code and merged output.
async fn exec(docker: &Docker, container: &str, argv: &[String]) -> anyhow::Result<(i64, String)> {
    exec_as(docker, container, "root", argv).await
}

/// Run a command in a container as `user` (root there has no capability when the image runs as
/// another user, so a file only that user may read is read as that user).
async fn exec_as(docker: &Docker, container: &str, user: &str, argv: &[String]) -> anyhow::Result<(i64, String)> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions { cmd: Some(argv.to_vec()), user: Some(user.to_string()), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() },
        )
        .await
        .with_context(|| format!("cannot run `{}` in {container}", argv.join(" ")))?;
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
        while let Some(chunk) = output.next().await {
            out.push_str(&chunk?.to_string());
        }
    }
    let code = docker.inspect_exec(&created.id).await?.exit_code.unwrap_or(0);
    Ok((code, out))
}

/// Build an image from a tar context of the rendered Dockerfile and `context` (the release binary
/// for scale-api's; nothing for the log image), labelled with the topology and `role`.
pub(crate) async fn build_image(docker: &Docker, tag: &str, dockerfile: &str, context: &[(&str, &[u8], u32)], role: &str, t: &Topology, progress: Progress<'_>) -> anyhow::Result<()> {
    let mut files = vec![("/Dockerfile", dockerfile.as_bytes(), 0o644)];
    files.extend_from_slice(context);
    build_context(docker, tag, tar_of(&files)?, role, t, progress).await
}

/// Build `tag` from a tar build context that holds its Dockerfile, labelled as the topology's.
async fn build_context(docker: &Docker, tag: &str, tar: Vec<u8>, role: &str, t: &Topology, progress: Progress<'_>) -> anyhow::Result<()> {
    let labels = HashMap::from([(LABEL_IMAGE_TOPOLOGY.to_string(), t.name.clone()), (LABEL_IMAGE_ROLE.to_string(), role.to_string())]);
    let opts = BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(tag).rm(true).forcerm(true).labels(&labels).build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    while let Some(r) = stream.next().await {
        let info = r.with_context(|| format!("building {tag} failed"))?;
        if let Some(e) = info.error_detail.and_then(|e| e.message) {
            bail!("building {tag} failed: {e}");
        }
        if let Some(line) = info.stream.as_deref().map(str::trim).filter(|l| l.starts_with("Step ")) {
            progress(&format!("build {tag}: {line}"));
        }
    }
    Ok(())
}

fn ms_to_ns(ms: u64) -> i64 {
    (ms as i64).saturating_mul(1_000_000)
}

/// (uid, gid) of `user` (a name or number, `user[:group]` as an image's USER says) in the
/// created container's /etc/passwd; root when it is empty.
async fn user_ids(docker: &Docker, container: &str, user: &str) -> anyhow::Result<(u64, u64)> {
    let (name, group) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    if name.is_empty() || name == "root" {
        return Ok((0, 0));
    }
    let passwd = download(docker, container, "/etc/passwd").await?.unwrap_or_default();
    let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 3 && (f[0] == name || f[2] == name));
    let (uid, gid) = match (entry, name.parse::<u64>()) {
        (Some(f), _) => (f[2].parse()?, f[3].parse()?),
        (None, Ok(uid)) => (uid, uid),
        (None, Err(_)) => bail!("{container}: user `{name}` is not in the image's /etc/passwd"),
    };
    Ok((uid, group.and_then(|g| g.parse().ok()).unwrap_or(gid)))
}

async fn create(docker: &Docker, t: &Topology, network: &str, spec: &ContainerSpec) -> anyhow::Result<()> {
    let mut env = spec.env.clone();
    let image = docker.inspect_image(&spec.image).await.with_context(|| format!("cannot inspect image {}", spec.image))?;
    let image_config = image.config.unwrap_or_default();
    let image_user = image_config.user.clone().unwrap_or_default();
    // Secret files: (path, content, owner).
    let mut secret_files: Vec<(String, String, FileOwner)> = Vec::new();
    let (mut entrypoint, mut cmd) = (None, (!spec.cmd.is_empty()).then(|| spec.cmd.clone()));
    match spec.secrets {
        _ if spec.secret_env.is_empty() => {}
        SecretDelivery::Env => env.extend(spec.secret_env.iter().map(|s| format!("{}={}", s.name, s.value))),
        SecretDelivery::Files => {
            for s in &spec.secret_env {
                secret_files.push((format!("{SECRETS_DIR}/{}", s.name), s.value.clone(), FileOwner::ImageUser));
            }
            // The image's own command, behind the wrapper.
            let mut argv = image_config.entrypoint.clone().unwrap_or_default();
            argv.extend(cmd.take().or(image_config.cmd.clone()).unwrap_or_default());
            entrypoint = Some(secrets_entrypoint());
            cmd = Some(argv);
        }
        SecretDelivery::RedisExporterFile => {
            // Its own password (the users file apply writes gives the exporter's user that one),
            // for its one target: a /scrape?target= naming another address gets none.
            let map: BTreeMap<String, String> = spec
                .secret_env
                .iter()
                .filter(|s| s.name == "REDIS_PASSWORD")
                .map(|s| (redis_address(t), crate::render::redis_exporter_password(&s.value)))
                .collect();
            let path = redis_exporter_password_file();
            env.push(format!("REDIS_PASSWORD_FILE={path}"));
            secret_files.push((path, serde_json::to_string(&map)?, FileOwner::ImageUser));
        }
    }
    let ports: HashMap<String, Option<Vec<PortBinding>>> = spec
        .publish
        .iter()
        .map(|p| (format!("{}/tcp", p.container_port), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(p.host_port.to_string()) }])))
        .collect();
    let host_config = HostConfig {
        port_bindings: Some(ports),
        // Restarted by the engine (after a crash, or when the engine itself restarts), but for a
        // release command's container, which runs once.
        restart_policy: Some(RestartPolicy {
            name: Some(if spec.role == crate::plan::docker::ROLE_RELEASE { RestartPolicyNameEnum::NO } else { RestartPolicyNameEnum::UNLESS_STOPPED }),
            maximum_retry_count: None,
        }),
        memory: spec.memory_bytes.map(|m| m as i64),
        nano_cpus: spec.nano_cpus,
        ulimits: spec.nofile.map(|n| vec![ResourcesUlimits { name: Some("nofile".into()), soft: Some(n as i64), hard: Some(n as i64) }]),
        binds: Some(spec.volumes.iter().map(|(v, p)| format!("{v}:{p}")).collect()),
        mounts: (!spec.binds_ro.is_empty()).then(|| {
            spec.binds_ro
                .iter()
                .map(|(source, target)| Mount {
                    typ: Some(MountType::BIND),
                    source: Some(source.clone()),
                    target: Some(target.clone()),
                    read_only: Some(true),
                    ..Default::default()
                })
                .collect()
        }),
        cap_drop: spec.cap_drop_all.then(|| vec!["ALL".to_string()]),
        pid_mode: spec.pid_host.then(|| "host".to_string()),
        // No process gains privileges through a setuid binary, in any container.
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        readonly_rootfs: spec.read_only.then_some(true),
        tmpfs: spec.read_only.then(|| HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,size=64m".to_string())])),
        pids_limit: spec.pids_limit,
        log_config: Some(HostConfigLogConfig { typ: Some("json-file".into()), config: Some(spec.log_opts.clone().into_iter().collect()) }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: spec.user.clone(),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(spec.labels(&t.name).into_iter().collect()),
        exposed_ports: Some(spec.publish.iter().map(|p| format!("{}/tcp", p.container_port)).collect()),
        healthcheck: if spec.no_health_check {
            Some(HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() })
        } else {
            spec.health.as_ref().map(|h| HealthConfig {
                test: Some(h.test.clone()),
                interval: Some(ms_to_ns(h.interval_ms)),
                timeout: Some(ms_to_ns(h.timeout_ms)),
                retries: Some(i64::from(h.retries)),
                start_period: Some(ms_to_ns(h.start_period_ms)),
                start_interval: None,
            })
        },
        stop_timeout: Some(spec.stop_timeout_s),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings { aliases: Some(spec.aliases.clone()), ..Default::default() },
            )])),
        }),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&spec.name).build()), body)
        .await
        .with_context(|| format!("cannot create container {} from {}", spec.name, spec.image))?;
    let mut files: Vec<OwnedFile<'_>> = Vec::new();
    let owners = spec.files.iter().map(|f| &f.owner).chain(secret_files.iter().map(|(_, _, o)| o));
    let mut ids = HashMap::new();
    for owner in owners {
        if !ids.contains_key(owner) {
            let user = match owner {
                FileOwner::Root => String::new(),
                FileOwner::User(u) => u.clone(),
                FileOwner::ImageUser => image_user.clone(),
            };
            ids.insert(owner.clone(), user_ids(docker, &spec.name, &user).await?);
        }
    }
    files.extend(spec.files.iter().map(|f| (f.path.as_str(), f.content.as_bytes(), f.mode, ids[&f.owner])));
    files.extend(secret_files.iter().map(|(p, c, o)| (p.as_str(), c.as_bytes(), 0o400, ids[o])));
    if !files.is_empty() {
        upload_owned(docker, &spec.name, &files).await?;
    }
    Ok(())
}

/// Wait until the container's health check passes (or it runs, without one), for up to
/// `timeout` (`--ready-timeout`): the engine's own "unhealthy" (a few failed probes after its
/// short start period) does not end the wait, since a probe that passes later turns it healthy,
/// and a slow start on a busy machine is not a broken release. A container that exits ends it.
/// On failure, the error carries its last health answers and log lines.
/// How long a release command may run before the apply gives up on it.
const RELEASE_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// `app.release_command` in its one-off container: created (one left by an apply that was
/// interrupted is removed first), started, waited for; its output shown. A failure removes it
/// and stops the apply with its last lines, before any replica switched; a success keeps it, the
/// record that this release's command ran.
async fn run_release(docker: &Docker, t: &Topology, network: &str, spec: &ContainerSpec, say: Progress<'_>) -> anyhow::Result<()> {
    let argv = spec.cmd.join(" ");
    // One an interrupted apply started and left running is waited for, never killed halfway
    // through a migration; one that ended or never started is run again.
    let running = docker.inspect_container(&spec.name, None).await.ok().and_then(|c| c.state).and_then(|s| s.running);
    if running == Some(true) {
        say(&format!("the release command `{argv}` is still running in {} (an earlier apply's): waiting for it", spec.name));
    } else {
        say(&format!("running the release command `{argv}` in {}", spec.name));
        if running.is_some() {
            remove(docker, &spec.name).await?;
        }
        create(docker, t, network, spec).await?;
        if let Err(e) = docker.start_container(&spec.name, None).await {
            let _ = remove(docker, &spec.name).await;
            return Err(anyhow::Error::new(e).context(format!("cannot start {}", spec.name)));
        }
    }
    let start = Instant::now();
    let (code, timed_out) = loop {
        let state = docker.inspect_container(&spec.name, None).await.with_context(|| format!("cannot inspect {}", spec.name))?.state;
        if let Some(s) = state.filter(|s| s.running != Some(true) && s.status.is_some_and(|st| st.to_string() == "exited")) {
            break (s.exit_code.unwrap_or(-1), false);
        }
        if start.elapsed() > RELEASE_COMMAND_TIMEOUT {
            stop(docker, &spec.name, 10).await?;
            break (-1, true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let output = tail_logs(docker, &spec.name, 40).await;
    for line in output.lines() {
        say(&format!("release command: {line}"));
    }
    if code != 0 {
        remove(docker, &spec.name).await?;
        bail!(
            "the release command `{argv}` failed (exit {code}{}): no replica switched to {}, the running release keeps serving\n  its last lines:\n{}",
            if timed_out { format!(", stopped after {} s", RELEASE_COMMAND_TIMEOUT.as_secs()) } else { String::new() },
            spec.image,
            output.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
        );
    }
    say(&format!("the release command ran in {:.1} s", start.elapsed().as_secs_f64()));
    Ok(())
}

async fn wait_ready(docker: &Docker, name: &str, healthy: bool, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let c = docker.inspect_container(name, None).await.with_context(|| format!("cannot inspect {name}"))?;
        let state = c.state.as_ref();
        let running = state.and_then(|s| s.running).unwrap_or(false);
        let health = state.and_then(|s| s.health.as_ref());
        let status = health.and_then(|h| h.status).map(|s| s.to_string()).unwrap_or_default();
        if running && (!healthy || status == "healthy") {
            return Ok(());
        }
        let failed = state.and_then(|s| s.status).is_some_and(|s| s.to_string() == "exited");
        if failed || start.elapsed() > timeout {
            let answers: Vec<String> = health
                .and_then(|h| h.log.clone())
                .unwrap_or_default()
                .iter()
                .rev()
                .take(3)
                .map(|r| format!("exit {}: {}", r.exit_code.unwrap_or(-1), r.output.as_deref().unwrap_or("").trim()))
                .collect();
            let logs = tail_logs(docker, name, 10).await;
            bail!(
                "{name} never became {} ({}after {:.0} s)\n  last health answers: {}\n  last log lines:\n{}",
                if healthy { "healthy" } else { "running" },
                if status.is_empty() { String::new() } else { format!("{status}, ") },
                start.elapsed().as_secs_f64(),
                if answers.is_empty() { "none".into() } else { answers.join(" | ") },
                logs.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A container without a health check (a worker) that runs now must still run `after` this,
/// never restarted meanwhile: one that exits at once is restarted by the engine and would look
/// running at any single moment. On failure, the error carries its last log lines.
async fn still_running(docker: &Docker, name: &str, after: Duration) -> anyhow::Result<()> {
    let started = |c: &bollard::models::ContainerInspectResponse| {
        (c.state.as_ref().and_then(|s| s.started_at.clone()), c.restart_count.unwrap_or_default())
    };
    let before = started(&docker.inspect_container(name, None).await.with_context(|| format!("cannot inspect {name}"))?);
    tokio::time::sleep(after).await;
    let c = docker.inspect_container(name, None).await.with_context(|| format!("cannot inspect {name}"))?;
    let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    if running && started(&c) == before {
        return Ok(());
    }
    let logs = tail_logs(docker, name, 10).await;
    bail!(
        "{name} did not keep running: {} within {:.0} s of its start\n  last log lines:\n{}",
        if running { "it exited and was restarted" } else { "it exited" },
        after.as_secs_f64(),
        logs.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    );
}

/// A replica's log lines with the engine's timestamps: the last `lines` within `since`, then
/// (`follow`) new ones, each handed to `line` as (microseconds since the epoch, text).
pub async fn replica_logs(docker: &Docker, name: &str, since: Duration, lines: usize, follow: bool, line: &mut (dyn FnMut(i64, String) + Send)) -> anyhow::Result<()> {
    let since_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.saturating_sub(since).as_secs() as i32;
    let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).timestamps(true).since(since_unix).tail(&lines.to_string()).follow(follow).build();
    let mut s = docker.logs(name, Some(opts));
    let mut partial = String::new();
    while let Some(chunk) = s.next().await {
        partial.push_str(&chunk.with_context(|| format!("cannot read the logs of {name}"))?.to_string());
        while let Some(i) = partial.find('\n') {
            let l: String = partial.drain(..=i).collect();
            let (stamp, text) = l.trim_end_matches(['\n', '\r']).split_once(' ').unwrap_or(("", ""));
            if let Ok(t) = humantime::parse_rfc3339(stamp) {
                let us = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
                line(us, text.to_string());
            }
        }
    }
    Ok(())
}

async fn tail_logs(docker: &Docker, name: &str, n: usize) -> String {
    let mut s = docker.logs(name, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&n.to_string()).build()));
    let mut out = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.push_str(&chunk.to_string());
    }
    out
}

async fn stop(docker: &Docker, name: &str, timeout_s: i64) -> anyhow::Result<()> {
    docker
        .stop_container(name, Some(StopContainerOptionsBuilder::default().t(timeout_s as i32).build()))
        .await
        .with_context(|| format!("cannot stop {name}"))
}

async fn remove(docker: &Docker, name: &str) -> anyhow::Result<()> {
    match docker.remove_container(name, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {name}")),
    }
}

/// Replace a file in a running container by a rename, then run the commands; a failing command
/// puts `previous` back (and runs the commands again) before failing. With `old_workers_wait_s`,
/// then wait until the nginx workers from before the commands have exited.
async fn write_live(docker: &Docker, container: &str, path: &str, content: &str, previous: &str, commands: &[Vec<String>], old_workers_wait_s: Option<i64>) -> anyhow::Result<()> {
    let old = match old_workers_wait_s {
        Some(_) => nginx_workers(docker, container).await?,
        None => Vec::new(),
    };
    put(docker, container, path, content).await?;
    for cmd in commands {
        let (code, out) = exec(docker, container, cmd).await?;
        if code != 0 {
            put(docker, container, path, previous).await?;
            for c in commands {
                exec(docker, container, c).await?;
            }
            bail!("`{}` in {container} failed (exit {code}); {path} was put back:\n{}", cmd.join(" "), out.trim());
        }
    }
    if let (Some(wait), false) = (old_workers_wait_s, old.is_empty()) {
        let script = super::commands::wait_for_exit("\"$@\"", Duration::from_secs(wait.max(0) as u64));
        let argv: Vec<String> = ["sh", "-c", &script, "wait-old-workers"].into_iter().map(String::from).chain(old).collect();
        exec(docker, container, &argv).await?;
    }
    Ok(())
}

/// One of the balancer's scripts (its runtime API) in its container; its error is the step's.
async fn balancer_script(docker: &Docker, container: &str, script: String) -> anyhow::Result<()> {
    let (code, out) = exec(docker, container, &["sh".into(), "-c".into(), script]).await?;
    anyhow::ensure!(code == 0, "{container}: {}", out.trim());
    Ok(())
}

/// The pids of the nginx worker processes running in `container` now (found in /proc: the
/// official image has no pgrep).
async fn nginx_workers(docker: &Docker, container: &str) -> anyhow::Result<Vec<String>> {
    let script = "for d in /proc/[0-9]*; do\n  case \"$(tr -d '\\000' < \"$d/cmdline\" 2>/dev/null)\" in \"nginx: worker process\"*) echo \"${d#/proc/}\" ;; esac\ndone";
    let (code, out) = exec(docker, container, &["sh".into(), "-c".into(), script.into()]).await?;
    if code != 0 {
        bail!("cannot list nginx's workers in {container} (exit {code}): {}", out.trim());
    }
    Ok(out.split_whitespace().filter(|p| p.bytes().all(|b| b.is_ascii_digit())).map(String::from).collect())
}

async fn put(docker: &Docker, container: &str, path: &str, content: &str) -> anyhow::Result<()> {
    put_owned(docker, container, path, content, 0o644, (0, 0)).await
}

/// [`put`] with the file's mode and (uid, gid).
async fn put_owned(docker: &Docker, container: &str, path: &str, content: &str, mode: u32, owner: (u64, u64)) -> anyhow::Result<()> {
    let tmp = format!("{path}.scalectl-new");
    upload_owned(docker, container, &[(&tmp, content.as_bytes(), mode, owner)]).await?;
    let (code, out) = exec(docker, container, &["mv".into(), "-f".into(), tmp, path.into()]).await?;
    if code != 0 {
        bail!("cannot move {path} into place in {container}: {}", out.trim());
    }
    Ok(())
}

pub struct Options<'a> {
    pub release: Option<&'a [u8]>,
    pub ready_timeout: Duration,
    pub progress: Progress<'a>,
    /// One more of the plan's steps is done.
    pub done: &'a (dyn Fn() + Sync),
    /// Asked before each step: a lost fleet lock stops the run there, undoing nothing.
    pub still_held: super::lock::StillHeld<'a>,
}

/// Carry out the plan. When an `activate` step fails, the steps already taken are undone in
/// reverse and the error says so; `cleanup` runs only after every `activate` step succeeded.
pub async fn execute(docker: &Docker, t: &Topology, plan: &DockerPlan, o: &Options<'_>) -> anyhow::Result<()> {
    let mut done: Vec<&Step> = Vec::new();
    for step in &plan.activate {
        // Another run may hold the engine's lock now: stop here, and undo nothing of it either.
        (o.still_held)()?;
        if let Err(e) = run_step(docker, t, plan, step, o).await {
            if let Step::Create { spec } = step {
                let _ = remove(docker, &spec.name).await;
            }
            (o.progress)("undoing the steps taken, newest first");
            // A balancer reloaded for its new file is reloaded again once its first file is back,
            // before the replicas it drained go back: they are checked with the settings that
            // file has (another liveness path, perhaps), not the new one's.
            let reloaded = |c: &str| done.iter().any(|s| matches!(s, Step::ReloadBalancer { container } if container == c));
            let first_write = |c: &str| done.iter().position(|s| matches!(s, Step::WriteLive { container, path, .. } if container == c && path == crate::topology::tiers::BALANCER_CONFIG));
            let mut undo_errors = Vec::new();
            for (i, s) in done.iter().enumerate().rev() {
                let mut undone = undo(docker, t, s, o).await;
                let reload = match s {
                    Step::WriteLive { container, .. } if undone.is_ok() && reloaded(container) && first_write(container) == Some(i) => Some(container),
                    _ => None,
                };
                if let Some(container) = reload {
                    (o.progress)(&format!("reloading the balancer in {container} for its file from before"));
                    undone = balancer_script(docker, container, super::commands::reload_balancer_in_container(BALANCER_SOCKET, Duration::from_secs(30))).await;
                }
                if let Err(u) = undone {
                    undo_errors.push(format!("{u:#}"));
                }
            }
            if undo_errors.is_empty() {
                return Err(e.context("apply failed; rolled back: what ran before still serves"));
            }
            return Err(e.context(format!("apply failed, and undoing it failed too: {}", undo_errors.join("; "))));
        }
        done.push(step);
        (o.done)();
    }
    for step in &plan.cleanup {
        (o.still_held)()?;
        run_step(docker, t, plan, step, o).await?;
        (o.done)();
    }
    Ok(())
}

async fn run_step(docker: &Docker, t: &Topology, plan: &DockerPlan, step: &Step, o: &Options<'_>) -> anyhow::Result<()> {
    let say = o.progress;
    match step {
        Step::BuildImage { tag, dockerfile, from_image: Some(from), .. } => {
            say(&format!("labelling the engine's image {from} as {tag}"));
            build_image(docker, tag, dockerfile, &[], "app", t, say).await?;
        }
        Step::BuildImage { tag, dockerfile, archive, bytes, .. } => {
            let release = o.release.context("the plan builds an image, but no release was given")?;
            anyhow::ensure!(release.len() as u64 == *bytes, "the release changed since the plan was made");
            say(&format!("building image {tag}"));
            if *archive {
                build_context(docker, tag, release.to_vec(), "app", t, say).await?;
            } else {
                build_image(docker, tag, dockerfile, &[("/scale-api", release, 0o755)], "app", t, say).await?;
            }
        }
        Step::BuildLogImage { tag, dockerfile } => {
            say(&format!("building image {tag} (Debian's rsyslog and mtail: log shipping, the load balancer's log as metrics)"));
            build_image(docker, tag, dockerfile, &[], ROLE_LOGS, t, say).await?;
        }
        Step::CreateNetwork { name } => {
            say(&format!("creating network {name}"));
            docker
                .create_network(NetworkCreateRequest { name: name.clone(), driver: Some("bridge".into()), labels: Some(owner_label(t)), ..Default::default() })
                .await
                .with_context(|| format!("cannot create network {name}"))?;
        }
        Step::CreateVolume { name } => {
            say(&format!("creating volume {name}"));
            docker
                .create_volume(VolumeCreateRequest { name: Some(name.clone()), labels: Some(owner_label(t)), ..Default::default() })
                .await
                .with_context(|| format!("cannot create volume {name}"))?;
        }
        Step::Create { spec } => {
            say(&format!("{}: creating {}", spec.slot, spec.name));
            create(docker, t, &plan.network, spec).await?;
            if let Err(e) = docker.start_container(&spec.name, None).await {
                let hint = match (e.to_string().contains("rlimit"), spec.nofile) {
                    (true, Some(n)) => format!(
                        " (the engine cannot grant an open-files limit of {n}: dockerd's own limit is lower; raise its LimitNOFILE or lower app.limits.nofile)"
                    ),
                    _ => String::new(),
                };
                return Err(anyhow::Error::new(e).context(format!("cannot start {}{hint}", spec.name)));
            }
            wait_ready(docker, &spec.name, spec.health.is_some(), o.ready_timeout).await?;
            if let Some(s) = spec.settle_s {
                still_running(docker, &spec.name, Duration::from_secs(s)).await?;
            }
            say(&format!("{}: {} is {}", spec.slot, spec.name, if spec.health.is_some() { "healthy" } else { "running" }));
        }
        Step::RunRelease { spec } => run_release(docker, t, &plan.network, spec, say).await?,
        Step::Start { name, wait_healthy } => {
            say(&format!("starting {name}"));
            docker.start_container(name, None).await.with_context(|| format!("cannot start {name}"))?;
            wait_ready(docker, name, *wait_healthy, o.ready_timeout).await?;
        }
        Step::WriteLive { container, path, content, previous, commands, old_workers_wait_s, .. } => {
            say(&format!("writing {path} in {container}"));
            write_live(docker, container, path, content, previous, commands, *old_workers_wait_s).await?;
        }
        Step::Credentials { credentials, container, phase, port, content, .. } => {
            let (user, script) = super::commands::container_credentials(*credentials, *phase, *port, &credentials_marker(*credentials));
            if *phase == crate::plan::CredentialsPhase::Add {
                say(&format!("adding the new passwords to {} in {container} (the old ones still work)", credentials.users()));
                // The users file, the service's alone, replaced whole.
                let owner = user_ids(docker, container, user).await?;
                put_owned(docker, container, crate::render::users_file(*credentials), content, 0o400, owner).await?;
            } else {
                say(&format!("settling {} in {container} (the old passwords no longer work)", credentials.users()));
            }
            let (code, out) = exec_as(docker, container, user, &["sh".into(), "-c".into(), script]).await?;
            anyhow::ensure!(code == 0, "{container}: {}", out.trim());
        }
        Step::Drain { container, backend, server, wait_s, .. } => {
            say(&format!("taking {server} out of the balancer"));
            let wait = Duration::from_secs(wait_s.max(&0).unsigned_abs());
            balancer_script(docker, container, super::commands::drain(BALANCER_SOCKET, backend, server, wait)).await?;
        }
        Step::Serve { container, backend, server, replica, wait_s, pause_checks } => {
            say(&format!("pointing {server} at {replica}, back into the balancer"));
            let wait = Duration::from_secs(wait_s.max(&0).unsigned_abs());
            balancer_script(docker, container, super::commands::serve(BALANCER_SOCKET, backend, server, replica, t.app.port, wait, *pause_checks)).await?;
        }
        Step::ReloadBalancer { container } => {
            say(&format!("reloading the balancer in {container} for its new servers"));
            balancer_script(docker, container, super::commands::reload_balancer_in_container(BALANCER_SOCKET, Duration::from_secs(30))).await?;
        }
        Step::Stop { name, timeout_s } => {
            say(&format!("stopping {name}"));
            stop(docker, name, *timeout_s).await?;
        }
        Step::Remove { name, .. } => {
            say(&format!("removing {name}"));
            remove(docker, name).await?;
        }
        Step::RemoveNetwork { name } => {
            say(&format!("removing network {name}"));
            docker.remove_network(name).await.with_context(|| format!("cannot remove network {name}"))?;
        }
        Step::RemoveVolume { name } => {
            say(&format!("removing volume {name}"));
            docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>).await.with_context(|| format!("cannot remove volume {name}"))?;
        }
        Step::RemoveImage { tag, .. } => {
            say(&format!("removing image {tag}"));
            match docker.remove_image(tag, Some(RemoveImageOptionsBuilder::default().build()), None).await {
                Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                // Used by a container outside the topology: it stays, and the apply goes on.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, message }) => say(&format!("image {tag} stays: {message}")),
                Err(e) => return Err(e).with_context(|| format!("cannot remove image {tag}")),
            }
        }
    }
    Ok(())
}

/// The inverse of an activate step already taken.
async fn undo(docker: &Docker, t: &Topology, step: &Step, o: &Options<'_>) -> anyhow::Result<()> {
    match step {
        Step::Create { spec } => {
            (o.progress)(&format!("{}: removing {}", spec.slot, spec.name));
            stop(docker, &spec.name, spec.stop_timeout_s).await?;
            remove(docker, &spec.name).await
        }
        Step::Stop { name, .. } => {
            (o.progress)(&format!("starting {name} again"));
            docker.start_container(name, None).await.with_context(|| format!("cannot start {name}"))?;
            // A check of `NONE` (a worker's, the image's turned off) is no check.
            let test = docker.inspect_container(name, None).await?.config.and_then(|c| c.healthcheck).and_then(|h| h.test);
            let healthy = test.is_some_and(|t| t.first().is_some_and(|c| c != "NONE"));
            wait_ready(docker, name, healthy, o.ready_timeout).await
        }
        Step::WriteLive { container, path, previous, commands, old_workers_wait_s, .. } => {
            (o.progress)(&format!("putting {path} back in {container}"));
            write_live(docker, container, path, previous, previous, commands, *old_workers_wait_s).await
        }
        // A server taken out goes back pointed at the replica it served (which the undo of its
        // Stop, newer, has started again), checked: the balancer runs the settings it had then
        // (`execute` reloads it for its file from before if the run had reloaded it).
        Step::Drain { container, backend, server, replica, wait_s } => {
            (o.progress)(&format!("putting {server} back into the balancer, at {replica}"));
            let wait = Duration::from_secs(wait_s.max(&0).unsigned_abs());
            balancer_script(docker, container, super::commands::serve(BALANCER_SOCKET, backend, server, replica, t.app.port, wait, false)).await
        }
        // Users added live: old and new passwords both keep working, and the marker left in the
        // container makes the next apply settle them.
        Step::Credentials { .. } => Ok(()),
        // An image, network, volume or started container stays: harmless, and reused next time.
        _ => Ok(()),
    }
}



#[cfg(test)]
mod engine_time_tests {
    #[test]
    fn engine_times_are_read_to_the_second() {
        let t = super::engine_time("2026-12-05T08:00:01.123456789Z").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(t).to_string(), "2026-12-05T08:00:01Z");
    }
}
