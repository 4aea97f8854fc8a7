//! The docker planner on plain values: a topology and an observation in, steps out.

use super::*;
use crate::render::Templates;

fn topology(extra: &str) -> Topology {
    let src = format!("name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 2\n{extra}");
    crate::topology::parse("d.yaml", &src).unwrap_or_else(|p| panic!("{p}"))
}

fn release(id: &str) -> Release {
    Release { id: id.into(), bytes: 10 }
}

fn make(t: &Topology, rel: &str, secrets: &SecretValues, o: &DockerObserved) -> DockerPlan {
    let templates = Templates::embedded();
    let r = release(rel);
    let desired = desired(t, &r, secrets, 2, &templates).unwrap();
    plan(Inputs { topology: t, release: &r, dockerfile: "FROM x".into(), desired, templates: &templates }, o).unwrap()
}

/// The engine after an apply of `rel`: every desired container running, live files as written.
fn converged(t: &Topology, rel: &str) -> DockerObserved {
    let templates = Templates::embedded();
    let d = desired(t, &release(rel), &SecretValues::default(), 2, &templates).unwrap();
    let mut o = DockerObserved { network: true, volumes: vec![redis_volume(t)], image_present: true, ..Default::default() };
    for c in d.app.iter().chain([&d.lb, &d.redis, &d.prometheus]).chain(d.grafana.as_ref()) {
        o.containers.push(ObservedContainer {
            name: c.name.clone(),
            role: c.role.clone(),
            slot: c.slot.clone(),
            hash: c.hash.clone(),
            state: "running".into(),
            health: c.health.as_ref().map(|_| "healthy".into()),
            image: c.image.clone(),
        });
        for f in c.files.iter().filter(|f| f.live) {
            o.live_files.insert(format!("{}:{}", c.name, f.path), f.content.clone());
        }
    }
    o
}

fn names(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s {
            Step::BuildImage { tag, .. } => format!("build {tag}"),
            Step::CreateNetwork { name } => format!("network {name}"),
            Step::CreateVolume { name } => format!("volume {name}"),
            Step::Create { spec } => format!("create {}", spec.slot),
            Step::Start { name, .. } => format!("start {name}"),
            Step::WriteLive { path, .. } => format!("write {path}"),
            Step::Stop { name, .. } => format!("stop {}", name.rsplit_once('-').map_or(name.as_str(), |(s, _)| s)),
            Step::Remove { name, .. } => format!("remove {}", name.rsplit_once('-').map_or(name.as_str(), |(s, _)| s)),
            Step::RemoveNetwork { name } => format!("remove network {name}"),
            Step::RemoveVolume { name } => format!("remove volume {name}"),
            Step::RemoveImage { tag } => format!("remove image {tag}"),
        })
        .collect()
}

#[test]
fn a_first_apply_builds_creates_and_starts_in_dependency_order() {
    let t = topology("");
    let p = make(&t, "aaaaaaaaaaaa", &SecretValues::default(), &DockerObserved::default());
    assert_eq!(
        names(&p.activate),
        [
            "build scale-api:aaaaaaaaaaaa",
            "network d",
            "volume d-redis-data",
            "create redis",
            "create api-1",
            "create api-2",
            "create lb",
            "create prometheus",
            "create grafana"
        ]
    );
    assert!(p.cleanup.is_empty());
    // The load balancer created last already names the replicas it will find.
    let lb = p.activate.iter().find_map(|s| if let Step::Create { spec } = s { (spec.slot == "lb").then_some(spec) } else { None }).unwrap();
    let conf = &lb.live_file(NGINX_CONF).unwrap().content;
    assert!(conf.contains("server d-api-1-") && conf.contains("server d-api-2-"), "{conf}");
}

#[test]
fn a_converged_engine_needs_nothing() {
    let t = topology("");
    let p = make(&t, "aaaaaaaaaaaa", &SecretValues::default(), &converged(&t, "aaaaaaaaaaaa"));
    assert!(!p.has_changes(), "{}", render_text(&p, false));
}

