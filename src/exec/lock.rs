//! The fleet lock: one file on the fleet's lock host (`Topology::lock_host`: the lowest address,
//! whatever the order of the hosts) holding the owner, an id, when it was taken and when it
//! expires; every change to it is made under `flock` there (see
//! `commands::lock_acquire`). An expired lock is taken over; a live one refuses a second apply with
//! its owner's details. While a run holds it, a lease renews its expiry over a connection of its
//! own, so a long apply keeps it (the docker target's lock, `docker_lock`, uses the same lease);
//! a run whose lease is lost stops before its next step (`LockLost`). Nothing is kept locally.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::commands::{self, LOCK_FILE};
use super::ssh::{Conn, Endpoint};

/// Whether a run still holds the fleet lock ([`Held::check`]): asked by the executors before each
/// step; an error ([`LockLost`]) stops the run there, with nothing undone.
pub type StillHeld<'a> = &'a (dyn Fn() -> anyhow::Result<()> + Sync);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockInfo {
    pub owner: String,
    pub id: String,
    /// Unix seconds (the lock host's clock).
    pub acquired: u64,
    pub expires: u64,
}

impl LockInfo {
    pub(crate) fn parse(text: &str) -> Option<LockInfo> {
        let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string));
        Some(LockInfo { owner: get("owner")?, id: get("id")?, acquired: get("acquired")?.parse().ok()?, expires: get("expires")?.parse().ok()? })
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

/// A run that no longer holds the fleet lock: its lease found the lock another's (or nobody's),
/// or could not renew it for longer than is safe. The executors stop before their next step on
/// this and undo nothing: another run may be changing the fleet now.
#[derive(Debug, thiserror::Error)]
#[error(
    "the fleet lock of this run (id {id}) was lost: {why}. Stopped before the next step and undid nothing, since \
another run may be changing the fleet now: run `scalectl plan` to see where it stands"
)]
pub struct LockLost {
    pub id: String,
    pub why: String,
}

/// A held lock; released explicitly (a crash leaves it to expire).
#[derive(Debug)]
pub struct Held {
    pub id: String,
    /// The expired lock this run took over.
    pub took_over: Option<LockInfo>,
    lease: Option<Lease>,
}

impl Held {
    pub fn new(id: String) -> Held {
        Held { id, took_over: None, lease: None }
    }

    pub(crate) fn leased(id: String, took_over: Option<LockInfo>, lease: Lease) -> Held {
        Held { id, took_over, lease: Some(lease) }
    }

    /// Whether this run still holds the lock: the executors ask before each step.
    pub fn check(&self) -> Result<(), LockLost> {
        match self.lease.as_ref().and_then(Lease::lost) {
            Some(why) => Err(LockLost { id: self.id.clone(), why }),
            None => Ok(()),
        }
    }

    /// Stop renewing (before releasing).
    pub(crate) fn end_lease(&self) {
        if let Some(lease) = &self.lease {
            lease.stop();
        }
    }
}

/// A fresh lock id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

pub fn acquire(conn: &Conn, owner: &str, ttl: Duration) -> anyhow::Result<Held> {
    let id = new_id();
    let out = conn.script(&commands::lock_acquire(owner, &id, ttl), Duration::from_secs(30))?;
    match out.status {
        0 => {
            let took_over = out.stdout.strip_prefix("expired\n").and_then(LockInfo::parse);
            let lease = Lease::start(id.clone(), ttl, renew_over_ssh(conn.endpoint.clone(), id.clone(), ttl));
            Ok(Held { id, took_over, lease: Some(lease) })
        }
        3 => match LockInfo::parse(&out.stdout) {
            Some(info) => Err(locked_error(&info)),
            None => anyhow::bail!("the fleet is locked ({LOCK_FILE} on {}), by an unreadable lock file", conn.endpoint.host),
        },
        n => anyhow::bail!("{}: taking the lock failed (exit {n}): {}", conn.endpoint.host, out.stderr.trim()),
    }
}

pub fn release(conn: &Conn, held: &Held) -> anyhow::Result<()> {
    held.end_lease();
    conn.sudo_script("releasing the lock", &commands::lock_release(&held.id), Duration::from_secs(30))?;
    Ok(())
}

