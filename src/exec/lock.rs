//! The fleet lock: one file on the fleet's first host, created with O_EXCL (`set -C`), holding the
//! owner, an id, when it was taken and when it expires. An expired lock is taken over; a live one
//! refuses a second apply with its owner's details. Nothing is kept locally.

use std::time::Duration;

use super::commands::{self, LOCK_FILE};
use super::ssh::Conn;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockInfo {
    pub owner: String,
    pub id: String,
    /// Unix seconds (the lock host's clock).
    pub acquired: u64,
    pub expires: u64,
}

impl LockInfo {
    fn parse(text: &str) -> Option<LockInfo> {
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string));
        Some(LockInfo {
            owner: get("owner")?,
            id: get("id")?,
            acquired: get("acquired")?.parse().ok()?,
            expires: get("expires")?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "held by {} since {} (expires {}, id {})", self.owner, fmt_time(self.acquired), fmt_time(self.expires), self.id)
    }
}

fn fmt_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The error of a run that finds the fleet locked (the same words on every target).
pub fn locked_error(info: &LockInfo) -> anyhow::Error {
    anyhow::anyhow!(
        "the fleet is locked: {info}. Another apply is running, or one died: wait for it, or run \
`scalectl lock release --force` once you are sure"
    )
}

/// A held lock; released explicitly (a crash leaves it to expire).
#[derive(Debug)]
pub struct Held {
    pub id: String,
}

pub fn acquire(conn: &Conn, owner: &str, ttl: Duration) -> anyhow::Result<Held> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let out = conn.script(&commands::lock_acquire(owner, &id, ttl), Duration::from_secs(30))?;
    match out.status {
        0 => Ok(Held { id }),
        3 => match LockInfo::parse(&out.stdout) {
            Some(info) => Err(locked_error(&info)),
            None => anyhow::bail!("the fleet is locked ({LOCK_FILE} on {}), by an unreadable lock file", conn.endpoint.host),
        },
        n => anyhow::bail!("{}: taking the lock failed (exit {n}): {}", conn.endpoint.host, out.stderr.trim()),
    }
}

pub fn release(conn: &Conn, held: &Held) -> anyhow::Result<()> {
    conn.sudo_script("releasing the lock", &commands::lock_release(&held.id), Duration::from_secs(30))?;
    Ok(())
}

pub fn status(conn: &Conn) -> anyhow::Result<Option<LockInfo>> {
    let out = conn.sudo_script("reading the lock", &commands::lock_status(), Duration::from_secs(30))?;
    Ok(LockInfo::parse(&out.stdout))
}

pub fn force_release(conn: &Conn) -> anyhow::Result<()> {
    conn.sudo_script("removing the lock", &commands::lock_break(), Duration::from_secs(30))?;
    Ok(())
}

/// `user@machine pid N`: who holds a lock.
pub fn owner() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{machine}/pid{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_round_trips() {
        let info = LockInfo::parse("owner=ci@m/pid1\nid=abc\nacquired=10\nexpires=20\n").unwrap();
        assert_eq!(info.owner, "ci@m/pid1");
        assert_eq!(info.expires, 20);
        assert!(LockInfo::parse("owner=x\n").is_none());
    }

    #[test]
    fn acquire_uses_exclusive_create_and_quotes_the_owner() {
        let s = commands::lock_acquire("a b", "id1", Duration::from_secs(900));
        assert!(s.contains("set -C"));
        assert!(s.contains("'a b' id1"));
        assert!(s.contains("now + 900"));
    }
}
