//! `scalectl db`: the database tier as Patroni runs it. `db status` asks Patroni which member
//! leads and how far each replica is behind: that is Patroni's state, not the topology's.
//! `db switchover` moves the lead to a replica, through Patroni, under the fleet lock.

use super::args::{FleetArgs, Output};
use super::session;
use super::Failure;
use crate::deploy::DbCluster;
use crate::plan::JSON_FORMAT_VERSION;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Who leads, which members stream from it and how far behind each is (exit 2 without a leader
    /// or with a member that is not running)
    #[command(after_help = "Asks Patroni's REST API on the first database host that answers (over SSH, on that host).\n\n\
Exit codes: 0 one leader and every member running or streaming, 2 otherwise, 1 error.\n\n\
Examples:\n  scalectl db status -f scale.yaml\n  scalectl db status -f scale.yaml -o json | jq -r '.members[] | select(.role == \"leader\") | .name'")]
    Status(StatusArgs),
    /// Move the database's leader to a replica (a planned switchover through Patroni, under the
    /// fleet lock); waits until the new leader runs, then every member
    #[command(after_help = "Without --to, the running replica least behind takes over. Writes fail for the moment Patroni \
takes to demote the leader and promote the replica (their connections are closed: pools reconnect); the old leader \
follows the new one as a replica.\n\n\
Examples:\n  scalectl db switchover -f scale.yaml --yes\n  scalectl db switchover -f scale.yaml --to db-2 --yes")]
    Switchover(SwitchoverArgs),
}

#[derive(Debug, clap::Args)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The member to take over (a running replica's host name) [default: the replica least behind]
    #[arg(long, value_name = "HOST")]
    pub to: Option<String>,
    /// Do not ask for confirmation (required when standard input is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long to wait for the new leader, then every member, to run
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait: std::time::Duration,
    /// The fleet lock expires after this long if the run dies without releasing it
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lock_ttl: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    match a.command {
        DbCommand::Status(a) => status(a, color),
        DbCommand::Switchover(a) => switchover(a, color),
    }
}

fn switchover(a: SwitchoverArgs, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    let before = target.database()?;
    let leader = before.leader().map(|m| m.name.clone()).unwrap_or_default();
    let candidate = before.switchover_candidate(a.to.as_deref())?.name.clone();
    eprintln!("switching the database's leader from {leader} to {candidate}");
    if !session::confirm(a.yes, &format!("switch the database's leader from {leader} to {candidate}"))? {
        return Err(anyhow::anyhow!("cancelled: nothing was changed").into());
    }
    let after = session::with_fleet_lock(target.as_ref(), a.lock_ttl, |_, _| {
        let started = std::time::Instant::now();
        let said = target.db_switchover(&leader, &candidate)?;
        eprintln!("Patroni: {said}");
        // Patroni answers once the candidate is promoted; wait until it runs as the leader, then
        // until the former leader runs again as its replica.
        let mut leading = None;
        loop {
            if let Ok(c) = target.database() {
                if leading.is_none() && c.leader().is_some_and(|m| m.name == candidate && m.state == "running") {
                    leading = Some(started.elapsed());
                    eprintln!("{candidate} leads, {:.1} s after the switchover began", started.elapsed().as_secs_f64());
                }
                if leading.is_some() && c.healthy() {
                    eprintln!("every member runs again, {:.1} s after the switchover began", started.elapsed().as_secs_f64());
                    return Ok(c);
                }
            }
            anyhow::ensure!(
                started.elapsed() < a.wait,
                "{} within {}: see `scalectl db status`",
                if leading.is_some() { format!("{candidate} leads, but not every member runs again") } else { format!("{candidate} did not lead") },
                humantime::format_duration(a.wait)
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    })?;
    print!("{}", text(&after));
    Ok(())
}

fn status(a: StatusArgs, color: bool) -> Result<(), Failure> {
    let target = session::open(&a.fleet, color)?;
    let c = target.database()?;
    match a.output {
        Output::Json => {
            let mut doc = serde_json::to_value(&c).map_err(anyhow::Error::from)?;
            doc["format_version"] = JSON_FORMAT_VERSION.into();
            doc["healthy"] = c.healthy().into();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Output::Text => print!("{}", text(&c)),
    }
    if c.healthy() { Ok(()) } else { Err(Failure::Changes) }
}

/// A table, columns as wide as their values.
fn text(c: &DbCluster) -> String {
    use std::fmt::Write;
    let w = |f: &dyn Fn(&crate::deploy::DbMember) -> usize, head: usize| c.members.iter().map(f).chain([head]).max().unwrap_or(head) + 2;
    let (nw, hw, rw, sw) = (w(&|m| m.name.len(), 6), w(&|m| m.host.len(), 4), w(&|m| m.role.len(), 4), w(&|m| m.state.len(), 5));
    let mut out = String::new();
    let _ = writeln!(out, "{:<nw$}{:<hw$}{:<rw$}{:<sw$}{:<10}LAG", "MEMBER", "HOST", "ROLE", "STATE", "TIMELINE");
    for m in &c.members {
        let tl = m.timeline.map_or("-".to_string(), |t| t.to_string());
        let lag = match (m.role.as_str(), m.lag_bytes) {
            ("leader", _) => "-".to_string(),
            (_, Some(b)) => bytesize::ByteSize::b(b).display().iec().to_string(),
            (_, None) => "unknown".to_string(),
        };
        let _ = writeln!(out, "{:<nw$}{:<hw$}{:<rw$}{:<sw$}{:<10}{}", m.name, m.host, m.role, m.state, tl, lag);
    }
    if !c.healthy() {
        let leaders = c.members.iter().filter(|m| m.role == "leader").count();
        if leaders == 0 {
            let _ = writeln!(out, "no member leads: writes fail until Patroni elects one (etcd must be reachable by a majority of its members)");
        } else {
            let _ = writeln!(out, "not every member is running: a new replica copies the primary first, and a former leader restarts as a replica");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patronis_cluster_answer_becomes_a_table_and_a_verdict() {
        let json = r#"{"members": [
            {"name": "db-1", "role": "leader", "state": "running", "api_url": "http://db-1:8008/patroni", "host": "db-1", "port": 5432, "timeline": 2},
            {"name": "db-2", "role": "replica", "state": "streaming", "host": "db-2", "port": 5432, "timeline": 2, "lag": 2048},
            {"name": "db-3", "role": "replica", "state": "creating replica", "host": "db-3", "port": 5432, "lag": "unknown"}
        ], "scope": "lab"}"#;
        let c = DbCluster::from_patroni("db-1", json).unwrap();
        assert_eq!(c.members[1].lag_bytes, Some(2048));
        assert_eq!(c.members[2].lag_bytes, None);
        assert!(!c.healthy(), "a member still copying is not healthy yet");
        let t = text(&c);
        assert!(t.contains("db-2    db-2  replica  streaming         2         2.0 KiB"), "{t}");
        assert!(t.contains("creating replica"), "{t}");
        let mut c = c;
        c.members.pop();
        assert!(c.healthy());
        c.members[0].role = "replica".into();
        assert!(!c.healthy(), "no leader");
        assert!(text(&c).contains("no member leads"));
        assert!(DbCluster::from_patroni("db-1", "<html>").is_err());
    }
}