pub fn status(conn: &Conn) -> anyhow::Result<Option<LockInfo>> {
    let out = conn.sudo_script("reading the lock", &commands::lock_status(), Duration::from_secs(30))?;
    Ok(LockInfo::parse(&out.stdout))
}

/// Remove the lock with this id; the one there is returned when it is another.
pub fn force_release(conn: &Conn, id: &str) -> anyhow::Result<Result<(), LockInfo>> {
    let out = conn.script(&commands::lock_break(id), Duration::from_secs(30))?;
    match (out.status, LockInfo::parse(&out.stdout)) {
        (0, _) => Ok(Ok(())),
        (3, Some(other)) => Ok(Err(other)),
        (n, _) => anyhow::bail!("{}: removing the lock failed (exit {n}): {}", conn.endpoint.host, out.stderr.trim()),
    }
}

/// What one renewal of a held lock found.
pub(crate) enum Renewal {
    Renewed,
    /// The lock is another's now (or nobody's): who holds it.
    Gone(String),
    Failed(String),
}

/// Renews a held lock every third of its time to live, from a thread of its own, until stopped.
/// A renewal that finds the lock no longer this run's says so once and stops; the lease is then
/// lost, as it is when no renewal succeeded for two thirds of the time to live (the lock would
/// expire before the next attempt could save it).
pub(crate) struct Lease {
    stop: Arc<(Mutex<bool>, Condvar)>,
    state: Arc<Mutex<LeaseState>>,
    ttl: Duration,
}

