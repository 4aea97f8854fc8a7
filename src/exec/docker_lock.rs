//! The fleet lock on a Docker engine: a container named `<topology>-scalectl-lock` that is created,
//! never started, with the owner, id, time and expiry in its labels. The engine refuses a second
//! container of the same name (HTTP 409), which makes taking the lock atomic; an expired lock is
//! removed by its container id, so a run that lost the race to replace it removes nothing of the
//! winner's. Labels cannot change, so a running apply renews the lock by writing an empty file
//! into the container whose name holds the new expiry (created whole or not at all); the lock
//! expires at the latest of its label and those files. The container comes from a tiny image built `FROM scratch` (no registry needed) and
//! carries no ownership label, so observe, apply and destroy never see it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;

use super::lock::{Held, Lease, LockInfo, Renewal, locked_error};

/// Built locally from a two-line Dockerfile; holds no files.
const LOCK_IMAGE: &str = "scalectl-lock:1";
const LOCK_DOCKERFILE: &str = "FROM scratch\nCMD [\"scalectl-lock\"]\n";

const OWNER: &str = "scalectl.lock.owner";
const ID: &str = "scalectl.lock.id";
const ACQUIRED: &str = "scalectl.lock.acquired";
const EXPIRES: &str = "scalectl.lock.expires";
/// A renewal's file in the lock container: `/scalectl-lock-renewed-<unix seconds it expires>`.
const RENEWED: &str = "scalectl-lock-renewed-";

pub fn container_name(topology: &str) -> String {
    format!("{topology}-scalectl-lock")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn ensure_image(docker: &Docker) -> anyhow::Result<()> {
    if docker.inspect_image(LOCK_IMAGE).await.is_ok() {
        return Ok(());
    }
    let tar = super::docker::tar_of(&[("/Dockerfile", LOCK_DOCKERFILE.as_bytes(), 0o644)])?;
    let opts = BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(LOCK_IMAGE).rm(true).build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    while let Some(r) = stream.next().await {
        let info = r.context("building the lock image failed")?;
        if let Some(e) = info.error_detail.and_then(|e| e.message) {
            anyhow::bail!("building the lock image failed: {e}");
        }
    }
    Ok(())
}

/// The lock's container id and what it says, if there is one.
pub async fn status(docker: &Docker, topology: &str) -> anyhow::Result<Option<(String, LockInfo)>> {
    match docker.inspect_container(&container_name(topology), None).await {
        Ok(c) => {
            let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let info = LockInfo {
                owner: get(OWNER),
                id: get(ID),
                acquired: get(ACQUIRED).parse().unwrap_or(0),
                expires: get(EXPIRES).parse().unwrap_or(0),
            };
            let container = c.id.unwrap_or_default();
            let renewed = renewed_until(docker, &container).await?;
            Ok(Some((container, LockInfo { expires: info.expires.max(renewed), ..info })))
        }
        Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(e).context("cannot read the fleet lock"),
    }
}

/// The latest expiry the lock's renewals wrote (0: none).
async fn renewed_until(docker: &Docker, container: &str) -> anyhow::Result<u64> {
    let names = super::docker::names_in(docker, container, "/").await.context("cannot read the fleet lock's renewals")?;
    Ok(names.iter().filter_map(|n| n.trim_start_matches("./").trim_start_matches('/').strip_prefix(RENEWED)?.parse().ok()).max().unwrap_or(0))
}

/// One renewal: the lock is this run's still, so its expiry moves `ttl` on.
async fn renew(docker: &Docker, topology: &str, id: &str, ttl: Duration) -> Renewal {
    match status(docker, topology).await {
        Ok(Some((container, info))) if info.id == id => {
            let file = format!("/{RENEWED}{}", now() + ttl.as_secs());
            match super::docker::upload(docker, &container, &[(&file, b"", 0o644)]).await {
                Ok(()) => Renewal::Renewed,
                Err(e) => Renewal::Failed(format!("{e:#}")),
            }
        }
        Ok(Some((_, other))) => Renewal::Gone(other.to_string()),
        Ok(None) => Renewal::Gone("nobody".into()),
        Err(e) => Renewal::Failed(format!("{e:#}")),
    }
}

/// Renewals from the lease's thread, on a runtime and an engine client of its own (the run's
/// client lives on the run's runtime, which is idle while, say, a person reads the plan).
fn renew_on_the_engine(t: crate::topology::Topology, id: String, ttl: Duration) -> impl FnMut() -> Renewal + Send + 'static {
    let mut rt: Option<tokio::runtime::Runtime> = None;
    let mut client: Option<Docker> = None;
    move || {
        if rt.is_none() {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => rt = Some(r),
                Err(e) => return Renewal::Failed(e.to_string()),
            }
        }
        let Some(r) = &rt else { return Renewal::Failed("no runtime".into()) };
        if client.is_none() {
            match r.block_on(super::docker::connect(&t)) {
                Ok(d) => client = Some(d),
                Err(e) => return Renewal::Failed(format!("{e:#}")),
            }
        }
        let Some(d) = &client else { return Renewal::Failed("not connected".into()) };
        let renewal = r.block_on(renew(d, &t.name, &id, ttl));
        if matches!(renewal, Renewal::Failed(_)) {
            client = None;
        }
        renewal
    }
}

