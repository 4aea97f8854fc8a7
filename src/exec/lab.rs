//! The local lab: one Docker container per topology host, booted with systemd and sshd so that it
//! behaves like a real host, on a private network of its own (LAB.md has the verified recipe).
//!
//! `up` is idempotent: it creates what is missing, keeps what runs, and refreshes the lab's key
//! pair, known_hosts and endpoint file under the state directory. `down` removes exactly what `up`
//! created (found by label). The engine is reached through bollard.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::topology::{Role, Service, Topology, ports};

/// Image the lab's hosts boot from: Debian's official image when present, else one built here.
pub const OFFICIAL_IMAGE: &str = "debian:bookworm";
pub const LOCAL_IMAGE: &str = "scalectl/lab-base:bookworm";
const LABEL_LAB: &str = "io.scalectl.lab";
const LABEL_HOST: &str = "io.scalectl.host";
const LABEL_OWNED: &str = "io.scalectl.owned-by";

/// What `lab up` recorded: how scalectl reaches each host from this machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub network: String,
    pub image: String,
    /// Host name -> its container and the SSH port published on 127.0.0.1.
    pub hosts: indexmap::IndexMap<String, LabHost>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabHost {
    pub container: String,
    pub ssh_port: u16,
    pub user: String,
    /// The host's address in the topology the lab was made from (empty in a lab made before
    /// scalectl recorded it).
    #[serde(default)]
    pub address: String,
}

/// Files of one lab under the state directory.
#[derive(Debug, Clone)]
pub struct LabDir(pub PathBuf);

impl LabDir {
    pub fn for_topology(name: &str) -> LabDir {
        LabDir(state_home().join("lab").join(name))
    }
    pub fn key(&self) -> PathBuf {
        self.0.join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.0.join("known_hosts")
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("lab.json")
    }
    /// Connection variables for Ansible (see templates/lab/inventory.yml.j2).
    pub fn inventory(&self) -> PathBuf {
        self.0.join("inventory.yml")
    }
    /// The lab `lab up` made from this topology, if any. A topology that only shares its name with
    /// a lab (another host, or a host at another address) is refused, never sent to the lab.
    pub fn of(t: &crate::topology::Topology) -> anyhow::Result<Option<LabState>> {
        let dir = LabDir::for_topology(&t.name);
        let Some(state) = dir.load()? else { return Ok(None) };
        for h in &t.hosts {
            let lh = state.hosts.get(&h.name).ok_or_else(|| {
                anyhow::anyhow!("host `{}` is not in the lab `{}`: run `scalectl lab up -f FILE` again", h.name, t.name)
            })?;
            anyhow::ensure!(
                lh.address.is_empty() || lh.address == h.address,
                "topology `{name}` has the name of the lab in {dir}, but its host `{host}` is at `{addr}` where the lab's is at `{lab}`: \
                 it is not the lab's topology, so nothing is sent to it. Give this topology another name, or remove the lab \
                 (`scalectl lab down -f FILE`) or make it from this file (`scalectl lab up -f FILE`)",
                name = t.name,
                dir = dir.0.display(),
                host = h.name,
                addr = h.address,
                lab = lh.address,
            );
        }
        Ok(Some(state))
    }

