//! Every rendered file of every example, one snapshot per example and destination.

use std::collections::BTreeMap;

use super::{render_example, EXAMPLES};

#[test]
fn rendered_files_match_their_snapshots() {
    for example in EXAMPLES {
        let mut by_host: BTreeMap<String, String> = BTreeMap::new();
        for f in render_example(example) {
            let doc = by_host.entry(f.host.clone()).or_default();
            doc.push_str(&format!("===== {} (mode {:o})\n{}", f.path, f.mode, f.content));
            if !f.content.ends_with('\n') {
                doc.push('\n');
            }
        }
        for (host, doc) in by_host {
            insta::assert_snapshot!(format!("{example}__{host}"), doc);
        }
    }
}

#[test]
fn rendering_twice_in_one_process_gives_the_same_files() {
    for example in EXAMPLES {
        assert_eq!(render_example(example), render_example(example), "{example}");
    }
}

#[test]
fn instance_counts_follow_instances_and_cores() {
    use scalectl::render::{render, Facts, Templates};
    let t = super::load_example("three-hosts");
    // three-hosts declares `cores: 2` on both app hosts: 4 balancer servers whatever the default.
    for default in [1, 8] {
        let files = render(&t, &Facts::with_default_cores(default), &Templates::embedded()).unwrap();
        let balancer = files.iter().find(|f| f.host == "lb-1" && f.path == "/etc/haproxy/haproxy.cfg").unwrap();
        assert_eq!(balancer.content.matches("\n    server app-").count(), 4, "{}", balancer.content);
    }
    // Observed cores win over the topology's.
    let mut facts = Facts::with_default_cores(1);
    facts.cores.insert("app-1".into(), 3);
    let files = render(&t, &facts, &Templates::embedded()).unwrap();
    let target = files.iter().find(|f| f.host == "app-1" && f.path.ends_with("scale-api.target")).unwrap();
    assert!(target.content.contains("Wants=scale-api@3000.service scale-api@3001.service scale-api@3002.service\n"), "{}", target.content);
}