async fn create(docker: &Docker, topology: &str, owner: &str, id: &str, ttl: Duration) -> Result<(), DockerError> {
    let now = now();
    let labels = HashMap::from([
        (OWNER.to_string(), owner.to_string()),
        (ID.to_string(), id.to_string()),
        (ACQUIRED.to_string(), now.to_string()),
        (EXPIRES.to_string(), (now + ttl.as_secs()).to_string()),
    ]);
    let body = ContainerCreateBody { image: Some(LOCK_IMAGE.into()), labels: Some(labels), ..Default::default() };
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(&container_name(topology)).build()), body).await.map(|_| ())
}

pub async fn acquire(docker: &Docker, t: &crate::topology::Topology, owner: &str, ttl: Duration) -> anyhow::Result<Held> {
    let topology = t.name.as_str();
    ensure_image(docker).await?;
    let id = super::lock::new_id();
    let mut took_over = None;
    for _ in 0..2 {
        match create(docker, topology, owner, &id, ttl).await {
            Ok(()) => {
                let lease = Lease::start(id.clone(), ttl, renew_on_the_engine(t.clone(), id.clone(), ttl));
                return Ok(Held::leased(id, took_over, lease));
            }
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {
                let Some((container, info)) = status(docker, topology).await? else { continue };
                if info.expires >= now() {
                    return Err(locked_error(&info));
                }
                // Expired: remove exactly that container; if another run replaced it first, this
                // removes nothing and the create below finds the other's lock.
                remove_id(docker, &container).await?;
                took_over = Some(info);
            }
            Err(e) => return Err(e).context("cannot take the fleet lock on the engine"),
        }
    }
    match status(docker, topology).await? {
        Some((_, info)) => Err(locked_error(&info)),
        None => anyhow::bail!("cannot take the fleet lock on the engine: it changed hands twice while trying"),
    }
}

async fn remove_id(docker: &Docker, container: &str) -> anyhow::Result<()> {
    match docker.remove_container(container, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await {
        Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(e).context("cannot remove the fleet lock"),
    }
}

/// Release the lock if it is still this run's.
pub async fn release(docker: &Docker, topology: &str, held: &Held) -> anyhow::Result<()> {
    held.end_lease();
    match status(docker, topology).await? {
        Some((container, info)) if info.id == held.id => remove_id(docker, &container).await,
        _ => Ok(()),
    }
}

/// Remove the lock with this id; the one there is returned when it is another.
pub async fn force_release(docker: &Docker, topology: &str, id: &str) -> anyhow::Result<Result<(), LockInfo>> {
    match status(docker, topology).await? {
        Some((container, info)) if info.id == id => remove_id(docker, &container).await.map(Ok),
        Some((_, other)) => Ok(Err(other)),
        None => Ok(Ok(())),
    }
}
