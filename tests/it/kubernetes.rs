//! `scalectl render`'s Kubernetes manifests, checked offline (no cluster runs here): strict
//! validation against the OpenAPI schemas of a stated Kubernetes version (kubernetes-validate,
//! which ships them), checkov's Kubernetes checks with every skip justified, and the pods held
//! to the docker target's container specs field by field (one description of each tier).

use std::process::Command;

use scalectl::plan::docker::{KUBERNETES_VERSION, PRE_STOP_S, SECRETS_DIR, bundle_specs, kubernetes_files, secret_name, secrets_entrypoint};
use scalectl::render::Templates;
use serde_json::{Value, json};

use super::require;
use super::tools::compose_topologies;

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every manifest of a render, as (file, documents).
fn manifests(t: &scalectl::topology::Topology) -> Vec<(String, Vec<Value>)> {
    kubernetes_files(t, 2, &Templates::embedded())
        .unwrap()
        .into_iter()
        .map(|f| {
            let docs: Vec<Value> = serde_saphyr::from_multiple(&f.content).unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{}", f.path, f.content));
            (f.path, docs)
        })
        .collect()
}

fn find<'a>(m: &'a [(String, Vec<Value>)], kind: &str, name: &str) -> Option<&'a Value> {
    m.iter().flat_map(|(_, d)| d).find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// The operators' resources and the schema each is held to (tests/it/crds/README.md).
const CRD_SCHEMAS: &[(&str, &str, &str)] = &[
    ("postgresql.cnpg.io/v1", "Cluster", "postgresql.cnpg.io_cluster_v1.json"),
    ("monitoring.coreos.com/v1", "ServiceMonitor", "monitoring.coreos.com_servicemonitor_v1.json"),
    ("monitoring.coreos.com/v1", "PrometheusRule", "monitoring.coreos.com_prometheusrule_v1.json"),
];

