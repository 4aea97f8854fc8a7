//! The docker planner on plain values: a topology and an observation in, steps out.

use super::*;
use crate::render::{SecretValues, Templates};

fn topology(extra: &str) -> Topology {
    let src = format!("name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 2\n{extra}");
    crate::topology::parse("d.yaml", &src).unwrap_or_else(|p| panic!("{p}"))
}

fn release(id: &str) -> Release {
    Release { id: id.into(), bytes: 10, archive: false, image: None }
}

fn engine() -> Engine {
    Engine { cores: 2, data_root: "/srv/docker".into(), digest_key: "engine-id-of-the-tests".into() }
}

fn make(t: &Topology, rel: &str, secrets: &SecretValues, o: &DockerObserved) -> DockerPlan {
    let templates = Templates::embedded();
    let r = release(rel);
    let desired = desired(t, &r, secrets, &engine(), &templates).unwrap();
    plan(Inputs { topology: t, release: &r, desired, templates: &templates }, o).unwrap()
}

/// The engine after an apply of `rel`: every desired container running, live files as written.
fn converged(t: &Topology, rel: &str) -> DockerObserved {
    converged_with(t, rel, &SecretValues::default())
}

fn converged_with(t: &Topology, rel: &str, secrets: &SecretValues) -> DockerObserved {
    let templates = Templates::embedded();
    let d = desired(t, &release(rel), secrets, &engine(), &templates).unwrap();
    let mut o = DockerObserved { network: true, image_present: true, log_image_present: true, ..Default::default() };
    o.volumes = d.volumes().into_iter().map(String::from).collect();
    for c in d.containers() {
        o.containers.push(ObservedContainer {
            name: c.name.clone(),
            role: c.role.clone(),
            slot: c.slot.clone(),
            hash: c.hash.clone(),
            state: "running".into(),
            health: c.health.as_ref().map(|_| "healthy".into()),
            image: c.image.clone(),
            previous: String::new(),
            exit_code: None,
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
            Step::BuildImage { tag, .. } | Step::BuildLogImage { tag, .. } => format!("build {tag}"),
            Step::CreateNetwork { name } => format!("network {name}"),
            Step::CreateVolume { name } => format!("volume {name}"),
            Step::Create { spec } => format!("create {}", spec.slot),
            Step::RunRelease { spec } => format!("release command {}", spec.cmd.join(" ")),
            Step::Start { name, .. } => format!("start {name}"),
            Step::WriteLive { path, .. } => format!("write {path}"),
            Step::Drain { server, .. } => format!("drain {server}"),
            Step::Serve { server, replica, .. } => format!("serve {server} {}", replica.rsplit_once('-').map_or(replica.as_str(), |(s, _)| s)),
            Step::ReloadBalancer { .. } => "reload balancer".to_string(),
            Step::Stop { name, .. } => format!("stop {}", name.rsplit_once('-').map_or(name.as_str(), |(s, _)| s)),
            Step::Remove { name, .. } => format!("remove {}", name.rsplit_once('-').map_or(name.as_str(), |(s, _)| s)),
            Step::RemoveNetwork { name } => format!("remove network {name}"),
            Step::RemoveVolume { name } => format!("remove volume {name}"),
            Step::RemoveImage { tag, .. } => format!("remove image {tag}"),
            Step::Credentials { credentials, phase, .. } => format!("{} {phase:?}", credentials.pending()),
        })
        .collect()
}

#[test]
fn a_first_apply_builds_creates_and_starts_in_dependency_order() {
    let t = topology("");
    let p = make(&t, "aaaaaaaaaaaa", &SecretValues::default(), &DockerObserved::default());
    let mut steps = names(&p.activate);
    assert!(steps[1].starts_with("build scalectl-tools:"), "{steps:?}");
    steps[1] = "build scalectl-tools:HASH".into();
    assert_eq!(
        steps,
        [
            "build scale-api:aaaaaaaaaaaa",
            "build scalectl-tools:HASH",
            "network d",
            "volume d-redis-data",
            "volume d-lb-log",
            "volume d-logs",
            "volume d-logship",
            "create redis",
            "create api-1",
            "create api-2",
            "create balancer",
            "create lb",
            "create prometheus",
            "create grafana",
            "create node-exporter",
            "create redis-exporter",
            "create nginx-exporter",
            "create mtail",
            "create collector",
            "create logship"
        ]
    );
    assert!(p.cleanup.is_empty());
    // The release image is built from the rendered Dockerfile, the one `render` writes to out/docker.
    let rendered = crate::render::render(&t, &crate::render::Facts::with_default_cores(2), &Templates::embedded()).unwrap();
    let bundle = &rendered.iter().find(|f| f.host == "docker" && f.path == "Dockerfile").unwrap().content;
    assert!(matches!(&p.activate[0], Step::BuildImage { dockerfile, .. } if dockerfile == bundle && dockerfile.contains("COPY scale-api ")));
    // The balancer, created after them, already names the replicas it will find; nginx names
    // only the balancer.
    let created = |slot: &str| p.activate.iter().find_map(|s| if let Step::Create { spec } = s { (spec.slot == slot).then_some(spec) } else { None }).unwrap();
    let balancer = &created("balancer").live_file(BALANCER_CONF).unwrap().content;
    assert!(balancer.contains("server api-1:3000 d-api-1-") && balancer.contains("server api-2:3000 d-api-2-"), "{balancer}");
    let conf = &created("lb").live_file(NGINX_CONF).unwrap().content;
    assert!(conf.contains("server balancer:8404 max_fails=0;") && !conf.contains("d-api-"), "{conf}");
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
            "drain api-1:3000",
            "stop d-api-1",
            "serve api-1:3000 d-api-1",
            format!("write {BALANCER_CONF}").as_str(),
            format!("write {TARGETS_JSON}").as_str(),
            "create api-2",
            "drain api-2:3000",
            "stop d-api-2",
            "serve api-2:3000 d-api-2",
            format!("write {BALANCER_CONF}").as_str(),
            format!("write {TARGETS_JSON}").as_str(),
        ]
    );
    assert_eq!(names(&p.cleanup), ["remove d-api-1", "remove d-api-2"]);
    // Each slot's server leaves while its old replica serves it and comes back pointed at the new
    // one, through the runtime API: nginx's site and the balancer's process stay as they are.
    let old_api_1 = o.containers.iter().find(|c| c.slot == "api-1").unwrap().name.clone();
    let new_api_1 = p.activate.iter().find_map(|s| if let Step::Create { spec } = s { Some(spec.name.clone()) } else { None }).unwrap();
    assert!(p.activate.iter().any(|s| matches!(s, Step::Drain { server, replica, .. } if server == "api-1:3000" && *replica == old_api_1)));
    assert!(p.activate.iter().any(|s| matches!(s, Step::Serve { server, replica, .. } if server == "api-1:3000" && *replica == new_api_1)));
    assert!(!p.activate.iter().any(|s| matches!(s, Step::ReloadBalancer { .. })), "no reload in a roll");
    // The balancer's file follows, for its next start: the first write has the new api-1 and the
    // old api-2, and each write records what it replaces.
    let writes: Vec<(&String, &String)> =
        p.activate.iter().filter_map(|s| if let Step::WriteLive { path, content, previous, .. } = s { (path == BALANCER_CONF).then_some((content, previous)) } else { None }).collect();
    assert_eq!(writes[1].1, writes[0].0, "the second write undoes to the first");
    assert!(writes[0].0.contains(&format!("server api-1:3000 {new_api_1}:3000")));
    assert!(!writes[0].1.contains(&new_api_1));
    for s in &p.activate {
        if let Step::WriteLive { path, commands, old_workers_wait_s, .. } = s {
            assert!(old_workers_wait_s.is_none() && (path != BALANCER_CONF || commands[0][0] == "haproxy"), "{path}: {commands:?}");
        }
    }
}