#[test]
fn a_new_release_rolls_one_replica_at_a_time_behind_the_load_balancer() {
    let t = topology("");
    let mut o = converged(&t, "aaaaaaaaaaaa");
    o.image_present = false;
    let p = make(&t, "bbbbbbbbbbbb", &SecretValues::default(), &o);
    assert_eq!(
        names(&p.activate),
        [
            "build scale-api:bbbbbbbbbbbb",
            "create api-1",
            format!("write {NGINX_CONF}").as_str(),
            format!("write {TARGETS_JSON}").as_str(),
            "stop d-api-1",
            "create api-2",
            format!("write {NGINX_CONF}").as_str(),
            format!("write {TARGETS_JSON}").as_str(),
            "stop d-api-2",
        ]
    );
    assert_eq!(names(&p.cleanup), ["remove d-api-1", "remove d-api-2"]);
    // The first rewrite has the new api-1 and the old api-2; each write records what it replaces.
    let writes: Vec<(&String, &String)> =
        p.activate.iter().filter_map(|s| if let Step::WriteLive { path, content, previous, .. } = s { (path == NGINX_CONF).then_some((content, previous)) } else { None }).collect();
    assert_eq!(writes[1].1, writes[0].0, "the second write undoes to the first");
    let new_api_1 = p.activate.iter().find_map(|s| if let Step::Create { spec } = s { Some(spec.name.clone()) } else { None }).unwrap();
    assert!(writes[0].0.contains(&format!("server {new_api_1}:3000")));
    assert!(!writes[0].1.contains(&new_api_1));
}

#[test]
fn scaling_in_takes_replicas_out_of_the_upstream_before_stopping_them() {
    let four = topology("").clone();
    let t4 = crate::topology::parse("d.yaml", "name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 4\n").unwrap();
    let p = make(&four, "aaaaaaaaaaaa", &SecretValues::default(), &converged(&t4, "aaaaaaaaaaaa"));
    assert_eq!(names(&p.activate), [format!("write {NGINX_CONF}"), format!("write {TARGETS_JSON}"), "stop d-api-3".into(), "stop d-api-4".into()]);
    assert_eq!(names(&p.cleanup), ["remove d-api-3", "remove d-api-4"]);
}

#[test]
fn a_stopped_container_is_started_and_drift_in_a_live_file_is_written_back() {
    let t = topology("");
    let mut o = converged(&t, "aaaaaaaaaaaa");
    o.containers.iter_mut().find(|c| c.slot == "api-2").unwrap().state = "exited".into();
    let lb = o.containers.iter().find(|c| c.slot == "lb").unwrap().name.clone();
    o.live_files.insert(format!("{lb}:{NGINX_CONF}"), "edited by hand\n".into());
    let p = make(&t, "aaaaaaaaaaaa", &SecretValues::default(), &o);
    let n = names(&p.activate);
    assert!(n[0].starts_with("start d-api-2-"), "{n:?}");
    assert_eq!(n[1], format!("write {NGINX_CONF}"));
    assert_eq!(n.len(), 2, "{n:?}");
}

#[test]
fn the_spec_hash_covers_the_environment_but_not_live_files() {
    let a = topology("");
    let b = topology("  env: {FEATURE: on}\n");
    let templates = Templates::embedded();
    let da = desired(&a, &release("r"), &SecretValues::default(), 2, &templates).unwrap();
    let db = desired(&b, &release("r"), &SecretValues::default(), 2, &templates).unwrap();
    assert_ne!(da.app[0].name, db.app[0].name, "an env change is a new replica");
    // The lb's config names the replicas, so it changed, but the lb container is the same one.
    assert_eq!(da.lb.name, db.lb.name);
}

