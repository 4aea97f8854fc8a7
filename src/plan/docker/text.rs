//! The docker plan for people: one line per step, colored, diffs of live files.

use super::{DockerPlan, Step};

/// The plan as text for people: one line per step, diffs of live files.
pub fn render_text(p: &DockerPlan, color: bool) -> String {
    use std::fmt::Write;
    let paint = |style: anstyle::Style, s: &str| if color { format!("{style}{s}{style:#}") } else { s.to_string() };
    let green = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Green.into()));
    let red = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Red.into()));
    let yellow = anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into()));
    let mut out = String::new();
    if !p.has_changes() {
        let _ = writeln!(out, "No changes: the engine runs what the topology says.");
        return out;
    }
    for (stage, steps) in [("activate", &p.activate), ("cleanup", &p.cleanup)] {
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{stage}:");
        for s in steps {
            let line = match s {
                Step::BuildImage { tag, from_image: Some(from), .. } => paint(green, &format!("  + build image {tag} (labelled, from the engine's image {from})")),
                Step::BuildImage { tag, release, bytes, .. } => paint(green, &format!("  + build image {tag} (release {release}, {bytes} bytes)")),
                Step::BuildLogImage { tag, .. } => paint(green, &format!("  + build image {tag} (scalectl's own services, from Debian's packages)")),
                Step::CreateNetwork { name } => paint(green, &format!("  + network {name}")),
                Step::CreateVolume { name } => paint(green, &format!("  + volume {name}")),
                Step::Create { spec } => paint(
                    green,
                    &format!("  + container {} ({}, {}{})", spec.name, spec.slot, spec.image, if spec.health.is_some() { ", wait healthy" } else { "" }),
                ),
                Step::RunRelease { spec } => paint(
                    green,
                    &format!("  + run the release command `{}` once, in {} ({}), before any replica switches", spec.cmd.join(" "), spec.name, spec.image),
                ),
                Step::Start { name, .. } => paint(yellow, &format!("  ~ start {name}")),
                Step::WriteLive { container, path, diff, commands, old_workers_wait_s, .. } => {
                    let mut then: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
                    if let Some(s) = old_workers_wait_s {
                        then.push(format!("wait for nginx's workers from before (at most {s} s)"));
                    }
                    let mut s = paint(yellow, &format!("  ~ write {path} in {container}"));
                    if !then.is_empty() {
                        s.push_str(&format!(", then {}", then.join("; ")));
                    }
                    for l in diff.lines() {
                        let styled = match l.chars().next() {
                            Some('+') if !l.starts_with("+++") => paint(green, l),
                            Some('-') if !l.starts_with("---") => paint(red, l),
                            _ => l.to_string(),
                        };
                        s.push_str(&format!("\n      {styled}"));
                    }
                    s
                }
                Step::Credentials { credentials, container, phase: crate::plan::CredentialsPhase::Add, port, .. } => paint(
                    yellow,
                    &format!("  ~ add the new passwords to {} in {container} (port {port}), live: the old ones still work", credentials.users()),
                ),
                Step::Credentials { credentials, container, phase: crate::plan::CredentialsPhase::Settle, port, .. } => paint(
                    yellow,
                    &format!("  ~ settle {} in {container} (port {port}) as its users file has them, live: the old passwords stop working", credentials.users()),
                ),
                Step::Drain { container, server, replica, wait_s, .. } => {
                    paint(yellow, &format!("  ~ take {server} ({replica}) out of the balancer in {container}, its requests answered (up to {wait_s} s; no reload)"))
                }
                Step::Serve { container, server, replica, pause_checks, .. } => paint(
                    yellow,
                    &format!(
                        "  ~ point {server} at {replica} and put it back into the balancer in {container} (no reload{})",
                        if *pause_checks { "; its health check paused until the balancer reloads for its new checks" } else { "" }
                    ),
                ),
                Step::ReloadBalancer { container } => paint(yellow, &format!("  ~ reload the balancer in {container} for its new servers")),
                Step::Stop { name, timeout_s } => paint(yellow, &format!("  ~ stop {name} (drain up to {timeout_s} s)")),
                Step::Remove { name, reason } => paint(red, &format!("  - container {name} ({reason})")),
                Step::RemoveNetwork { name } => paint(red, &format!("  - network {name}")),
                Step::RemoveVolume { name } => paint(red, &format!("  - volume {name} (its data is lost)")),
                Step::RemoveImage { tag, reason } => paint(red, &format!("  - image {tag} ({reason})")),
            };
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(out, "Plan: {} steps on the engine.", p.change_count());
    out
}