fn crd_schema(doc: &Value) -> Option<std::path::PathBuf> {
    CRD_SCHEMAS
        .iter()
        .find(|(api, kind, _)| doc["apiVersion"] == *api && doc["kind"] == *kind)
        .map(|(_, _, file)| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/crds").join(file))
}

/// Python's jsonschema: the errors of `doc` against `schema`, one per line (empty: valid).
fn schema_errors(schema: &std::path::Path, doc: &Value) -> String {
    use std::io::Write;
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  v = jsonschema.validators.validator_for(schema)(schema)\n\
                  for e in sorted(v.iter_errors(json.load(sys.stdin)), key=str): print(e.json_path, e.message)\n";
    let mut child = Command::new(require("python3")).args(["-c", script]).arg(schema).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(doc.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 jsonschema: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Each file through kubernetes-validate in strict mode: every built-in resource passes, and every
/// one is checked (a kind without a schema would only be warned about); the operators' resources
/// against their CRDs' schemas; each kustomization lists every manifest of its directory.
#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let tool = require("kubernetes-validate");
    for (example, t) in compose_topologies() {
        let dir = tempfile::tempdir().unwrap();
        let files = kubernetes_files(&t, 2, &Templates::embedded()).unwrap();
        let mut resources = 0;
        let mut paths = Vec::new();
        for (path, docs) in manifests(&t) {
            if let Some(dir) = path.strip_suffix("kustomization.yaml") {
                let listed: Vec<String> = docs[0]["resources"].as_array().unwrap().iter().map(|r| format!("{dir}{}", r.as_str().unwrap())).collect();
                let here: Vec<String> = files.iter().map(|f| f.path.clone()).filter(|p| p.strip_prefix(dir).is_some_and(|rest| !rest.contains('/') && rest != "kustomization.yaml")).collect();
                assert_eq!(listed, here, "{example}: {path} lists every manifest of its directory");
                continue;
            }
            for doc in &docs {
                match crd_schema(doc) {
                    Some(schema) => {
                        let errors = schema_errors(&schema, doc);
                        assert!(errors.is_empty(), "{example}: {path}: {} {} against {}:\n{errors}", doc["kind"], doc["metadata"]["name"], schema.display());
                    }
                    None => resources += 1,
                }
            }
            let file = dir.path().join(path.replace('/', "_"));
            std::fs::write(&file, &files.iter().find(|f| f.path == path).unwrap().content).unwrap();
            paths.push(file);
        }
        let out = Command::new(&tool).args(["--strict", "-k", &format!("{KUBERNETES_VERSION}.0")]).args(&paths).output().unwrap();
        let said = text(&out);
        assert!(out.status.success(), "{example}: kubernetes-validate --strict -k {KUBERNETES_VERSION}:\n{said}");
        let passed = said.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(passed, resources, "{example}: every built-in resource validated against a schema:\n{said}");
    }
}

/// The schemas refuse what the API server would: a field the CRD does not know, a wrong type.
#[test]
fn the_operators_schemas_refuse_a_wrong_field() {
    let t = scalectl::topology::parse("database.yaml", &std::fs::read_to_string(super::example_path("database")).unwrap()).unwrap();
    let m = manifests(&t);
    let cluster = find(&m, "Cluster", &scalectl::plan::docker::database_cluster(&t)).unwrap();
    let schema = crd_schema(cluster).unwrap();
    assert_eq!(schema_errors(&schema, cluster), "");
    let mut wrong = cluster.clone();
    wrong["spec"]["replicas"] = json!(2);
    assert!(schema_errors(&schema, &wrong).contains("replicas"), "an unknown field passed");
    let mut wrong = cluster.clone();
    wrong["spec"]["instances"] = json!("two");
    assert!(!schema_errors(&schema, &wrong).is_empty(), "a string for a number passed");
}

/// checkov's Kubernetes checks: nothing fails, and every check a manifest skips says why.
#[test]
fn checkov_finds_nothing_unjustified_in_the_kubernetes_manifests() {
    let tool = require("checkov");
    for (example, t) in compose_topologies() {
        // Not a hidden directory (tempfile's default `.tmp` prefix): checkov skips those silently.
        let dir = tempfile::Builder::new().prefix("manifests").tempdir().unwrap();
        for f in kubernetes_files(&t, 2, &Templates::embedded()).unwrap() {
            let p = dir.path().join(&f.path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f.content).unwrap();
        }
        let out = Command::new(&tool).args(["--compact", "--quiet", "--skip-download", "--framework", "kubernetes", "-o", "json", "-d"]).arg(dir.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{example}: checkov output: {e}\n{}", text(&out)));
        let summary = &report["summary"];
        assert!(summary["passed"].is_u64(), "{example}: checkov checked nothing:\n{}", text(&out));
        assert_eq!(summary["failed"], 0, "{example}: checkov failures (fix them, or justify a skip in the manifest's annotations):\n{}", serde_json::to_string_pretty(&report["results"]["failed_checks"]).unwrap());
        assert!(summary["passed"].as_u64().unwrap() >= 80, "{example}: checkov checked almost nothing: {summary}");
        for s in report["results"]["skipped_checks"].as_array().into_iter().flatten() {
            let why = s["check_result"]["suppress_comment"].as_str().unwrap_or_default();
            assert!(why.len() > 20, "{example}: {} skipped without a reason: {s}", s["check_id"]);
        }
    }
}

/// The app's pods run what the docker target's replicas run: image, argv behind the same secrets
/// wrapper, environment (INSTANCE: the pod's name), the secrets as files, memory, CPU, the drain
/// time; probed on the topology's paths at its port. Workers likewise; Redis with the same
/// redis.conf and command.
#[test]
fn kubernetes_pods_run_what_the_docker_targets_containers_run() {
    for (example, t) in compose_topologies() {
        let m = manifests(&t);
        let specs = bundle_specs(&t, 2, &Templates::embedded()).unwrap();
        let name = t.app.name().to_string();
        let mut kinds = vec![("Deployment", name.clone(), specs.app.first().unwrap())];
        if let Some(w) = specs.workers.first() {
            kinds.push(("Deployment", format!("{name}-worker"), w));
        }
        if t.app.release_command.is_some() {
            kinds.push(("Job", format!("{name}-release"), specs.app.first().unwrap()));
        }
        for (kind, deployment, spec) in kinds {
            let at = format!("{example}: {kind} {deployment}");
            let d = find(&m, kind, &deployment).unwrap_or_else(|| panic!("{at} is missing"));
            let job = kind == "Job";
            assert_eq!(d["metadata"]["namespace"], t.name.as_str(), "{at}");
            let pod = &d["spec"]["template"]["spec"];
            let c = &pod["containers"][0];
            assert_eq!(c["image"], spec.image.as_str(), "{at}");
            // The same argv compose runs: the wrapper, then scale-api's binary and the spec's
            // arguments, or the program's argv as written (the kubelet expands `$(PORT)`).
            let argv: Vec<String> = match &t.app.program {
                _ if job => t.app.release_command.clone().unwrap(),
                None => std::iter::once("/usr/local/bin/scale-api".to_string()).chain(spec.cmd.iter().cloned()).collect(),
                Some(p) if spec.role == "app" => p.command.clone(),
                Some(_) => t.app.workers.as_ref().unwrap().command.clone(),
            };
            let argv: Vec<String> = match &t.app.program {
                // scale-api's binary is the wrapper's command, named once.
                None if job => std::iter::once("/usr/local/bin/scale-api".to_string()).chain(argv.into_iter().skip(1)).collect(),
                _ => argv,
            };
            // The docker replicas' database settings name their HAProxy container; a pod's name
            // the cluster's Services.
            let mut secrets: Vec<&str> = spec.secret_env.iter().map(|e| e.name.as_str()).filter(|n| !["DATABASE_URL", "DB_WRITER_URL", "DB_READER_URL", "PGPASSWORD"].contains(n)).collect();
            if t.database.is_some() {
                secrets.extend(["DATABASE_URL", "DB_WRITER_URL", "DB_READER_URL"]);
            }
            if secrets.is_empty() {
                // The image's own entrypoint: scale-api's arguments only, or the program's argv.
                assert!(c.get("command").is_none(), "{at}");
                let args: Vec<String> = if t.app.program.is_none() { argv[1..].to_vec() } else { argv };
                assert_eq!(c.get("args").cloned().unwrap_or(json!([])), json!(args), "{at}");
            } else {
                assert_eq!(c["args"], json!(argv), "{at}");
                assert_eq!(c["command"], json!(secrets_entrypoint()), "{at}");
                let mount = c["volumeMounts"].as_array().unwrap().iter().find(|v| v["name"] == "secrets").unwrap();
                assert_eq!(mount["mountPath"], SECRETS_DIR, "{at}");
                let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "secrets").unwrap();
                assert_eq!(volume["secret"]["secretName"], secret_name(&t), "{at}");
                let items: Vec<Value> = secrets.iter().map(|s| json!({"key": s, "path": s})).collect();
                assert_eq!(volume["secret"]["items"], json!(items), "{at}");
            }
            // No value of a secret anywhere: only its name.
            // The kubelet reads `$$` as `$` (and `$(X)` as a variable): each `$` is doubled.
            let env: Vec<(String, String)> = spec.env.iter().filter_map(|e| e.split_once('=')).filter(|(k, _)| *k != "INSTANCE" && !["PGHOST", "PGPORT", "PGUSER", "PGDATABASE"].contains(k)).map(|(k, v)| (k.to_string(), v.replace('$', "$$"))).collect();
            let pod_env = c["env"].as_array().unwrap();
            assert_eq!(pod_env[0], json!({"name": "INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}), "{at}");
            let plain: Vec<(String, String)> = pod_env[1..].iter().map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string())).collect();
            assert_eq!(plain, env, "{at}: environment");
            let mib = |v: &Value| v.as_str().map(|q| q.strip_suffix("Mi").map(|n| n.parse::<u64>().unwrap() << 20).or_else(|| q.strip_suffix("Gi").map(|n| n.parse::<u64>().unwrap() << 30)).unwrap_or_else(|| q.parse().unwrap()));
            assert_eq!(mib(&c["resources"]["limits"]["memory"]), spec.memory_bytes, "{at}");
            assert_eq!(mib(&c["resources"]["requests"]["memory"]), spec.memory_bytes, "{at}");
            let cpu = c["resources"]["limits"]["cpu"].as_str().map(|m| m.strip_suffix('m').unwrap().parse::<i64>().unwrap() * 1_000_000);
            assert_eq!(cpu, spec.nano_cpus, "{at}");
            if job {
                assert_eq!(d["spec"]["backoffLimit"], 0, "{at}: run once, never again after a failure");
                assert_eq!(pod["restartPolicy"], "Never", "{at}");
            } else if spec.role == "app" {
                // The drain time after the pause before SIGTERM.
                assert_eq!(pod["terminationGracePeriodSeconds"], spec.stop_timeout_s + PRE_STOP_S as i64, "{at}");
                assert!(d["spec"].get("replicas").is_none(), "{at}: the autoscaler owns the count");
            } else {
                assert_eq!(pod["terminationGracePeriodSeconds"], spec.stop_timeout_s, "{at}");
                assert!(c.get("lifecycle").is_none(), "{at}");
            }
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]), "{at}");
            if spec.role == "app" && !job {
                assert_eq!(c["ports"], json!([{"name": "http", "containerPort": t.app.port}]), "{at}");
                assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": t.app.liveness, "port": "http"}), "{at}");
                assert_eq!(c["startupProbe"]["httpGet"], json!({"path": t.app.liveness, "port": "http"}), "{at}");
                assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": t.app.readiness, "port": "http"}), "{at}");
                // The docker target checks the same readiness path.
                assert!(spec.health.as_ref().unwrap().test.iter().any(|a| a.contains(&t.app.readiness)), "{at}");
                assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], PRE_STOP_S, "{at}");
                assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0, "{at}");
                let hpa = find(&m, "HorizontalPodAutoscaler", &name).unwrap();
                let threshold = t.autoscaling.as_ref().map_or(scalectl::topology::DEFAULT_CPU_SCALE_OUT, |a| a.cpu_scale_out);
                assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], threshold.round() as u64, "{at}");
                assert!(hpa["spec"]["minReplicas"].as_u64() <= hpa["spec"]["maxReplicas"].as_u64(), "{at}");
                let cooldown = t.autoscaling.as_ref().map_or(scalectl::topology::DEFAULT_COOLDOWN_SCALE_IN_MS, |a| a.cooldown_scale_in_ms) / 1000;
                assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], cooldown.min(3600), "{at}: the API server admits an hour at most");
                // The autoscaler's utilisation is a share of the request: there must be one.
                assert!(c["resources"]["requests"]["cpu"].is_string(), "{at}");
                let service = find(&m, "Service", &name).unwrap();
                assert_eq!(service["spec"]["ports"][0]["targetPort"], "http", "{at}");
                assert!(find(&m, "PodDisruptionBudget", &name).is_some(), "{at}");
                assert!(find(&m, "Ingress", &name).is_some(), "{at}");
            } else {
                assert!(c.get("ports").is_none() && c.get("readinessProbe").is_none(), "{at}: no port");
            }
        }
        match &t.database {
            Some(db) => {
                let at = format!("{example}: the database");
                let cluster = find(&m, "Cluster", &scalectl::plan::docker::database_cluster(&t)).unwrap_or_else(|| panic!("{at} is missing"));
                let members = match t.target {
                    scalectl::topology::Target::Hosts => t.hosts.iter().filter(|h| h.has(scalectl::topology::Role::Database)).count(),
                    scalectl::topology::Target::Docker => db.docker_members as usize,
                };
                assert_eq!(cluster["spec"]["instances"], members, "{at}: a member per database host");
                assert_eq!(cluster["spec"]["enablePDB"], members > 1, "{at}: one member alone must not block a node's drain");
                assert_eq!(cluster["spec"]["postgresql"]["parameters"]["max_connections"], db.max_connections.to_string(), "{at}");
                assert_eq!(cluster["spec"]["bootstrap"]["initdb"], json!({"database": db.name, "owner": db.user, "secret": {"name": format!("{}-app", scalectl::plan::docker::database_cluster(&t))}}), "{at}");
            }
            None => assert!(find(&m, "Cluster", &scalectl::plan::docker::database_cluster(&t)).is_none(), "{example}"),
        }
        // The alert rules are the docker bundle's Prometheus' own.
        let rules = find(&m, "PrometheusRule", &name).unwrap();
        let bundle = scalectl::render::render(&t, &scalectl::render::Facts::with_default_cores(2), &Templates::embedded()).unwrap();
        let prometheus: Value = serde_saphyr::from_str(&bundle.iter().find(|f| f.host == "docker" && f.path == "prometheus/rules.yml").unwrap().content).unwrap();
        assert_eq!(rules["spec"]["groups"], prometheus["groups"], "{example}: the alert rules");
        match specs.services.iter().find(|s| s.role == "redis") {
            Some(redis) => {
                let at = format!("{example}: Redis");
                let set = find(&m, "StatefulSet", "redis").unwrap_or_else(|| panic!("{at} is missing"));
                let c = &set["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(c["image"], redis.image.as_str(), "{at}");
                assert_eq!(c["command"], json!(redis.cmd), "{at}");
                let conf = redis.files.iter().find(|f| f.path.ends_with("redis.conf")).unwrap();
                assert_eq!(find(&m, "ConfigMap", "redis").unwrap()["data"]["redis.conf"], conf.content.as_str(), "{at}");
                assert_eq!(c["volumeMounts"][1]["mountPath"], conf.path.as_str(), "{at}");
                let init = &set["spec"]["template"]["spec"]["initContainers"];
                assert_eq!(init.is_array(), t.redis_password().is_some(), "{at}: the ACL users are written where Redis has a password");
                let port = t.redis.as_ref().unwrap().port;
                assert_eq!(find(&m, "Service", "redis").unwrap()["spec"]["ports"][0]["port"], port, "{at}");
                // The app reaches it by the name the docker target gives it.
                assert!(specs.app[0].env.iter().any(|e| e == &format!("REDIS_URL=redis://redis:{port}/")), "{at}");
            }
            None => assert!(find(&m, "StatefulSet", "redis").is_none(), "{example}"),
        }
    }
}
