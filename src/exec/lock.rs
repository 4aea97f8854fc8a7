//! The fleet lock: one file on the fleet's first host, created with O_EXCL (`set -C`), holding the
//! owner, an id, when it was taken and when it expires. An expired lock is taken over; a live one
//! refuses a second apply with its owner's details. Nothing is kept locally.

use std::time::Duration;

use super::ssh::Conn;

pub const LOCK_FILE: &str = "/var/lib/scalectl/lock";

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

fn q(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| "''".into())
}

/// Take the lock, or return who holds it (exit 3 from the script).
pub fn acquire_script(owner: &str, id: &str, ttl: Duration) -> String {
    format!(
        "mkdir -p /var/lib/scalectl\nnow=$(date +%s)\nL={LOCK_FILE}\n\
if [ -e $L ]; then exp=$(sed -n 's/^expires=//p' $L); if [ -n \"$exp\" ] && [ \"$exp\" -lt \"$now\" ]; then rm -f $L; else cat $L; exit 3; fi; fi\n\
if ( set -C; printf 'owner=%s\\nid=%s\\nacquired=%s\\nexpires=%s\\n' {owner} {id} \"$now\" \"$((now + {ttl}))\" > $L ) 2>/dev/null; then exit 0; fi\n\
cat $L; exit 3\n",
        owner = q(owner),
        id = q(id),
        ttl = ttl.as_secs()
    )
}

pub fn release_script(id: &str) -> String {
    format!("L={LOCK_FILE}\nif [ -e $L ] && grep -qx {} $L; then rm -f $L; fi\n", q(&format!("id={id}")))
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
    let out = conn.script(&acquire_script(owner, &id, ttl), Duration::from_secs(30))?;
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
    conn.sudo_script("releasing the lock", &release_script(&held.id), Duration::from_secs(30))?;
    Ok(())
}

pub fn status(conn: &Conn) -> anyhow::Result<Option<LockInfo>> {
    let out = conn.sudo_script("reading the lock", &format!("cat {LOCK_FILE} 2>/dev/null || true"), Duration::from_secs(30))?;
    Ok(LockInfo::parse(&out.stdout))
}

pub fn force_release(conn: &Conn) -> anyhow::Result<()> {
    conn.sudo_script("removing the lock", &format!("rm -f {LOCK_FILE}"), Duration::from_secs(30))?;
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
        let s = acquire_script("a b", "id1", Duration::from_secs(900));
        assert!(s.contains("set -C"));
        assert!(s.contains("'a b' id1"));
        assert!(s.contains("now + 900"));
    }
}
