//! The one integration-test binary. Modules by subject:
//! - `broken`: a table of broken topologies, each with its exact message, line and column;
//! - `snapshots`: every rendered file of every example, reviewed as insta snapshots;
//! - `tools`: every rendered file checked by its real tool (nginx -t, systemd-analyze verify,
//!   promtool, redis-server, ansible-inventory, rsyslogd -N1) and the Terraform by hcl-rs;
//! - `cli`: the scalectl binary end to end (exit codes, messages, atomic render, overrides).

mod api;
mod broken;
mod cli;
mod db;
mod docker;
mod kubernetes;
mod lab;
mod node;
mod snapshots;
mod support;
mod tools;

use scalectl::render::{self, Facts, RenderedFile, Templates};
use scalectl::topology::{self, Topology};

pub const EXAMPLES: &[&str] = &["single-host", "three-hosts", "lab", "docker", "aws-asg", "node", "node-docker", "express", "database", "docker-database"];

pub fn example_path(name: &str) -> String {
    format!("{}/examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

pub fn load_example(name: &str) -> Topology {
    let path = example_path(name);
    let source = std::fs::read_to_string(&path).unwrap();
    topology::parse(&path, &source).unwrap_or_else(|p| panic!("{p}"))
}

/// Render an example as the tests see it: 2 cores wherever the topology does not say.
/// Every file `scalectl render` writes, the compose bundle included.
pub fn render_example(name: &str) -> Vec<RenderedFile> {
    let t = load_example(name);
    let mut files = render::render(&t, &Facts::with_default_cores(2), &Templates::embedded()).unwrap();
    files.push(scalectl::plan::docker::compose_file(&t, 2, &Templates::embedded()).unwrap());
    files.extend(scalectl::plan::docker::kubernetes_files(&t, 2, &Templates::embedded()).unwrap());
    files.extend(scalectl::cli::render::bundle_scripts(&t));
    files
}

/// A tool the test needs; the README's test command installs it. Missing means a broken setup.
pub fn require(tool: &str) -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let p = std::path::Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} is not installed: run the README's test command (scripts/test.sh), which installs it");
}
