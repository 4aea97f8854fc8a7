//! `plan`, `apply`, `destroy` and `status` for `target: docker` topologies: the same commands and
//! exit codes as for hosts, carried out on a Docker engine through its API.

use std::time::Instant;

use anyhow::Context;

use super::apply::ExecArgs;
use super::fleet::{self, ReleaseArg};
use super::{Failure, JSON_FORMAT_VERSION, Output};
use crate::exec::docker as engine;
use crate::plan::docker::{self as dplan, DockerPlan};
use crate::plan::Release;
use crate::render::Templates;
use crate::topology::{Target, Topology};

/// The topology, when it is a `target: docker` one.
pub fn topology(file: &std::path::Path, color: bool) -> Result<Option<Topology>, Failure> {
    let t = super::load(file, color)?;
    Ok((t.target == Target::Docker).then_some(t))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Observe the engine and plan against it.
async fn make_plan(docker: &bollard::Docker, t: &Topology, binary: &[u8]) -> anyhow::Result<DockerPlan> {
    let templates = Templates::embedded();
    let release = Release::of(binary);
    let info = docker.info().await.context("cannot read the engine's info")?;
    let engine_facts = dplan::Engine {
        cores: info.ncpu.unwrap_or(1).max(1) as u32,
        data_root: info.docker_root_dir.filter(|d| d.starts_with('/')).unwrap_or_else(|| "/var/lib/docker".into()),
    };
    let secrets = fleet::resolve_secrets(t)?;
    let desired = dplan::desired(t, &release, &secrets, &engine_facts, &templates)?;
    let observed = engine::observe(docker, t, &desired.image, desired.logs.as_ref().map(|l| l.image.as_str())).await?;
    Ok(dplan::plan(dplan::Inputs { topology: t, release: &release, desired, templates: &templates }, &observed)?)
}

pub fn json(plan: &DockerPlan) -> String {
    let plan = plan.redacted();
    let doc = serde_json::json!({
        "format_version": JSON_FORMAT_VERSION,
        "topology": plan.topology,
        "target": "docker",
        "changes": plan.has_changes(),
        "action_count": plan.change_count(),
        "network": plan.network,
        "activate": plan.activate,
        "cleanup": plan.cleanup,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn print(plan: &DockerPlan, output: Output, color: bool) {
    match output {
        Output::Text => print!("{}", dplan::render_text(&plan.redacted(), color)),
        Output::Json => println!("{}", json(plan)),
    }
}

pub fn plan(t: &Topology, release: &ReleaseArg, output: Output, detailed: bool, out: Option<&std::path::Path>, color: bool) -> Result<(), Failure> {
    if out.is_some() {
        return Err(anyhow::anyhow!("saved plans (--out) are for `target: hosts` topologies; a docker plan is applied by `scalectl apply -f FILE`").into());
    }
    let binary = release.read()?;
    let rt = runtime()?;
    let plan = rt.block_on(async {
        let docker = engine::connect(t).await?;
        make_plan(&docker, t, &binary).await
    })?;
    print(&plan, output, color);
    if detailed && plan.has_changes() {
        return Err(Failure::Changes);
    }
    Ok(())
}

/// What a run plans: a deployment of a release, or its removal.
#[derive(Clone, Copy)]
enum Goal<'a> {
    Apply(&'a [u8]),
    Destroy,
}

pub fn apply(t: &Topology, release: &ReleaseArg, x: &ExecArgs, color: bool) -> Result<(), Failure> {
    let binary = release.read()?;
    run(t, x, color, "apply these changes", Goal::Apply(&binary))
}

pub fn destroy(t: &Topology, x: &ExecArgs, color: bool) -> Result<(), Failure> {
    run(t, x, color, "DESTROY the deployment (remove its containers, network and volumes, Redis data included)", Goal::Destroy)
}

/// Plan, show, confirm, execute.
fn run(t: &Topology, x: &ExecArgs, color: bool, what: &str, goal: Goal<'_>) -> Result<(), Failure> {
    let rt = runtime()?;
    let (docker, plan) = rt.block_on(async {
        let docker = engine::connect(t).await?;
        let plan = match goal {
            Goal::Apply(binary) => make_plan(&docker, t, binary).await?,
            Goal::Destroy => dplan::destroy_plan(t, &engine::observe(&docker, t, "", None).await?),
        };
        anyhow::Ok((docker, plan))
    })?;
    print(&plan, x.output, color);
    if !plan.has_changes() {
        return Ok(());
    }
    if !fleet::confirm(x.yes, what)? {
        return Err(anyhow::anyhow!("cancelled: nothing was changed").into());
    }
    let started = Instant::now();
    let say = |m: &str| fleet::say("docker", m);
    let binary = match goal {
        Goal::Apply(b) => Some(b),
        Goal::Destroy => None,
    };
    let opts = engine::Options { release: binary, ready_timeout: x.ready_timeout, progress: &say };
    rt.block_on(engine::execute(&docker, t, &plan, &opts))?;
    eprintln!("Done: {} steps on the engine in {:.1} s.", plan.change_count(), started.elapsed().as_secs_f64());
    Ok(())
}

pub fn status(t: &Topology, output: Output) -> Result<(), Failure> {
    let rt = runtime()?;
    let containers = rt.block_on(async {
        let docker = engine::connect(t).await?;
        engine::status(&docker, t).await
    })?;
    let healthy = |c: &dplan::ObservedContainer| c.running() && c.health.as_deref().is_none_or(|h| h == "healthy");
    let all_healthy = !containers.is_empty() && containers.iter().filter(|c| c.running()).all(healthy);
    match output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = containers
                .iter()
                .map(|c| serde_json::json!({"container": c.name, "role": c.role, "slot": c.slot, "state": c.state, "health": c.health, "healthy": healthy(c)}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"format_version": JSON_FORMAT_VERSION, "topology": t.name, "target": "docker", "containers": rows, "healthy": all_healthy}))
                    .unwrap_or_default()
            );
        }
        Output::Text => {
            // Columns as wide as their longest value (container names carry the topology's name).
            let slot_w = containers.iter().map(|c| c.slot.len()).chain([4]).max().unwrap_or(4) + 2;
            let name_w = containers.iter().map(|c| c.name.len()).chain([9]).max().unwrap_or(9) + 2;
            println!("{:<slot_w$}{:<name_w$}{:<11}HEALTH", "SLOT", "CONTAINER", "STATE");
            for c in &containers {
                println!("{:<slot_w$}{:<name_w$}{:<11}{}", c.slot, c.name, c.state, c.health.as_deref().unwrap_or("-"));
            }
            if containers.is_empty() {
                println!("nothing of topology `{}` runs on the engine: `scalectl apply -f FILE` deploys it", t.name);
            }
        }
    }
    if all_healthy { Ok(()) } else { Err(Failure::Changes) }
}