/// A changed setting of the balancer (its health check's path) reloads it: the runtime API
/// changes only servers; a new release alone reloads nothing (above).
#[test]
fn a_changed_health_path_rewrites_and_reloads_the_balancer() {
    let t = topology("");
    let o = converged(&t, "aaaaaaaaaaaa");
    let changed = topology("  health: {liveness: /alive, readiness: /ready}\n");
    let p = make(&changed, "aaaaaaaaaaaa", &SecretValues::default(), &o);
    let steps = names(&p.activate);
    let write = steps.iter().position(|s| *s == format!("write {BALANCER_CONF}")).unwrap_or_else(|| panic!("{steps:?}"));
    assert_eq!(steps[write + 1], "reload balancer", "{steps:?}");
    let Step::WriteLive { content, .. } = &p.activate[write] else { panic!() };
    assert!(content.contains("option httpchk GET /alive\n"), "{content}");
}

#[test]
fn scaling_in_takes_replicas_out_of_the_upstream_before_stopping_them() {
    let four = topology("").clone();
    let t4 = crate::topology::parse("d.yaml", "name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 4\n").unwrap();
    let p = make(&four, "aaaaaaaaaaaa", &SecretValues::default(), &converged(&t4, "aaaaaaaaaaaa"));
    assert_eq!(
        names(&p.activate),
        ["drain api-3:3000".to_string(), "drain api-4:3000".into(), format!("write {BALANCER_CONF}"), "reload balancer".into(), format!("write {TARGETS_JSON}"), "stop d-api-3".into(), "stop d-api-4".into()]
    );
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
    let da = desired(&a, &release("r"), &SecretValues::default(), &engine(), &templates).unwrap();
    let db = desired(&b, &release("r"), &SecretValues::default(), &engine(), &templates).unwrap();
    assert_ne!(da.app[0].name, db.app[0].name, "an env change is a new replica");
    // The lb's config names the replicas, so it changed, but the lb container is the same one.
    assert_eq!(da.service("lb").unwrap().name, db.service("lb").unwrap().name);
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
    for digest in [crate::plan::sha256_hex(b"hunter2-first"), crate::plan::sha256_hex(b"hunter2-first-redis")] {
        assert!(!shown.contains(&digest), "a secret's digest is shown: {shown}");
    }
    // The unredacted plan (executed, never printed) carries them to the engine.
    let all = serde_json::to_string(&p1).unwrap();
    let acl = format!("user default on #{}", crate::plan::sha256_hex(b"hunter2-first-redis"));
    assert!(all.contains("hunter2-first") && all.contains(&acl), "{all}");
}