struct LeaseState {
    /// Why the lock is no longer this run's.
    gone: Option<String>,
    /// When it was last taken or renewed (this machine's clock: only durations are compared).
    renewed: std::time::Instant,
    last_error: Option<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Lease {
    pub(crate) fn start(id: String, ttl: Duration, mut renew: impl FnMut() -> Renewal + Send + 'static) -> Lease {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let state = Arc::new(Mutex::new(LeaseState { gone: None, renewed: std::time::Instant::now(), last_error: None }));
        let shared = state.clone();
        let set = move |f: &dyn Fn(&mut LeaseState)| f(&mut shared.lock().unwrap_or_else(|e| e.into_inner()));
        let every = (ttl / 3).max(Duration::from_secs(1));
        std::thread::spawn(move || {
            loop {
                let (lock, cv) = &*flag;
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (stopped, _) = cv.wait_timeout_while(guard, every, |s| !*s).unwrap_or_else(|e| e.into_inner());
                if *stopped {
                    return;
                }
                drop(stopped);
                match renew() {
                    Renewal::Renewed => {
                        tracing::debug!("fleet lock {id} renewed for {}s", ttl.as_secs());
                        set(&|s| {
                            s.renewed = std::time::Instant::now();
                            s.last_error = None;
                        });
                    }
                    Renewal::Gone(now) => {
                        // Said once, by the error the run stops with (`LockLost`), after any live
                        // display is cleared: a line printed here would tear it.
                        tracing::debug!("the fleet lock of this run (id {id}) is gone, now {now}: stopping before the next step");
                        set(&|s| s.gone = Some(format!("the lock is now {now}")));
                        return;
                    }
                    Renewal::Failed(e) => {
                        tracing::warn!("renewing the fleet lock failed: {e}");
                        set(&|s| s.last_error = Some(e.clone()));
                    }
                }
            }
        });
        Lease { stop, state, ttl }
    }

    /// Why the lock is no longer this run's, if it is not.
    fn lost(&self) -> Option<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gone) = &s.gone {
            return Some(gone.clone());
        }
        let since = s.renewed.elapsed();
        (since > self.ttl * 2 / 3).then(|| {
            format!(
                "not renewed for {} of its {} ({})",
                humantime::format_duration(Duration::from_secs(since.as_secs())),
                humantime::format_duration(self.ttl),
                s.last_error.as_deref().unwrap_or("no renewal ran")
            )
        })
    }

    fn stop(&self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// The renewal of the lock file on the lock host, over a connection of its own (opened at the
/// first renewal: a short run never opens it).
fn renew_over_ssh(endpoint: Endpoint, id: String, ttl: Duration) -> impl FnMut() -> Renewal + Send + 'static {
    let mut conn: Option<Conn> = None;
    move || {
        if conn.is_none() {
            match Conn::connect(&endpoint) {
                Ok(c) => conn = Some(c),
                Err(e) => return Renewal::Failed(format!("cannot connect: {e}")),
            }
        }
        let Some(c) = &conn else { return Renewal::Failed("not connected".into()) };
        match c.script(&commands::lock_renew(&id, ttl), Duration::from_secs(30)) {
            Ok(out) if out.status == 0 => Renewal::Renewed,
            Ok(out) if out.status == 3 => Renewal::Gone(LockInfo::parse(&out.stdout).map_or("nobody".to_string(), |i| i.to_string())),
            Ok(out) => Renewal::Failed(format!("exit {}: {}", out.status, out.stderr.trim())),
            Err(e) => {
                conn = None;
                Renewal::Failed(e.to_string())
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who holds a lock: `user@hostname/MACHINE/pidN`, where MACHINE is the start of /etc/machine-id,
/// the boot's id and the pid namespace. CI runners in containers share a hostname and pids; the
/// boot id and pid namespace say whether a pid is one this process can see, so a dead owner is
/// recognised only where it ran.
pub fn owner() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let host = Some(read("/proc/sys/kernel/hostname")).filter(|h| !h.is_empty()).unwrap_or_else(|| "unknown".into());
    let short = |s: String| s.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>();
    let machine = short(read("/etc/machine-id"));
    let boot = short(read("/proc/sys/kernel/random/boot_id"));
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| l.to_str().map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>()))
        .unwrap_or_default();
    format!("{user}@{host}/{machine}-{boot}-{pidns}/pid{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_that_finds_the_lock_anothers_is_lost() {
        let held = Held::leased("me".into(), None, Lease::start("me".into(), Duration::from_secs(3), || Renewal::Gone("held by other".into())));
        assert!(held.check().is_ok(), "lost before any renewal");
        std::thread::sleep(Duration::from_millis(1500));
        let e = held.check().unwrap_err().to_string();
        assert!(e.contains("(id me) was lost: the lock is now held by other") && e.contains("undid nothing"), "{e}");
    }

    #[test]
    fn a_lease_that_cannot_renew_is_lost_before_the_lock_expires() {
        let held = Held::leased("me".into(), None, Lease::start("me".into(), Duration::from_secs(3), || Renewal::Failed("cannot connect".into())));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(held.check().is_ok(), "one failed renewal is not a lost lock");
        std::thread::sleep(Duration::from_millis(1000));
        let e = held.check().unwrap_err().to_string();
        assert!(e.contains("not renewed for") && e.contains("of its 3s (cannot connect)"), "{e}");
        let renewing = Held::leased("me".into(), None, Lease::start("me".into(), Duration::from_secs(3), || Renewal::Renewed));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(renewing.check().is_ok());
    }

    #[test]
    fn lock_file_round_trips() {
        let info = LockInfo::parse("owner=ci@m/pid1\nid=abc\nacquired=10\nexpires=20\n").unwrap();
        assert_eq!(info.owner, "ci@m/pid1");
        assert_eq!(info.expires, 20);
        assert!(LockInfo::parse("owner=x\n").is_none());
    }

    #[test]
    fn acquire_holds_the_guard_and_quotes_the_owner() {
        let s = commands::lock_acquire("a b", "id1", Duration::from_secs(900));
        assert!(s.contains("flock -w 20 9"), "{s}");
        assert!(s.contains("write 'a b' id1"), "{s}");
        assert!(s.contains("now + 900"), "{s}");
    }

    #[test]
    fn the_owner_names_the_machine_boot_and_pid_namespace() {
        let o = owner();
        let (who, pid) = o.rsplit_once("/pid").unwrap();
        assert_eq!(pid, std::process::id().to_string());
        let machine = who.rsplit_once('/').unwrap().1;
        let parts: Vec<&str> = machine.split('-').collect();
        assert_eq!(parts.len(), 3, "{o}");
        assert_eq!(parts[1].len(), 8, "the boot id: {o}");
        assert!(!parts[2].is_empty(), "the pid namespace: {o}");
    }
}