    pub fn load(&self) -> anyhow::Result<Option<LabState>> {
        match std::fs::read_to_string(self.state()) {
            Ok(s) => Ok(Some(serde_json::from_str(&s).with_context(|| format!("corrupt lab state {}", self.state().display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.state().display())),
        }
    }
}

/// `$SCALECTL_HOME`, else `$XDG_STATE_HOME/scalectl`, else `~/.local/state/scalectl`.
pub fn state_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SCALECTL_HOME") {
        // Absolute, because the lab writes it into files read from elsewhere (Ansible's inventory).
        return std::path::absolute(&h).unwrap_or_else(|_| PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("scalectl");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/scalectl")
}

pub fn container_name(t: &Topology, host: &str) -> String {
    format!("{}-{}", t.name, host)
}

pub fn network_name(t: &Topology) -> String {
    format!("scalectl-{}", t.name)
}

pub async fn connect() -> anyhow::Result<Docker> {
    let d = Docker::connect_with_local_defaults().context("cannot reach the Docker engine")?;
    d.negotiate_version()
        .await
        .context("cannot reach the Docker engine at /var/run/docker.sock (is dockerd running? `docker info` tells)")
}

/// Progress lines for people; silent for pipelines.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

pub async fn up(t: &Topology, dir: &LabDir, progress: Progress<'_>) -> anyhow::Result<LabState> {
    let docker = connect().await?;
    let image = ensure_image(&docker, progress).await?;
    std::fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    let public_key = ensure_key(&dir.key())?;
    let network = network_name(t);
    ensure_network(&docker, t, &network).await?;

    let mut state = LabState { name: t.name.clone(), network: network.clone(), image: image.clone(), hosts: Default::default() };
    let mut known_hosts = String::new();
    for h in &t.hosts {
        let name = container_name(t, &h.name);
        let mut exists = docker.inspect_container(&name, None).await.ok();
        // A host made by an older scalectl, without the capabilities hosts need now: made again
        // (a lab host holds nothing that is not deployed again).
        let caps = exists.as_ref().and_then(|c| c.host_config.as_ref()).and_then(|h| h.cap_add.clone()).unwrap_or_default();
        if exists.is_some() && !caps.iter().any(|c| c == "NET_ADMIN" || c == "CAP_NET_ADMIN") {
            progress(&format!("{}: making container {name} again (it lacks NET_ADMIN, which the host's packet filter needs)", h.name));
            docker.remove_container(&name, Some(bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build())).await.with_context(|| format!("cannot remove {name}"))?;
            exists = None;
        }
        let running = exists.as_ref().and_then(|c| c.state.as_ref()).and_then(|s| s.running).unwrap_or(false);
        if exists.is_none() {
            progress(&format!("{}: creating container {name}", h.name));
            create_host(&docker, t, h, &name, &network, &image).await?;
        }
        if !running {
            docker.start_container(&name, None).await.with_context(|| format!("cannot start container {name}"))?;
        }
        wait_booted(&docker, &name).await?;
        let keys = exec(&docker, &name, &setup_script(&h.ssh.user, &public_key)).await.with_context(|| format!("{}: setting up sshd and the deploy user", h.name))?;
        let port = ssh_port(&docker, &name).await?;
        for line in keys.lines().filter(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-")) {
            let mut parts = line.split_whitespace();
            if let (Some(kind), Some(key)) = (parts.next(), parts.next()) {
                known_hosts.push_str(&format!("[127.0.0.1]:{port} {kind} {key}\n"));
            }
        }
        progress(&format!("{}: ready, ssh {}@127.0.0.1 -p {port}", h.name, h.ssh.user));
        state.hosts.insert(h.name.clone(), LabHost { container: name, ssh_port: port, user: h.ssh.user.clone(), address: h.address.clone() });
    }
    write_atomic(&dir.known_hosts(), known_hosts.as_bytes())?;
    write_atomic(&dir.state(), serde_json::to_string_pretty(&state)?.as_bytes())?;
    let inventory = crate::render::render_one(
        &crate::render::Templates::embedded(),
        "lab/inventory.yml.j2",
        serde_json::json!({
            "lab": state,
            "dir": dir.0.display().to_string(),
            "key": dir.key().display().to_string(),
            "known_hosts": dir.known_hosts().display().to_string(),
        }),
    )?;
    write_atomic(&dir.inventory(), inventory.as_bytes())?;
    Ok(state)
}

/// One host of `lab status`.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub container: String,
    /// created, running, exited, ... or missing
    pub state: String,
    pub ssh_port: Option<u16>,
    pub published: Vec<String>,
}

pub async fn status(t: &Topology) -> anyhow::Result<Vec<HostStatus>> {
    let docker = connect().await?;
    let mut out = Vec::new();
    for h in &t.hosts {
        let name = container_name(t, &h.name);
        match docker.inspect_container(&name, None).await {
            Ok(c) => {
                let state = c.state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_else(|| "unknown".into());
                let ports = c.network_settings.and_then(|n| n.ports).unwrap_or_default();
                let mut published = Vec::new();
                let mut ssh = None;
                for (cport, binds) in ports {
                    for b in binds.unwrap_or_default() {
                        let hp = b.host_port.unwrap_or_default();
                        if cport == "22/tcp" {
                            ssh = hp.parse().ok();
                        } else {
                            published.push(format!("127.0.0.1:{hp}->{cport}"));
                        }
                    }
                }
                published.sort();
                out.push(HostStatus { host: h.name.clone(), container: name, state, ssh_port: ssh, published });
            }
            Err(_) => out.push(HostStatus { host: h.name.clone(), container: name, state: "missing".into(), ssh_port: None, published: vec![] }),
        }
    }
    Ok(out)
}

/// Remove every container and network labelled with this lab, and the lab's state directory.
pub async fn down(t: &Topology, dir: &LabDir, progress: Progress<'_>) -> anyhow::Result<Vec<String>> {
    let docker = connect().await?;
    let mut removed = Vec::new();
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_LAB}={}", t.name)])]);
    let list = docker
        .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
        .await?;
    for c in list {
        let name = c.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default();
        let id = c.id.unwrap_or_default();
        progress(&format!("removing container {name}"));
        docker
            .remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
            .await
            .with_context(|| format!("cannot remove container {name}"))?;
        removed.push(name);
    }
    let nets = docker.list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build())).await?;
    for n in nets {
        let name = n.name.unwrap_or_default();
        progress(&format!("removing network {name}"));
        docker.remove_network(&name).await.with_context(|| format!("cannot remove network {name}"))?;
        removed.push(name);
    }
    if dir.0.exists() {
        std::fs::remove_dir_all(&dir.0).with_context(|| format!("cannot remove {}", dir.0.display()))?;
    }
    Ok(removed)
}