/// A container's name and spec hash are shown in plans; the secrets' digests inside them are keyed
/// by the engine, so whoever reads a plan cannot test a guessed password against them.
#[test]
fn a_secrets_digest_in_a_spec_hash_is_keyed_by_the_engine() {
    let t = crate::topology::parse(
        "d.yaml",
        "name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 1\n  secrets: {API_KEY: {env: D_API_KEY}}\nredis:\n  password: {env: D_REDIS}\n",
    )
    .unwrap();
    let s = SecretValues { app: vec![("API_KEY".into(), "hunter2".into())], redis_password: Some("hunter2-redis".into()), ..Default::default() };
    let templates = Templates::embedded();
    let rel = release("aaaaaaaaaaaa");
    let a = desired(&t, &rel, &s, &engine(), &templates).unwrap();
    assert_eq!(a.app[0].hash, desired(&t, &rel, &s, &engine(), &templates).unwrap().app[0].hash, "one engine, one hash (a saved plan plans it again)");
    let b = desired(&t, &rel, &s, &Engine { digest_key: "another-engine".into(), ..engine() }, &templates).unwrap();
    assert_ne!(a.app[0].hash, b.app[0].hash);
    assert_ne!(a.service("redis").unwrap().hash, b.service("redis").unwrap().hash);
    // What a plan's reader could compute from a guessed (here: the right) password does not give it.
    let mut guess = a.app[0].clone();
    for e in &mut guess.secret_env {
        e.value_sha256 = crate::plan::sha256_hex(e.value.as_bytes());
    }
    assert_ne!(guess.sealed("d").hash, a.app[0].hash);
    let redis = a.service("redis").unwrap();
    let mut guess = redis.clone();
    for f in guess.files.iter_mut().filter(|f| f.sensitive) {
        f.content_sha256 = crate::plan::sha256_hex(f.content.as_bytes());
    }
    assert_ne!(guess.sealed("d").hash, redis.hash);
}

#[test]
fn destroy_removes_only_what_was_observed_by_label() {
    let t = topology("");
    let mut o = converged(&t, "aaaaaaaaaaaa");
    o.images = vec![ObservedImage { tag: "scale-api:aaaaaaaaaaaa".into(), created: 1, role: String::new() }];
    let p = destroy_plan(&t, &o);
    assert_eq!(p.cleanup.len(), o.containers.len() + 1 + o.volumes.len() + 1);
    assert!(p.cleanup.contains(&Step::RemoveVolume { name: "d-redis-data".into() }));
    assert!(matches!(p.cleanup.last(), Some(Step::RemoveImage { tag, .. }) if tag == "scale-api:aaaaaaaaaaaa"));
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
    tags_created.iter().map(|(t, c)| ObservedImage { tag: format!("scale-api:{t}"), created: *c, role: String::new() }).collect()
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

    // An old image a replica runs now is the next rollback's target: it stays, and counts.
    let r = o.containers.iter().position(|c| c.role == "app").unwrap();
    o.containers[r].image = "scale-api:aaaaaaaaaaaa".into();
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    assert_eq!(names(&p.cleanup), ["remove image scale-api:cccccccccccc", "remove image scale-api:bbbbbbbbbbbb"]);
    // As does the previous release a replica recorded.
    o.containers[r].image = "scale-api:dddddddddddd".into();
    o.containers[r].previous = "scale-api:aaaaaaaaaaaa".into();
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    assert_eq!(names(&p.cleanup), ["remove image scale-api:cccccccccccc", "remove image scale-api:bbbbbbbbbbbb"]);
    o.containers[r].previous.clear();

    // Three or fewer: nothing to prune, nothing planned.
    o.images = images(&[("bbbbbbbbbbbb", 200), ("dddddddddddd", 50), ("eeeeeeeeeeee", 400)]);
    assert!(!make(&t, "dddddddddddd", &SecretValues::default(), &o).has_changes());
}

#[test]
fn the_image_a_replaced_replica_ran_stays_for_rollback_whatever_its_age() {
    let t = topology("");
    // Four images; the replicas run the oldest and are replaced by the newest release.
    let mut o = converged(&t, "aaaaaaaaaaaa");
    o.image_present = true;
    o.images = images(&[("aaaaaaaaaaaa", 100), ("bbbbbbbbbbbb", 200), ("cccccccccccc", 300), ("dddddddddddd", 400)]);
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    let cleanup = names(&p.cleanup);
    assert_eq!(cleanup.last().map(String::as_str), Some("remove image scale-api:bbbbbbbbbbbb"), "{cleanup:?}");
    assert!(cleanup.iter().filter(|s| s.starts_with("remove d-api")).count() == 2, "{cleanup:?}");
    // The new replicas record the release they replace: rollback's target.
    assert!(p.activate.iter().any(|s| matches!(s, Step::Create { spec } if spec.slot == "api-1" && spec.previous == "scale-api:aaaaaaaaaaaa")), "{:?}", names(&p.activate));
}

fn spec<'a>(steps: &'a [Step], slot: &str) -> &'a ContainerSpec {
    steps.iter().find_map(|s| if let Step::Create { spec } = s { (spec.slot == slot).then_some(spec) } else { None }).unwrap()
}