#[test]
fn secret_values_change_the_hash_but_never_reach_the_printed_plan() {
    let t = crate::topology::parse(
        "d.yaml",
        "name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 1\n  secrets: {API_KEY: {env: D_API_KEY}}\nredis:\n  password: {env: D_REDIS}\n",
    )
    .unwrap();
    let secrets = |v: &str| SecretValues { app: vec![("API_KEY".into(), v.into())], redis_password: Some(format!("{v}-redis")), ..Default::default() };
    let p1 = make(&t, "aaaaaaaaaaaa", &secrets("hunter2-first"), &DockerObserved::default());
    let p2 = make(&t, "aaaaaaaaaaaa", &secrets("hunter2-second"), &DockerObserved::default());
    assert_ne!(p1, p2, "a changed secret is a new container");
    let shown = format!("{}{}", serde_json::to_string(&p1.redacted()).unwrap(), render_text(&p1.redacted(), false));
    assert!(!shown.contains("hunter2"), "{shown}");
    // The unredacted plan (executed, never printed) carries them to the engine.
    let all = serde_json::to_string(&p1).unwrap();
    assert!(all.contains("hunter2-first") && all.contains(r#"requirepass \"hunter2-first-redis\""#), "{all}");
}

#[test]
fn destroy_removes_only_what_was_observed_by_label() {
    let t = topology("");
    let mut o = converged(&t, "aaaaaaaaaaaa");
    o.images = vec![ObservedImage { tag: "scale-api:aaaaaaaaaaaa".into(), created: 1 }];
    let p = destroy_plan(&t, &o);
    assert_eq!(p.cleanup.len(), o.containers.len() + 3);
    assert!(p.cleanup.contains(&Step::RemoveVolume { name: "d-redis-data".into() }));
    assert!(matches!(p.cleanup.last(), Some(Step::RemoveImage { tag }) if tag == "scale-api:aaaaaaaaaaaa"));
    assert!(destroy_plan(&t, &DockerObserved::default()).cleanup.is_empty());
}

#[test]
fn the_release_image_keeps_the_repository_and_tags_the_release() {
    let t = topology("docker:\n  images: {scale_api: registry.example.com:5000/team/scale-api:latest}\n");
    assert_eq!(release_image(&t, &release("abc")), "registry.example.com:5000/team/scale-api:abc");
    let t = topology("docker:\n  images: {scale_api: registry.example.com:5000/scale-api}\n");
    assert_eq!(release_image(&t, &release("abc")), "registry.example.com:5000/scale-api:abc");
}

fn images(tags_created: &[(&str, i64)]) -> Vec<ObservedImage> {
    tags_created.iter().map(|(t, c)| ObservedImage { tag: format!("scale-api:{t}"), created: *c }).collect()
}

#[test]
fn release_images_beyond_the_last_three_are_removed_unless_a_container_uses_them() {
    let t = topology("");
    let mut o = converged(&t, "dddddddddddd");
    o.images = images(&[("aaaaaaaaaaaa", 100), ("bbbbbbbbbbbb", 200), ("cccccccccccc", 300), ("dddddddddddd", 50), ("eeeeeeeeeeee", 400)]);
    // The deployed one (whatever its age), then the two newest others; the rest goes.
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    assert!(p.activate.is_empty());
    assert_eq!(names(&p.cleanup), ["remove image scale-api:bbbbbbbbbbbb", "remove image scale-api:aaaaaaaaaaaa"]);
    assert!(render_text(&p, false).contains("  - image scale-api:aaaaaaaaaaaa (older than the last 3 releases)"));

    // An old image that a kept container still runs stays.
    o.containers[0].image = "scale-api:aaaaaaaaaaaa".into();
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    assert_eq!(names(&p.cleanup), ["remove image scale-api:bbbbbbbbbbbb"]);

    // Three or fewer: nothing to prune, nothing planned.
    o.images.truncate(3);
    assert!(!make(&t, "dddddddddddd", &SecretValues::default(), &o).has_changes());
}

#[test]
fn the_image_of_a_replaced_replica_is_pruned_with_it_only_when_old_enough() {
    let t = topology("");
    // Four images; the replicas run the oldest and are replaced by the newest release.
    let mut o = converged(&t, "aaaaaaaaaaaa");
    o.image_present = true;
    o.images = images(&[("aaaaaaaaaaaa", 100), ("bbbbbbbbbbbb", 200), ("cccccccccccc", 300), ("dddddddddddd", 400)]);
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    let cleanup = names(&p.cleanup);
    assert_eq!(cleanup.last().map(String::as_str), Some("remove image scale-api:aaaaaaaaaaaa"), "{cleanup:?}");
    assert!(cleanup.iter().filter(|s| s.starts_with("remove d-api")).count() == 2, "{cleanup:?}");
}
