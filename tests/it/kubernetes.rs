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

/// Each file through kubernetes-validate in strict mode: every resource passes, and every one is
/// checked (a kind without a schema would only be warned about; the kustomization is kustomize's).
#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let tool = require("kubernetes-validate");
    for (example, t) in compose_topologies() {
        let dir = tempfile::tempdir().unwrap();
        let mut resources = 0;
        let mut paths = Vec::new();
        for (path, docs) in manifests(&t) {
            if path == "kustomization.yaml" {
                let listed: Vec<String> = docs[0]["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
                let files: Vec<String> = kubernetes_files(&t, 2, &Templates::embedded()).unwrap().into_iter().map(|f| f.path).filter(|p| p != "kustomization.yaml").collect();
                assert_eq!(listed, files, "{example}: the kustomization lists every manifest");
                continue;
            }
            resources += docs.len();
            let file = dir.path().join(&path);
            std::fs::write(&file, kubernetes_files(&t, 2, &Templates::embedded()).unwrap().into_iter().find(|f| f.path == path).unwrap().content).unwrap();
            paths.push(file);
        }
        let out = Command::new(&tool).args(["--strict", "-k", &format!("{KUBERNETES_VERSION}.0")]).args(&paths).output().unwrap();
        let said = text(&out);
        assert!(out.status.success(), "{example}: kubernetes-validate --strict -k {KUBERNETES_VERSION}:\n{said}");
        let passed = said.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(passed, resources, "{example}: every resource validated against a schema:\n{said}");
    }
}

/// checkov's Kubernetes checks: nothing fails, and every check a manifest skips says why.
#[test]
fn checkov_finds_nothing_unjustified_in_the_kubernetes_manifests() {
    let tool = require("checkov");
    for (example, t) in compose_topologies() {
        // Not a hidden directory (tempfile's default `.tmp` prefix): checkov skips those silently.
        let dir = tempfile::Builder::new().prefix("manifests").tempdir().unwrap();
        for f in kubernetes_files(&t, 2, &Templates::embedded()).unwrap() {
            std::fs::write(dir.path().join(&f.path), f.content).unwrap();
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
        let mut kinds = vec![(name.clone(), specs.app.first().unwrap())];
        if let Some(w) = specs.workers.first() {
            kinds.push((format!("{name}-worker"), w));
        }
        for (deployment, spec) in kinds {
            let at = format!("{example}: Deployment {deployment}");
            let d = find(&m, "Deployment", &deployment).unwrap_or_else(|| panic!("{at} is missing"));
            assert_eq!(d["metadata"]["namespace"], t.name.as_str(), "{at}");
            let pod = &d["spec"]["template"]["spec"];
            let c = &pod["containers"][0];
            assert_eq!(c["image"], spec.image.as_str(), "{at}");
            // The same argv compose runs: the wrapper, then scale-api's binary and the spec's
            // arguments, or the program's argv as written (the kubelet expands `$(PORT)`).
            let argv: Vec<String> = match &t.app.program {
                None => std::iter::once("/usr/local/bin/scale-api".to_string()).chain(spec.cmd.iter().cloned()).collect(),
                Some(p) if spec.role == "app" => p.command.clone(),
                Some(_) => t.app.workers.as_ref().unwrap().command.clone(),
            };
            assert_eq!(c["args"], json!(argv), "{at}");
            let secrets: Vec<&str> = spec.secret_env.iter().map(|e| e.name.as_str()).collect();
            if secrets.is_empty() {
                assert!(c.get("command").is_none(), "{at}");
            } else {
                assert_eq!(c["command"], json!(secrets_entrypoint()), "{at}");
                let mount = c["volumeMounts"].as_array().unwrap().iter().find(|v| v["name"] == "secrets").unwrap();
                assert_eq!(mount["mountPath"], SECRETS_DIR, "{at}");
                let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "secrets").unwrap();
                assert_eq!(volume["secret"]["secretName"], secret_name(&t), "{at}");
                let items: Vec<Value> = secrets.iter().map(|s| json!({"key": s, "path": s})).collect();
                assert_eq!(volume["secret"]["items"], json!(items), "{at}");
            }
            // No value of a secret anywhere: only its name.
            let env: Vec<(String, String)> = spec.env.iter().filter_map(|e| e.split_once('=')).filter(|(k, _)| *k != "INSTANCE").map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let pod_env = c["env"].as_array().unwrap();
            assert_eq!(pod_env[0], json!({"name": "INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}), "{at}");
            let plain: Vec<(String, String)> = pod_env[1..].iter().map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string())).collect();
            assert_eq!(plain, env, "{at}: environment");
            let mib = |v: &Value| v.as_str().map(|q| q.strip_suffix("Mi").map(|n| n.parse::<u64>().unwrap() << 20).or_else(|| q.strip_suffix("Gi").map(|n| n.parse::<u64>().unwrap() << 30)).unwrap_or_else(|| q.parse().unwrap()));
            assert_eq!(mib(&c["resources"]["limits"]["memory"]), spec.memory_bytes, "{at}");
            assert_eq!(mib(&c["resources"]["requests"]["memory"]), spec.memory_bytes, "{at}");
            let cpu = c["resources"]["limits"]["cpu"].as_str().map(|m| m.strip_suffix('m').unwrap().parse::<i64>().unwrap() * 1_000_000);
            assert_eq!(cpu, spec.nano_cpus, "{at}");
            assert_eq!(pod["terminationGracePeriodSeconds"], spec.stop_timeout_s + PRE_STOP_S as i64, "{at}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]), "{at}");
            if spec.role == "app" {
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
                // The autoscaler's utilisation is a share of the request: there must be one.
                assert!(c["resources"]["requests"]["cpu"].is_string(), "{at}");
                let service = find(&m, "Service", &name).unwrap();
                assert_eq!(service["spec"]["ports"][0]["targetPort"], "http", "{at}");
                assert!(find(&m, "PodDisruptionBudget", &name).is_some(), "{at}");
                assert!(find(&m, "Ingress", &name).is_some(), "{at}");
            } else {
                assert!(c.get("ports").is_none() && c.get("readinessProbe").is_none(), "{at}: a worker has no port");
            }
        }
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
