//! `scalectl doctor`: the "is the app slow?" decision tree (is it up, is it slow, which resource explains it), for a whole fleet, live.
//!
//! `snapshot` is the plain value the tree reads (saveable and replayable); `tree` is pure and
//! returns findings with their evidence and the path taken; `text` prints the walk for people.
//! Collecting a snapshot from a live fleet is the only I/O: `collect` (from Prometheus) and
//! `scrape` (from the instances and exporters themselves, when there is no Prometheus).

pub mod collect;
pub mod scrape;
pub mod snapshot;
pub mod tree;

pub use snapshot::{FromTarget, Snapshot, TargetInstance, TargetWorkers, Thresholds};
pub use tree::{CHECKS, Diagnosis, Finding, Severity, diagnose};

/// The walk for people: every question with its answer, then each finding with its evidence and
/// the change to make.
pub fn render_text(d: &Diagnosis, color: bool) -> String {
    use std::fmt::Write;
    let paint = |style: anstyle::Style, s: &str| if color { format!("{}{s}{}", style.render(), style.render_reset()) } else { s.to_string() };
    let red = anstyle::AnsiColor::Red.on_default();
    let yellow = anstyle::AnsiColor::Yellow.on_default();
    let green = anstyle::AnsiColor::Green.on_default();
    let mut out = String::new();
    let _ = writeln!(out, "doctor: topology {} at {}", d.topology, d.taken_at);
    for s in &d.trace {
        let mark = if s.taken { paint(yellow, "→") } else { paint(green, "·") };
        let _ = writeln!(out, "  {mark} {} {}", s.question, s.answer);
    }
    if d.healthy {
        let _ = writeln!(out, "\n{}", paint(green, "healthy: nothing to change"));
        return out;
    }
    let _ = writeln!(out);
    for f in &d.findings {
        let sev = match f.severity {
            Severity::Critical => paint(red, "critical"),
            Severity::Warning => paint(yellow, "warning"),
            Severity::Info => "info".to_string(),
        };
        let _ = writeln!(out, "{sev} {} ({}): {}", f.id, f.subject, f.summary);
        for e in &f.evidence {
            let _ = writeln!(out, "    evidence: {} of {} = {:.2} (threshold {:.2})", e.metric, e.subject, e.value, e.threshold);
        }
        let _ = writeln!(out, "    path: {}", f.path.join(" → "));
        let _ = writeln!(out, "    do: {}", f.recommendation);
        if let Some(edit) = &f.topology_edit {
            let _ = writeln!(out, "    topology: {edit}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