/// The lab's Debian base image (pulled, or built with debootstrap once): also the base the tests
/// build their stand-ins for the official images on.
pub async fn base_image(progress: Progress<'_>) -> anyhow::Result<String> {
    ensure_image(&connect().await?, progress).await
}

async fn ensure_image(docker: &Docker, progress: Progress<'_>) -> anyhow::Result<String> {
    if let Ok(img) = std::env::var("SCALECTL_LAB_IMAGE") {
        docker.inspect_image(&img).await.with_context(|| format!("SCALECTL_LAB_IMAGE {img} is not on the engine"))?;
        return Ok(img);
    }
    for img in [OFFICIAL_IMAGE, LOCAL_IMAGE] {
        if docker.inspect_image(img).await.is_ok() {
            return Ok(img.to_string());
        }
    }
    progress(&format!("pulling {OFFICIAL_IMAGE}"));
    let mut pull = docker.create_image(Some(CreateImageOptionsBuilder::default().from_image(OFFICIAL_IMAGE).build()), None, None);
    let mut pulled = true;
    while let Some(r) = pull.next().await {
        if r.is_err() {
            pulled = false;
            break;
        }
    }
    if pulled && docker.inspect_image(OFFICIAL_IMAGE).await.is_ok() {
        bail!(
            "{OFFICIAL_IMAGE} was pulled but has no systemd or sshd; build the lab image instead: \
SCALECTL_LAB_IMAGE is not set and {LOCAL_IMAGE} is missing"
        );
    }
    progress(&format!("no registry reachable: building {LOCAL_IMAGE} with debootstrap (about a minute, once)"));
    build_local_image(docker).await?;
    Ok(LOCAL_IMAGE.to_string())
}