#[test]
fn logs_ship_from_the_engines_json_files_to_a_collector_container() {
    let t = topology("");
    let p = make(&t, "aaaaaaaaaaaa", &SecretValues::default(), &DockerObserved::default());
    let steps = names(&p.activate);
    // The log image is built up front (a failed build changes nothing), its volumes with the others,
    // the collector and the shipper after the services they do not depend on.
    let log_image = steps.iter().find(|s| s.starts_with("build scalectl-tools:")).unwrap();
    assert_eq!(steps.iter().position(|s| s == log_image), Some(1), "{steps:?}");
    for v in ["volume d-logs", "volume d-logship"] {
        assert!(steps.iter().any(|s| s == v), "{steps:?}");
    }
    assert_eq!(&steps[steps.len() - 2..], ["create collector", "create logship"]);

    // Every replica's lines carry the labels the shipper filters on.
    let api = spec(&p.activate, "api-1");
    assert_eq!(api.log_opts.get("labels").map(String::as_str), Some("scalectl.topology,scalectl.slot,scalectl.role"));
    // The shipper reads the engine's own data root, read-only, and keeps its place on a volume.
    let shipper = spec(&p.activate, "logship");
    assert_eq!(shipper.binds_ro, [("/srv/docker/containers".to_string(), ENGINE_CONTAINERS.to_string())]);
    assert_eq!(shipper.volumes, [("d-logship".to_string(), "/var/spool/rsyslog".to_string())]);
    assert!(shipper.cap_drop_all && spec(&p.activate, "collector").cap_drop_all);
    let conf = &shipper.files[0].content;
    assert!(conf.contains(r#"$!attrs!scalectl.topology == "d""#) && conf.contains(r#"target="collector" port="2514""#), "{conf}");
    assert!(conf.contains("queue.filename=") && conf.contains(r#"action.resumeRetryCount="-1""#), "{conf}");
    let collector = spec(&p.activate, "collector");
    assert_eq!(collector.aliases, ["collector"]);
    assert_eq!(collector.volumes, [("d-logs".to_string(), "/var/log/scalectl".to_string())]);
    assert!(collector.files[0].content.contains(r#"input(type="imrelp" port="2514""#));

    // Another data root is another shipper (a new container), the replicas unchanged.
    let templates = Templates::embedded();
    let other = desired(&t, &release("aaaaaaaaaaaa"), &SecretValues::default(), &Engine { cores: 2, data_root: "/var/lib/docker/".into(), digest_key: "engine-id-of-the-tests".into() }, &templates).unwrap();
    assert_eq!(other.service("logship").unwrap().binds_ro[0].0, "/var/lib/docker/containers");
    assert_ne!(other.service("logship").unwrap().name, shipper.name);
    assert_eq!(other.app[0].name, api.name);
}

#[test]
fn log_images_other_than_the_wanted_one_go_release_images_are_counted_apart() {
    let t = topology("");
    let mut o = converged(&t, "dddddddddddd");
    let wanted = make(&t, "dddddddddddd", &SecretValues::default(), &DockerObserved::default())
        .activate
        .iter()
        .find_map(|s| if let Step::BuildLogImage { tag, .. } = s { Some(tag.clone()) } else { None })
        .unwrap();
    o.images = images(&[("bbbbbbbbbbbb", 200), ("cccccccccccc", 300), ("dddddddddddd", 400)]);
    for (tag, created) in [(wanted.as_str(), 500), ("scalectl-tools:0123456789ab", 10)] {
        o.images.push(ObservedImage { tag: tag.into(), created, role: ROLE_LOGS.into() });
    }
    let p = make(&t, "dddddddddddd", &SecretValues::default(), &o);
    assert!(p.activate.is_empty(), "{:?}", names(&p.activate));
    assert_eq!(names(&p.cleanup), ["remove image scalectl-tools:0123456789ab"]);
    assert!(render_text(&p, false).contains("(a log image no longer used)"));
}

#[test]
fn exporters_run_beside_the_services_and_prometheus_scrapes_them_by_name() {
    let t = topology("redis: {password: {env: D_REDIS}}\n");
    let secrets = SecretValues { redis_password: Some("s3cret".into()), ..Default::default() };
    let p = make(&t, "aaaaaaaaaaaa", &secrets, &DockerObserved::default());
    let node = spec(&p.activate, "node-exporter");
    assert!(node.pid_host && node.binds_ro == [("/".to_string(), "/host".to_string())] && node.cmd == ["--path.rootfs=/host"], "{node:?}");
    let redis = spec(&p.activate, "redis-exporter");
    assert_eq!(redis.env, ["REDIS_ADDR=redis://redis:6379", "REDIS_USER=scalectl-exporter"]);
    assert_eq!(redis.secret_env.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["REDIS_PASSWORD"]);
    assert_eq!(spec(&p.activate, "nginx-exporter").cmd, ["--nginx.scrape-uri=http://lb:8089/stub_status"]);
    // The load balancer answers stub_status on the network (not published), Prometheus has the targets.
    let lb = &spec(&p.activate, "lb").live_file(NGINX_CONF).unwrap().content;
    assert!(lb.contains("    listen 8089;\n") && !lb.contains("listen 127.0.0.1:8089"), "{lb}");
    let targets = &spec(&p.activate, "prometheus").live_file(TARGETS_JSON).unwrap().content;
    for target in ["node-exporter:9100", "redis-exporter:9121", "nginx-exporter:9113"] {
        assert!(targets.contains(target), "{targets}");
    }
    // The printed plan names the secret's holder but never its value.
    assert!(!p.redacted().steps().any(|s| format!("{s:?}").contains("s3cret")));
}

#[test]
fn reload_takes_each_replica_out_of_the_upstream_restarts_it_and_puts_it_back() {
    let t = topology("");
    let o = converged(&t, "aaaaaaaaaaaa");
    let p = reload_plan(&t, &o, &Templates::embedded()).unwrap();
    assert_eq!(
        names(&p.activate).iter().map(|s| if s.starts_with("start ") { s.rsplit_once('-').unwrap().0.to_string() } else { s.clone() }).collect::<Vec<_>>(),
        [
            "drain api-1:3000",
            "stop d-api-1",
            "start d-api-1",
            "serve api-1:3000 d-api-1",
            "drain api-2:3000",
            "stop d-api-2",
            "start d-api-2",
            "serve api-2:3000 d-api-2",
        ]
    );
    // Each comes back pointed at itself (the engine may have given it another address).
    let api = |slot: &str| o.containers.iter().find(|c| c.slot == slot).unwrap().name.clone();
    assert!(matches!(&p.activate[3], Step::Serve { replica, .. } if *replica == api("api-1")));
    assert!(p.cleanup.is_empty(), "reload removes nothing");
}

#[test]
fn rollback_picks_the_newest_release_image_the_replicas_do_not_run() {
    let t = topology("");
    let mut o = converged(&t, "bbbbbbbbbbbb");
    let image = |tag: &str, created: i64| ObservedImage { tag: format!("scale-api:{tag}"), created, role: String::new() };
    o.images = vec![image("aaaaaaaaaaaa", 10), image("bbbbbbbbbbbb", 30), image("cccccccccccc", 20), ObservedImage { role: ROLE_LOGS.into(), ..image("zzz", 40) }];
    assert_eq!(previous_release(&t, &o).unwrap().id, "cccccccccccc");
    // The release the replicas recorded wins over build order (a broken release built later,
    // a release never deployed).
    for c in o.containers.iter_mut().filter(|c| c.role == "app") {
        c.previous = "scale-api:aaaaaaaaaaaa".into();
    }
    assert_eq!(previous_release(&t, &o).unwrap().id, "aaaaaaaaaaaa");
    o.images.retain(|i| !i.tag.ends_with("aaaaaaaaaaaa"));
    assert!(previous_release(&t, &o).unwrap_err().contains("no longer on the engine"));
    for c in o.containers.iter_mut() {
        c.previous.clear();
    }
    o.images.retain(|i| i.tag.ends_with("bbbbbbbbbbbb"));
    assert!(previous_release(&t, &o).unwrap_err().contains("no earlier release image"));
}

#[test]
fn mtail_reads_the_load_balancers_log_over_a_socket_on_a_volume_they_share() {
    let t = topology("");
    let p = make(&t, "aaaaaaaaaaaa", &SecretValues::default(), &DockerObserved::default());
    let (lb, mtail) = (spec(&p.activate, "lb"), spec(&p.activate, "mtail"));
    let shared = (lb_log_volume(&t), LB_LOG_DIR.to_string());
    assert!(lb.volumes.contains(&shared) && mtail.volumes.contains(&shared), "{:?} {:?}", lb.volumes, mtail.volumes);
    let conf = &lb.files.iter().find(|f| f.path == "/etc/nginx/conf.d/default.conf").unwrap().content;
    let socket = format!("syslog:server=unix:{LB_LOG_DIR}/access.sock,");
    assert!(conf.contains(&socket) && conf.contains("access_log /dev/stdout "), "{conf}");
    assert!(mtail.cmd.join(" ").contains(&format!("unixgram://{LB_LOG_DIR}/access.sock")), "{:?}", mtail.cmd);
    assert!(mtail.files[0].content.contains("scalectl_nginx_upstream_responses_total"));
    assert!(mtail.cap_drop_all && mtail.image.starts_with("scalectl-tools:"));
    // Prometheus scrapes it with the load balancer's other series.
    let targets = &spec(&p.activate, "prometheus").files.iter().find(|f| f.path == TARGETS_JSON).unwrap().content;
    assert!(targets.contains(r#""mtail:3903""#) && targets.contains(r#""nginx-log""#), "{targets}");
}

/// The compose bundle's Redis start (templates/docker/commands.yaml.j2) names, as literals, what
/// the code defines: the password's secret file, the mounted users template and its placeholder,
/// and the users file redis.conf includes (where apply writes it on the engine).
#[test]
fn the_compose_redis_start_names_the_paths_the_bundle_and_apply_use() {
    let t = topology("redis: {password: {env: D_REDIS}}\n");
    let templates = Templates::embedded();
    let script = &desired::commands(&desired::rendered(&t, &[], &templates).unwrap()).unwrap().compose_redis_entrypoint[2];
    let values = SecretValues { redis_password: Some("pw".into()), ..Default::default() };
    let users = crate::render::render_secrets(&t, &values, &templates).unwrap().into_iter().find(|f| f.content.contains("user default")).unwrap().path;
    let admin = crate::render::DOCKER_REDIS_ADMIN_CONF.to_string();
    for want in [format!("{SECRETS_DIR}/REDIS_PASSWORD"), compose::COMPOSE_REDIS_AUTH_TEMPLATE.into(), crate::render::REDIS_PASSWORD_SHA256_PLACEHOLDER.into(), users.clone(), admin.clone()] {
        assert!(script.contains(&want), "the Redis start does not name {want}: {script}");
    }
    // And redis.conf includes the two files where apply and the bundle write them.
    let conf = desired::rendered(&t, &[], &templates).unwrap().remove("redis/redis.conf").unwrap();
    for want in [users, admin] {
        assert!(conf.contains(&format!("include {want}\n")), "redis.conf does not include {want}: {conf}");
    }
}

/// A new Redis password changes Redis' users live in the Redis that runs (its data and clients
/// kept): added before the first replica is created with the new password, settled once every
/// replica and the exporter have it; an apply that stopped in between settles on the next.
#[test]
fn a_new_redis_password_changes_the_users_live_and_settles_after_every_replica() {
    let t = topology("redis: {password: {env: D_REDIS}}\n");
    let pw = |v: &str| SecretValues { redis_password: Some(v.into()), ..Default::default() };
    let o = converged_with(&t, "aaaaaaaaaaaa", &pw("old-pass"));
    assert!(!make(&t, "aaaaaaaaaaaa", &pw("old-pass"), &o).has_changes(), "the same password plans nothing");
    let p = make(&t, "aaaaaaaaaaaa", &pw("new-pass"), &o);
    let n = names(&p.activate);
    let at = |step: &str| n.iter().position(|s| s == step).unwrap_or_else(|| panic!("no {step}: {n:?}"));
    assert!(!n.contains(&"create redis".to_string()) && !names(&p.cleanup).contains(&"remove d-redis".to_string()), "Redis is kept: {n:?}");
    assert!(at("redis-users Add") < at("create api-1") && at("create api-2") < at("redis-users Settle"), "{n:?}");
    assert!(at("create redis-exporter") < at("redis-users Settle") && at("redis-users Settle") == n.len() - 1, "{n:?}");
    let Step::Credentials { content, .. } = &p.activate[at("redis-users Add")] else { unreachable!() };
    assert!(content.contains(&crate::plan::sha256_hex(b"new-pass")), "{content}");
    let shown = format!("{}{}", serde_json::to_string(&p.redacted()).unwrap(), render_text(&p.redacted(), false));
    assert!(!shown.contains(&crate::plan::sha256_hex(b"new-pass")) && shown.contains("the old ones still work"), "{shown}");
    // Added and never settled: the next apply settles, and only that.
    let mut o = converged_with(&t, "aaaaaaaaaaaa", &pw("new-pass"));
    o.credentials_pending = vec![crate::plan::Credentials::Redis];
    assert_eq!(names(&make(&t, "aaaaaaaaaaaa", &pw("new-pass"), &o).activate), ["redis-users Settle"]);
}

#[test]
fn each_replica_runs_the_program_with_its_own_port_and_instance_name_in_its_arguments() {
    let src = "name: d\ntarget: docker\napp:\n  port: 8000\n  instances: 2\n  program:\n    image: py:1\n    command: [python3, -m, http.server, \"$(PORT)\", --directory, \"/srv/$(INSTANCE)\", \"$$(kept)\"]\n";
    let t = crate::topology::parse("d.yaml", src).unwrap_or_else(|p| panic!("{p}"));
    let d = desired(&t, &release("r1"), &SecretValues::default(), &engine(), &Templates::embedded()).unwrap();
    let argvs: Vec<Vec<String>> = d.app.iter().map(|c| c.cmd.clone()).collect();
    assert_eq!(
        argvs,
        [1, 2].map(|i| ["python3", "-m", "http.server", "8000", "--directory", &format!("/srv/api-{i}-8000"), "$(kept)"].map(String::from).to_vec())
    );
    // The same values the replica's environment gives it.
    assert!(d.app[1].env.contains(&"INSTANCE=api-2-8000".to_string()), "{:?}", d.app[1].env);
}

#[test]
fn a_program_without_a_redis_section_runs_no_redis_and_a_redis_left_from_before_goes() {
    let src = "name: d\ntarget: docker\napp:\n  port: 3000\n  instances: 2\n  program: {image: web:1, command: [node, bin/www]}\n";
    let t = crate::topology::parse("d.yaml", src).unwrap_or_else(|p| panic!("{p}"));
    let d = desired(&t, &release("r1"), &SecretValues::default(), &engine(), &Templates::embedded()).unwrap();
    let slots: Vec<&str> = d.containers().iter().map(|c| c.slot.as_str()).collect();
    assert!(!slots.iter().any(|s| s.contains("redis")), "{slots:?}");
    assert!(d.app.iter().all(|c| !c.env.iter().any(|e| e.starts_with("REDIS"))), "{:?}", d.app[0].env);
    // The same program with Redis asked for, converged; then the section removed.
    let with = crate::topology::parse("d.yaml", &format!("{src}redis: {{persistence: none}}\n")).unwrap_or_else(|p| panic!("{p}"));
    let o = converged(&with, "r1");
    assert!(o.containers.iter().any(|c| c.slot == "redis") && o.containers.iter().any(|c| c.slot == "redis-exporter"));
    let p = make(&t, "r1", &SecretValues::default(), &o);
    let steps = names(&p.activate.iter().chain(&p.cleanup).cloned().collect::<Vec<_>>());
    for gone in ["redis", "redis-exporter"] {
        assert!(steps.contains(&format!("stop d-{gone}")) && steps.contains(&format!("remove d-{gone}")), "{steps:?}");
    }
}

const WORKERS: &str = "  workers: {command: [scale-api, worker], instances: 2, queue: {kind: stream, name: jobs}, drain_timeout: 20s}\nredis: {persistence: none}\n";

#[test]
fn workers_run_the_release_image_with_no_port_their_own_environment_and_drain_time() {
    let t = topology(WORKERS);
    let d = desired(&t, &release("aaaaaaaaaaaa"), &SecretValues::default(), &engine(), &Templates::embedded()).unwrap();
    let slots: Vec<&str> = d.workers.iter().map(|c| c.slot.as_str()).collect();
    assert_eq!(slots, ["worker-1", "worker-2"]);
    let w = &d.workers[0];
    assert_eq!((w.role.as_str(), w.image.as_str()), (ROLE_WORKER, d.app[0].image.as_str()), "the release's image");
    // scale-api's image runs its own entrypoint: the argv's first word is it.
    assert_eq!(w.cmd, ["worker"]);
    assert!(w.env.contains(&"INSTANCE=worker-1".to_string()) && w.env.contains(&"JOBS_QUEUE=jobs".to_string()) && w.env.contains(&"DRAIN_TIMEOUT=20s".to_string()), "{:?}", w.env);
    assert!(w.env.iter().all(|e| !e.starts_with("PORT=")), "a worker has no port: {:?}", w.env);
    assert!(w.publish.is_empty() && w.health.is_none() && w.no_health_check && w.aliases.is_empty(), "the image's check is for a port");
    assert_eq!((w.stop_timeout_s, w.settle_s), (25, Some(WORKER_SETTLE_S)));
    // The replicas get the queue too: POST /jobs adds to it.
    assert!(d.app[0].env.contains(&"JOBS_QUEUE=jobs".to_string()));
    // `max`: one per core of the engine's machine.
    let max = topology(&WORKERS.replace("instances: 2", "instances: max"));
    assert_eq!(desired(&max, &release("a"), &SecretValues::default(), &engine(), &Templates::embedded()).unwrap().workers.len(), 2);
    // A program's workers run its argv, their instance's name in place of `$(INSTANCE)`.
    let program = topology(
        "  program: {name: shop, release: ./shop, command: [node, server.js]}\n  workers: {command: [node, worker.js, \"--name=$(INSTANCE)\"], queue: {kind: bullmq, name: reports}}\nredis: {persistence: none}\n",
    );
    let d = desired(&program, &release("bbbbbbbbbbbb"), &SecretValues::default(), &engine(), &Templates::embedded()).unwrap();
    assert_eq!(d.workers[0].cmd, ["node", "worker.js", "--name=worker-1"]);
    assert!(d.workers[0].env.iter().all(|e| !e.starts_with("JOBS_QUEUE=")), "{:?}", d.workers[0].env);
}

#[test]
fn a_new_release_rolls_each_worker_after_the_replicas_new_one_running_before_the_old_stops() {
    let t = topology(WORKERS);
    let p = make(&t, "bbbbbbbbbbbb", &SecretValues::default(), &converged(&t, "aaaaaaaaaaaa"));
    let steps = names(&p.activate);
    let workers: Vec<&str> = steps.iter().map(String::as_str).filter(|s| s.contains("worker")).collect();
    assert_eq!(workers, ["create worker-1", "stop d-worker-1", "create worker-2", "stop d-worker-2"], "{steps:?}");
    let last_replica = steps.iter().rposition(|s| s.contains("api-")).unwrap();
    let first_worker = steps.iter().position(|s| s.contains("worker")).unwrap();
    assert!(last_replica < first_worker, "workers roll after the replicas: {steps:?}");
    assert!(p.activate.iter().any(|s| matches!(s, Step::Stop { name, timeout_s: 25 } if name.contains("-worker-1-"))), "stopped with its drain time");
    let removed: Vec<String> = names(&p.cleanup).into_iter().filter(|s| s.contains("worker")).collect();
    assert_eq!(removed, ["remove d-worker-1", "remove d-worker-2"]);
    // A change to the workers' own env rolls the workers only.
    let env = topology(&WORKERS.replace("drain_timeout: 20s", "drain_timeout: 20s, env: {JOBS_CLAIM_IDLE: 2s}"));
    let p = make(&env, "aaaaaaaaaaaa", &SecretValues::default(), &converged(&t, "aaaaaaaaaaaa"));
    assert_eq!(names(&p.activate), ["create worker-1", "stop d-worker-1", "create worker-2", "stop d-worker-2"]);
}

#[test]
fn fewer_workers_or_none_stop_the_ones_left_with_their_drain_time_and_reload_restarts_them() {
    let t = topology(WORKERS);
    let o = converged(&t, "aaaaaaaaaaaa");
    let one = topology(&WORKERS.replace("instances: 2", "instances: 1"));
    let p = make(&one, "aaaaaaaaaaaa", &SecretValues::default(), &o);
    assert_eq!(names(&p.activate), ["stop d-worker-2"]);
    assert_eq!(names(&p.cleanup), ["remove d-worker-2"]);
    let none = topology("redis: {persistence: none}\n");
    let p = make(&none, "aaaaaaaaaaaa", &SecretValues::default(), &o);
    let stopped: Vec<&Step> = p.activate.iter().filter(|s| matches!(s, Step::Stop { name, .. } if name.contains("-worker-"))).collect();
    assert_eq!(stopped.len(), 2, "{:?}", names(&p.activate));
    assert!(stopped.iter().all(|s| matches!(s, Step::Stop { timeout_s: 35, .. })), "the default drain time and 5 s: {stopped:?}");
    // reload: the replicas in turn, then each worker.
    let r = reload_plan(&t, &o, &Templates::embedded()).unwrap();
    let steps = names(&r.activate);
    let tail: Vec<&str> = steps.iter().rev().take(4).rev().map(String::as_str).collect();
    assert!(tail[0].starts_with("stop d-worker-1") && tail[2].starts_with("stop d-worker-2"), "{steps:?}");
    assert!(tail[1].starts_with("start d-worker-1-") && tail[3].starts_with("start d-worker-2-"), "{steps:?}");
}

/// A new liveness path: the running balancer checks the old one, which the new replicas do not
/// answer, and the old replicas do not answer the new one. Each new replica goes back with its
/// check paused, and the balancer's file changes once, after the last old replica left, with
/// one reload (whose process checks every replica at the new path).
#[test]
fn a_new_liveness_path_reaches_the_balancer_once_after_the_roll() {
    let t = topology("");
    let o = converged(&t, "aaaaaaaaaaaa");
    let live = topology("  health: {liveness: /live}\n");
    let p = make(&live, "aaaaaaaaaaaa", &SecretValues::default(), &o);
    let steps = names(&p.activate);
    let last_serve = steps.iter().rposition(|s| s.starts_with("serve api-2:3000")).unwrap_or_else(|| panic!("{steps:#?}"));
    let write = format!("write {BALANCER_CONF}");
    assert_eq!(steps.iter().filter(|s| **s == write).count(), 1, "{steps:#?}");
    assert!(steps.iter().position(|s| *s == write).unwrap() > last_serve, "{steps:#?}");
    assert_eq!(steps.iter().filter(|s| *s == "reload balancer").count(), 1, "{steps:#?}");
    let serves: Vec<bool> = p.activate.iter().filter_map(|s| if let Step::Serve { pause_checks, .. } = s { Some(*pause_checks) } else { None }).collect();
    assert_eq!(serves, [true, true]);
    let text = render_text(&p, false);
    assert!(text.contains("its health check paused until the balancer reloads"), "{text}");
    // A release that keeps the path: checked, the balancer's file follows each slot, no reload.
    let p = make(&t, "bbbbbbbbbbbb", &SecretValues::default(), &o);
    assert!(p.activate.iter().all(|s| !matches!(s, Step::Serve { pause_checks: true, .. } | Step::ReloadBalancer { .. })));
}

const WITH_DATABASE: &str = "  release_command: [scale-api, migrate]\ndatabase:\n  password: {env: P}\n  replication_password: {env: R}\n  rest_password: {env: S}\n  members: 2\n";

fn database_secrets() -> SecretValues {
    let database = crate::render::DatabaseSecrets { password: "app-pw".into(), replication_password: "repl-pw".into(), rest_password: "rest-pw".into() };
    SecretValues { database: Some(database), ..Default::default() }
}

#[test]
fn the_database_tier_and_the_release_command_come_before_any_replica_and_the_command_runs_once() {
    let t = topology(WITH_DATABASE);
    let secrets = database_secrets();
    let p = make(&t, "aaaaaaaaaaaa", &secrets, &DockerObserved::default());
    let steps: Vec<String> = names(&p.activate).into_iter().filter(|s| s.starts_with("create") || s.starts_with("release")).collect();
    assert_eq!(
        steps[..9],
        ["create redis", "create etcd", "create db-1", "create db-2", "create db-proxy", "release command migrate", "create api-1", "create api-2", "create postgres-exporter-1"],
        "{steps:?}"
    );
    let created = |slot: &str| p.activate.iter().find_map(|s| if let Step::Create { spec } = s { (spec.slot == slot).then_some(spec) } else { None }).unwrap();
    // Each member: Patroni as PostgreSQL's user, its own name and address, its passwords as files
    // only that user reads, its own volume; the app's URLs reach the members through db-proxy.
    let db2 = created("db-2");
    assert_eq!(db2.user.as_deref(), Some("postgres"));
    let config = &db2.files.iter().find(|f| f.path == crate::topology::tiers::PATRONI_CONFIG).unwrap().content;
    assert!(config.contains("name: \"db-2\"") && config.contains("connect_address: \"db-2:5432\"") && config.contains("- \"etcd:2379\""), "{config}");
    let env = db2.files.iter().find(|f| f.path == crate::topology::tiers::PATRONI_SECRETS).unwrap();
    assert!(env.sensitive && env.mode == 0o400 && env.owner == FileOwner::User("postgres".into()) && env.content.contains("repl-pw"));
    assert!(db2.volumes.contains(&("d-db-2".to_string(), crate::topology::tiers::DATABASE_DATA_DIR.to_string())), "{:?}", db2.volumes);
    // Redis holds none of the database's files.
    assert!(!created("redis").files.iter().any(|f| f.content.contains("repl-pw") || f.content.contains("app-pw")), "{:?}", created("redis").files.iter().map(|f| &f.path).collect::<Vec<_>>());
    let api = created("api-1");
    let url = api.secret_env.iter().find(|e| e.name == "DB_READER_URL").unwrap();
    assert_eq!(url.value, "postgresql://app:app-pw@db-proxy:5434/d");
    assert!(api.env.contains(&"PGHOST=db-proxy".to_string()), "{:?}", api.env);
    // No value in the printed plan.
    let printed = serde_json::to_string(&p.redacted()).unwrap() + &render_text(&p, false);
    for pw in ["app-pw", "repl-pw", "rest-pw"] {
        assert!(!printed.contains(pw), "{pw} in the plan");
    }
    // Once it ran to success, the next plan does not run it again; a failed run does not count.
    let mut o = converged_with(&t, "aaaaaaaaaaaa", &secrets);
    let d = desired(&t, &release("aaaaaaaaaaaa"), &secrets, &engine(), &Templates::embedded()).unwrap();
    let record = |exit_code| ObservedContainer {
        name: d.release_command.as_ref().unwrap().name.clone(),
        role: ROLE_RELEASE.into(),
        slot: ROLE_RELEASE.into(),
        hash: String::new(),
        state: "exited".into(),
        health: None,
        image: d.image.clone(),
        previous: String::new(),
        exit_code: Some(exit_code),
    };
    o.containers.push(record(1));
    assert_eq!(names(&make(&t, "aaaaaaaaaaaa", &secrets, &o).activate), ["release command migrate"]);
    o.containers.pop();
    // Created and never started (an apply interrupted there): the engine reports exit 0.
    o.containers.push(ObservedContainer { state: "created".into(), ..record(0) });
    assert_eq!(names(&make(&t, "aaaaaaaaaaaa", &secrets, &o).activate), ["release command migrate"]);
    o.containers.pop();
    o.containers.push(record(0));
    let p = make(&t, "aaaaaaaaaaaa", &secrets, &o);
    assert!(!p.has_changes(), "{}", render_text(&p, false));
    // A new release runs it again, before its replicas, and its record replaces the old one.
    let p = make(&t, "bbbbbbbbbbbb", &secrets, &o);
    let steps = names(&p.activate);
    let run = steps.iter().position(|s| s == "release command migrate").unwrap();
    assert!(steps.iter().position(|s| s == "create api-1").unwrap() > run, "{steps:?}");
    assert!(names(&p.cleanup).contains(&"remove d-release".to_string()), "{:?}", names(&p.cleanup));
    // A rollback to a release runs no command again, and keeps the records.
    let d = Desired { rolling_back: true, ..desired(&t, &release("bbbbbbbbbbbb"), &secrets, &engine(), &Templates::embedded()).unwrap() };
    let p = plan(Inputs { topology: &t, release: &release("bbbbbbbbbbbb"), desired: d, templates: &Templates::embedded() }, &o).unwrap();
    assert!(!names(&p.activate).iter().any(|s| s.starts_with("release command")), "{:?}", names(&p.activate));
    assert!(!names(&p.cleanup).contains(&"remove d-release".to_string()), "{:?}", names(&p.cleanup));
}
