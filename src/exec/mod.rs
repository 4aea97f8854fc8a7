//! The only code that touches hosts or engines: SSH sessions (ssh2), the lab's containers
//! (bollard), observation of hosts and execution of plans.
//!
//! Everything here is driven by values built elsewhere: endpoints from the topology (or the lab's
//! state), desired state and plans from `plan`. Fan-out across hosts is bounded.

pub mod apply;
pub mod commands;
pub mod docker;
pub mod docker_lock;
pub mod lab;
pub mod lock;
pub mod observe;
pub mod ssh;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::topology::Topology;
use ssh::{Conn, Endpoint};

/// How to reach the fleet.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// known_hosts file for real hosts (default ~/.ssh/known_hosts); the lab has its own.
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    /// Hosts worked on at once.
    pub parallel: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { known_hosts: None, accept_new_host_keys: false, connect_timeout: Duration::from_secs(10), parallel: 8 }
    }
}

/// Where each host is reached: through the lab's published ports when `lab up` made this
/// topology's lab, else at the topology's addresses. Returns whether the lab is used.
pub fn endpoints(t: &Topology, opts: &ConnectOptions) -> anyhow::Result<(Vec<Endpoint>, bool)> {
    let dir = lab::LabDir::for_topology(&t.name);
    if let Some(state) = lab::LabDir::of(t)? {
        let mut out = Vec::new();
        for h in &t.hosts {
            let lh = &state.hosts[&h.name];
            out.push(Endpoint {
                host: h.name.clone(),
                address: "127.0.0.1".into(),
                port: lh.ssh_port,
                user: lh.user.clone(),
                key: Some(dir.key()),
                known_hosts: dir.known_hosts(),
                accept_new_host_keys: false,
                connect_timeout: opts.connect_timeout,
            });
        }
        return Ok((out, true));
    }
    let known = match &opts.known_hosts {
        Some(k) => k.clone(),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".ssh/known_hosts")
        }
    };
    let eps = t
        .hosts
        .iter()
        .map(|h| Endpoint {
            host: h.name.clone(),
            address: h.address.clone(),
            port: h.ssh.port,
            user: h.ssh.user.clone(),
            key: h.ssh.key.as_ref().map(PathBuf::from),
            known_hosts: known.clone(),
            accept_new_host_keys: opts.accept_new_host_keys,
            connect_timeout: opts.connect_timeout,
        })
        .collect();
    Ok((eps, false))
}

/// Connect to every host at once; all failures are reported together.
/// The connection to `host` among `conns`.
pub fn conn<'c>(conns: &'c [ssh::Conn], host: &str) -> anyhow::Result<&'c ssh::Conn> {
    use anyhow::Context;
    conns.iter().find(|c| c.endpoint.host == host).with_context(|| format!("{host}: not connected"))
}

pub fn connect_all(eps: &[Endpoint], parallel: usize) -> anyhow::Result<Vec<Conn>> {
    // One known_hosts file may be rewritten by several threads recording new keys: serialize those.
    static KNOWN_HOSTS: Mutex<()> = Mutex::new(());
    let results = fanout(eps, parallel, |ep| {
        if ep.accept_new_host_keys {
            let _g = KNOWN_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
            Conn::connect(ep).map_err(anyhow::Error::from)
        } else {
            Conn::connect(ep).map_err(anyhow::Error::from)
        }
    });
    collect(results)
}

/// Run `f` on every item with at most `parallel` at a time; results in item order.
pub fn fanout<T: Sync, R: Send>(items: &[T], parallel: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    slots.into_iter().filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}

/// All results, or one error listing every failure.
pub fn collect<R>(results: Vec<anyhow::Result<R>>) -> anyhow::Result<Vec<R>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    match errors.len() {
        0 => Ok(ok),
        1 => Err(anyhow::anyhow!(errors.remove(0))),
        n => Err(anyhow::anyhow!("{n} hosts failed:\n  {}", errors.join("\n  "))),
    }
}

/// Whether the tests run as root: the ones that run a host's script for real (it chowns to root)
/// need it, as CI and these machines give it.
#[cfg(test)]
pub(crate) fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_keeps_order_and_bounds_parallelism() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..20).collect();
        let out = fanout(&items, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn collect_lists_every_failure() {
        let r: anyhow::Result<Vec<u32>> = collect(vec![Ok(1), Err(anyhow::anyhow!("a: down")), Err(anyhow::anyhow!("b: down"))]);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("2 hosts failed") && msg.contains("a: down") && msg.contains("b: down"), "{msg}");
    }
}