/// debootstrap a minimal Debian with systemd, sshd and sudo, and import it as an image.
async fn build_local_image(docker: &Docker) -> anyhow::Result<()> {
    let root = tempfile::Builder::new().prefix("scalectl-lab-rootfs").tempdir().context("cannot create a temporary directory")?;
    let status = tokio::process::Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,openssh-server,sudo,iproute2,ca-certificates,curl",
            "bookworm",
        ])
        .arg(root.path())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("cannot run debootstrap (apt-get install debootstrap; it needs root)")?;
    if !status.success() {
        bail!("debootstrap failed ({status})");
    }
    let tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let stdout = tar.stdout.context("tar has no stdout")?;
    let stream = tokio_util::io::ReaderStream::new(stdout);
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("scalectl/lab-base")
        .tag("bookworm")
        .changes(vec![r#"CMD ["/lib/systemd/systemd"]"#.to_string()])
        .build();
    let mut import = docker.create_image(Some(opts), Some(bollard::body_try_stream(stream)), None);
    while let Some(r) = import.next().await {
        r.context("importing the lab image failed")?;
    }
    Ok(())
}

fn ensure_key(path: &Path) -> anyhow::Result<String> {
    use ssh_key::{Algorithm, LineEnding, PrivateKey, rand_core::OsRng};
    let key = if path.exists() {
        PrivateKey::read_openssh_file(path).with_context(|| format!("cannot read the lab key {}", path.display()))?
    } else {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).context("cannot generate a key")?;
        let text = key.to_openssh(LineEnding::LF).context("cannot encode the key")?;
        write_private(path, text.as_bytes())?;
        key
    };
    key.public_key().to_openssh().context("cannot encode the public key")
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn ensure_network(docker: &Docker, t: &Topology, name: &str) -> anyhow::Result<()> {
    if docker.inspect_network(name, None).await.is_ok() {
        return Ok(());
    }
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([
                (LABEL_LAB.to_string(), t.name.clone()),
                (LABEL_OWNED.to_string(), "scalectl-lab".to_string()),
            ])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create network {name}"))?;
    Ok(())
}

/// Container ports of a host that the topology's `lab.publish` asks for, with their 127.0.0.1 port.
pub fn published_ports(t: &Topology, h: &crate::topology::Host) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for (service, host_port) in t.lab.publish.iter() {
        let container_port = match service {
            Service::LoadBalancer if h.has(Role::Lb) => t.load_balancer.listen,
            Service::Prometheus if h.has(Role::Monitor) => t.observability.prometheus_port,
            Service::Grafana if h.has(Role::Monitor) => ports::GRAFANA,
            Service::Redis if h.has(Role::Redis) && t.redis.is_some() => t.redis_port().unwrap_or_default(),
            _ => continue,
        };
        out.push((container_port, host_port));
    }
    out
}

async fn create_host(docker: &Docker, t: &Topology, h: &crate::topology::Host, name: &str, network: &str, image: &str) -> anyhow::Result<()> {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    bindings.insert("22/tcp".into(), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]));
    for (cport, hport) in published_ports(t, h) {
        bindings.insert(
            format!("{cport}/tcp"),
            Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(hport.to_string()) }]),
        );
    }
    let exposed: Vec<String> = bindings.keys().cloned().collect();
    let host_config = HostConfig {
        // NET_ADMIN: each host's packet filter (scalectl's nftables table), in its own netns.
        cap_add: Some(vec!["SYS_ADMIN".into(), "NET_ADMIN".into()]),
        security_opt: Some(vec!["seccomp=unconfined".into()]),
        tmpfs: Some(HashMap::from([
            ("/run".into(), String::new()),
            ("/run/lock".into(), String::new()),
            ("/tmp".into(), String::new()),
        ])),
        binds: Some(vec!["/sys/fs/cgroup:/sys/fs/cgroup:rw".into()]),
        port_bindings: Some(bindings),
        network_mode: Some(network.to_string()),
        ..Default::default()
    };
    let endpoint = EndpointSettings { aliases: Some(vec![h.address.clone(), h.name.clone()]), ..Default::default() };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(h.name.clone()),
        env: Some(vec!["container=docker".into()]),
        cmd: Some(vec!["/lib/systemd/systemd".into()]),
        exposed_ports: Some(exposed),
        labels: Some(HashMap::from([
            (LABEL_LAB.to_string(), t.name.clone()),
            (LABEL_HOST.to_string(), h.name.clone()),
            (LABEL_OWNED.to_string(), "scalectl-lab".to_string()),
        ])),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(network.to_string(), endpoint)])) }),
        stop_signal: Some("SIGRTMIN+3".into()),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
        .await
        .with_context(|| format!("cannot create container {name}"))?;
    Ok(())
}

