//! The plan for people: per host, one line per action and the diff of every changed file.

use std::fmt::Write;

use super::{Action, Change, Plan};

struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, style: anstyle::Style, s: &str) -> String {
        if self.on { format!("{}{s}{}", style.render(), style.render_reset()) } else { s.to_string() }
    }
    fn green(&self, s: &str) -> String {
        self.paint(anstyle::AnsiColor::Green.on_default(), s)
    }
    fn red(&self, s: &str) -> String {
        self.paint(anstyle::AnsiColor::Red.on_default(), s)
    }
    fn yellow(&self, s: &str) -> String {
        self.paint(anstyle::AnsiColor::Yellow.on_default(), s)
    }
    fn bold(&self, s: &str) -> String {
        self.paint(anstyle::Style::new().bold(), s)
    }
}

pub fn render_text(plan: &Plan, color: bool) -> String {
    let st = Style { on: color };
    let mut out = String::new();
    for h in &plan.hosts {
        let roles: Vec<String> = h.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
        if h.is_empty() {
            let _ = writeln!(out, "{} ({}): no changes", st.bold(&h.host), roles.join(", "));
            continue;
        }
        let _ = writeln!(out, "{} ({})", st.bold(&h.host), roles.join(", "));
        for a in h.actions() {
            let _ = writeln!(out, "  {}", line(a, &h.app_name, &st));
            if let Action::WriteFile(f) = a
                && let Some(d) = &f.diff
            {
                for l in d.lines() {
                    let painted = if l.starts_with("+++") || l.starts_with("---") {
                        st.bold(l)
                    } else if l.starts_with('+') {
                        st.green(l)
                    } else if l.starts_with('-') {
                        st.red(l)
                    } else {
                        l.to_string()
                    };
                    let _ = writeln!(out, "      {painted}");
                }
            }
        }
    }
    let n = plan.change_count();
    if n == 0 {
        let _ = writeln!(out, "\nNo changes: every host matches the topology.");
    } else {
        let hosts = plan.hosts.iter().filter(|h| !h.is_empty()).count();
        let _ = writeln!(out, "\nPlan: {n} action{} on {hosts} host{}.", plural(n), plural(hosts));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One action as a line; `app` names the host's app instances (`APP@PORT`).
fn line(a: &Action, app: &str, st: &Style) -> String {
    match a {
        Action::InstallPackages { packages } => format!("{} install packages: {}", st.green("+"), packages.join(", ")),
        Action::UploadRelease { release, bytes, archive } => {
            let kind = if *archive { "archive, unpacked" } else { "binary" };
            format!("{} upload release {release} ({kind}, {})", st.green("+"), bytesize::ByteSize::b(*bytes).display().si())
        }
        Action::WriteFile(f) => {
            let (sym, what) = match f.change {
                Change::Create => (st.green("+"), "create"),
                Change::Update => (st.yellow("~"), "update"),
                Change::Metadata => (st.yellow("~"), "set mode/owner of"),
            };
            let secret = if f.sensitive { " (sensitive: content hidden)" } else { "" };
            format!("{sym} {what} {} ({:o} {}:{}){secret}", f.path, f.mode, f.owner, f.group)
        }
        Action::RemoveFile { path } => format!("{} remove {path}", st.red("-")),
        Action::DaemonReload => format!("{} systemctl daemon-reload", st.yellow("~")),
        Action::Validate { unit, command } => format!("{} validate {unit}: {command}", st.yellow("?")),
        Action::Start { unit, ready } => match ready {
            Some(r) => format!("{} start {unit} (wait until 127.0.0.1:{}{} is ready)", st.green("+"), r.port, r.path),
            None => format!("{} enable and start {unit}", st.green("+")),
        },
        Action::Restart { unit } => format!("{} restart {unit}", st.yellow("↻")),
        Action::Reload { unit } => format!("{} reload {unit}", st.yellow("↻")),
        Action::Enable { unit } => format!("{} enable {unit}", st.green("+")),
        Action::SwitchRelease { from, to } => {
            format!("{} switch release {} -> {to}", st.yellow("~"), from.as_deref().unwrap_or("(none)"))
        }
        Action::RollingRestart { ports, readiness, drain } => {
            let units: Vec<String> = ports.iter().map(|p| format!("{app}@{p}")).collect();
            let out = match drain {
                Some(d) => format!(
                    ", each out of the balancer on {} while it restarts, with no reload{}",
                    d.lbs.join(", "),
                    if d.pause_checks { "; back with its health check paused until the balancer reloads for its new checks" } else { "" }
                ),
                None => String::new(),
            };
            format!("{} rolling restart {} (one at a time, each gated on {readiness}{out})", st.yellow("↻"), units.join(", "))
        }
        Action::StartWorkers { units, .. } => format!("{} enable and start {} (each seen running a moment later)", st.green("+"), units.join(", ")),
        Action::RollWorkers { units, drain_ms } => format!(
            "{} rolling restart {} (one at a time, each given {} to finish its job)",
            st.yellow("↻"),
            units.join(", "),
            humantime::format_duration(std::time::Duration::from_millis(*drain_ms))
        ),
        Action::Stop { unit } => format!("{} stop and disable {unit}", st.red("-")),
        Action::PruneReleases { remove } => format!("{} remove old releases {}", st.red("-"), remove.join(", ")),
        Action::MarkReady { release } => format!("{} record release {release} as ready (a rollback target)", st.green("+")),
        Action::ReleaseCommand { release, unit, .. } => format!("{} run the release command of release {release} ({unit}), once for the fleet, before any instance switches", st.green("+")),
        Action::MarkPending { entries } => format!("{} record owed service actions: {}", st.yellow("~"), entries.join(", ")),
        Action::ClearPending => format!("{} clear owed service actions", st.yellow("~")),
        Action::LogCertificate { name, ca_host } => {
            format!("{} issue this host's log TLS certificate for {name} from the fleet's log CA on {ca_host} (keys stay on their hosts)", st.green("+"))
        }
        Action::EnsureAdmin { credentials } => format!("{} make {} (its password stays on this host)", st.green("+"), credentials.admin()),
        Action::Credentials { credentials, phase: crate::plan::CredentialsPhase::Add, port } => {
            format!("{} add the new passwords to {} on port {port}, live (the old ones still work)", st.yellow("~"), credentials.users())
        }
        Action::Credentials { credentials, phase: crate::plan::CredentialsPhase::Settle, port } => {
            format!("{} settle {} on port {port} as their file has them, live (the old passwords stop working)", st.yellow("~"), credentials.users())
        }
    }
}
