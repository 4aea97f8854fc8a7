//! Rebuild when embedded files change: `include_dir!` (templates/, grafana/dashboards/,
//! terraform/modules/asg/) cannot tell cargo about files added to those folders.
fn main() {
    for dir in ["templates", "grafana/dashboards", "terraform/modules/asg"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