async fn wait_booted(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let state = exec(docker, name, "systemctl is-system-running 2>/dev/null || true").await.unwrap_or_default();
        let s = state.trim();
        if s == "running" || s == "degraded" {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            // systemd that never answers at all is most often one that could not start: every
            // lab host's systemd takes inotify instances, and the kernel's default of 128 per
            // user runs out at about 20 hosts on one machine.
            let hint = if s.is_empty() {
                format!(
                    "; systemd never answered: with many lab hosts on one machine, raise the kernel's inotify limit \
(fs.inotify.max_user_instances is {} here; `sysctl -w fs.inotify.max_user_instances=8192`)",
                    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances").unwrap_or_default().trim()
                )
            } else {
                String::new()
            };
            bail!("container {name} did not finish booting in 60 s (systemd says `{s}`){hint}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Fresh host keys per container (the image's are shared), the login user with passwordless sudo,
/// the lab's public key authorized. Idempotent. Prints the host's public keys.
fn setup_script(user: &str, public_key: &str) -> String {
    let q = super::commands::q;
    let home = if user == "root" { "/root".to_string() } else { format!("/home/{user}") };
    let mut s = String::from("set -e\n");
    s.push_str("if [ ! -e /etc/ssh/.scalectl-host-keys ]; then rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null; touch /etc/ssh/.scalectl-host-keys; systemctl restart ssh; fi\n");
    if user != "root" {
        s.push_str(&format!("id -u {u} >/dev/null 2>&1 || useradd -m -s /bin/bash {u}\n", u = q(user)));
        s.push_str(&format!("printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {u} > /etc/sudoers.d/scalectl && chmod 440 /etc/sudoers.d/scalectl\n", u = q(user)));
    }
    s.push_str(&format!(
        "install -d -m 700 -o {u} -g {u} {h}/.ssh\nprintf '%s\\n' {k} > {h}/.ssh/authorized_keys\nchown {u}:{u} {h}/.ssh/authorized_keys\nchmod 600 {h}/.ssh/authorized_keys\n",
        u = q(user),
        h = q(&home),
        k = q(public_key)
    ));
    s.push_str("systemctl is-active -q ssh || systemctl start ssh\ncat /etc/ssh/ssh_host_*_key.pub\n");
    s
}

async fn ssh_port(docker: &Docker, name: &str) -> anyhow::Result<u16> {
    let c = docker.inspect_container(name, None).await?;
    c.network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("22/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("container {name} has no published ssh port"))
}

/// Run a shell script in a container (as root), returning stdout; a non-zero exit is an error.
pub async fn exec(docker: &Docker, container: &str, script: &str) -> anyhow::Result<String> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["sh", "-c", script]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdOut { message } => stdout.push_str(&String::from_utf8_lossy(&message)),
                bollard::container::LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
                _ => {}
            }
        }
    }
    let inspect = docker.inspect_exec(&created.id).await?;
    match inspect.exit_code {
        Some(0) | None => Ok(stdout),
        Some(code) => bail!("`{}` exited {code}: {}", script.lines().next().unwrap_or(""), stderr.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_script_quotes_the_key_and_grants_sudo() {
        let s = setup_script("deploy", "ssh-ed25519 AAAA lab");
        assert!(s.contains("useradd -m -s /bin/bash deploy"));
        assert!(s.contains("printf '%s\\n' 'ssh-ed25519 AAAA lab' > /home/deploy/.ssh/authorized_keys"));
        assert!(s.contains("NOPASSWD:ALL"));
        assert!(!setup_script("root", "k").contains("sudoers"));
    }
}
