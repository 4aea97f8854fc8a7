//! What a deploy ships, read on the machine that runs scalectl: scale-api's binary, or the user's
//! program as one tar of its release directory (its `node_modules` included), packed so that the
//! same files always make the same bytes and so the same release id.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::plan::{MAX_RELEASE_BYTES, Release};
use crate::topology::Topology;

/// A release ready to upload.
pub struct Artifact {
    /// Where it was read from (a file, or the program's directory).
    pub path: PathBuf,
    /// What is uploaded: the binary, or the tar.
    pub bytes: Vec<u8>,
    pub release: Release,
}

/// The release at `path` for this topology: a program's directory is packed, a `.tar` taken as
/// it is; anything else is scale-api's binary.
pub fn load(t: &Topology, path: &Path) -> anyhow::Result<Artifact> {
    if let Some(image) = t.app.program.as_ref().and_then(|p| p.image.as_ref()) {
        // Nothing to read here: the engine resolves the reference to the image it names when
        // planning, and that image is the release. The reference stands for it until then.
        let bytes = image.as_bytes().to_vec();
        return Ok(Artifact { path: PathBuf::from(image), release: Release::new(&bytes, false), bytes });
    }
    if t.app.program.is_none() {
        let bytes = std::fs::read(path).with_context(|| {
            format!("cannot read the scale-api binary {} (build it with `cargo build --release`, or pass --release FILE)", path.display())
        })?;
        return Ok(Artifact { path: path.to_path_buf(), release: Release::new(&bytes, false), bytes });
    }
    let meta = std::fs::metadata(path).with_context(|| format!("the program's release {} does not exist (app.program.release, or --release)", path.display()))?;
    if t.target == crate::topology::Target::Docker && meta.is_dir() {
        anyhow::ensure!(
            path.join("Dockerfile").is_file(),
            "{} has no Dockerfile: on `target: docker` the program's release directory is the build context of its image",
            path.display()
        );
    }
    let bytes = if meta.is_dir() && t.target == crate::topology::Target::Docker {
        // The build context, as Docker's client sends one: what .dockerignore lists left out.
        let ignore = match std::fs::read_to_string(path.join(".dockerignore")) {
            Ok(text) => Some(super::dockerignore::Rules::parse(&text).with_context(|| format!("cannot read {}", path.join(".dockerignore").display()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.join(".dockerignore").display())),
        };
        pack_context(path, ignore.as_ref())?
    } else if meta.is_dir() {
        pack(path)?
    } else if path.extension().is_some_and(|e| e == "tar") {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        check_tar(&bytes).with_context(|| format!("the program's release {} cannot be deployed", path.display()))?;
        bytes
    } else {
        anyhow::bail!("the program's release {} must be a directory or a .tar archive", path.display());
    };
    Ok(Artifact { path: path.to_path_buf(), release: Release::new(&bytes, true), bytes })
}

/// Where the topology says its program's release is: relative to the topology file.
pub fn default_path(t: &Topology, topology_file: &Path) -> Option<PathBuf> {
    let release = t.app.program.as_ref()?.release.as_ref()?;
    let dir = topology_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(dir.join(release))
}

/// The directory as a tar, entries in name order with fixed times and owners (tar's deterministic
/// headers): packing the same files twice gives the same bytes. Symbolic links stay links
/// (node_modules/.bin); `.git` is left out. Only regular files, directories and links that stay
/// inside the directory are packed, at most [`MAX_RELEASE_BYTES`] in all: anything else (a device
/// node, a FIFO, a link to /etc) is refused with its path.
pub fn pack(dir: &Path) -> anyhow::Result<Vec<u8>> {
    pack_context(dir, None)
}

/// [`pack`], leaving out what `ignore` (a build context's `.dockerignore`) excludes; the
/// Dockerfile and `.dockerignore` themselves always go, as Docker's client sends them.
pub fn pack_context(dir: &Path, ignore: Option<&super::dockerignore::Rules>) -> anyhow::Result<Vec<u8>> {
    let mut entries = Vec::new();
    let root = dir.canonicalize().with_context(|| format!("cannot read {}", dir.display()))?;
    let mut size = 0;
    walk(&root, Path::new(""), ignore, &mut entries, &mut size)?;
    anyhow::ensure!(!entries.is_empty(), "the program's release {} is an empty directory", dir.display());
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    for rel in &entries {
        b.append_path_with_name(dir.join(rel), rel).with_context(|| format!("cannot pack {}", dir.join(rel).display()))?;
    }
    b.into_inner().context("cannot finish the release archive")
}

fn walk(root: &Path, rel: &Path, ignore: Option<&super::dockerignore::Rules>, out: &mut Vec<PathBuf>, size: &mut u64) -> anyhow::Result<()> {
    let here = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&here)
        .with_context(|| format!("cannot read {}", here.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", here.display()))?;
    names.sort();
    for name in names {
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let child = rel.join(&name);
        let path = root.join(&child);
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let kind = meta.file_type();
        if let Some(rules) = ignore {
            let always = rel.as_os_str().is_empty() && (name == "Dockerfile" || name == ".dockerignore");
            if !always && rules.excludes(&child.to_string_lossy()) {
                // An excluded directory is still walked when a `!` line may bring back something in it.
                if kind.is_dir() && rules.has_exceptions() {
                    walk(root, &child, ignore, out, size)?;
                }
                continue;
            }
        }
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).with_context(|| format!("cannot read {}", path.display()))?;
            // Where its text says, and where it leads on this machine when it leads anywhere.
            let inside = stays_inside(&child, &target) && path.canonicalize().map_or(true, |real| real.starts_with(root));
            anyhow::ensure!(
                inside,
                "{} is a symbolic link to {}, outside the release: a release holds only what it ships (copy the file in, or install it as a package)",
                path.display(),
                target.display()
            );
        } else if kind.is_file() {
            *size += meta.len();
            anyhow::ensure!(*size <= MAX_RELEASE_BYTES, "the program's release {} holds more than {MAX_RELEASE_BYTES} bytes: leave out what the app does not need at run time", root.display());
        } else if !kind.is_dir() {
            anyhow::bail!("{} is neither a file, a directory nor a symbolic link (a device node, FIFO or socket): a release cannot ship it", path.display());
        }
        out.push(child.clone());
        if kind.is_dir() {
            walk(root, &child, ignore, out, size)?;
        }
    }
    Ok(())
}

/// Whether a link at `link` (relative to the release) whose text is `target` resolves, as text,
/// inside the release: a relative target that never climbs above the release's root.
fn stays_inside(link: &Path, target: &Path) -> bool {
    use std::path::Component;
    let mut depth: i64 = link.parent().map_or(0, |p| p.components().count() as i64);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A `.tar` given as the release is held to what `pack` makes: regular files, directories and
/// links that stay inside, with relative names, at most [`MAX_RELEASE_BYTES`] unpacked. (Hosts
/// check the same again as they unpack, as an unprivileged user.)
pub fn check_tar(bytes: &[u8]) -> anyhow::Result<()> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(bytes);
    let mut size = 0u64;
    for entry in archive.entries().context("not a tar archive")? {
        let entry = entry.context("not a tar archive")?;
        let name = entry.path().context("an entry's name cannot be read")?.into_owned();
        anyhow::ensure!(
            name.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)),
            "{} is not a relative name inside the release",
            name.display()
        );
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                size += entry.size();
                anyhow::ensure!(size <= MAX_RELEASE_BYTES, "it holds more than {MAX_RELEASE_BYTES} bytes");
            }
            // A pax global header (`git archive` writes one) makes no file.
            EntryType::Directory | EntryType::XGlobalHeader => {}
            EntryType::Symlink | EntryType::Link => {
                let target = entry.link_name().context("a link's target cannot be read")?.unwrap_or_default().into_owned();
                let inside = if entry.header().entry_type() == EntryType::Link { stays_inside(Path::new("x"), &target) } else { stays_inside(&name, &target) };
                anyhow::ensure!(inside, "{} is a link to {}, outside the release", name.display(), target.display());
            }
            other => anyhow::bail!("{} is a {other:?} entry: a release holds only regular files, directories and symbolic links", name.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_files_pack_to_the_same_bytes_and_unpack_with_real_tar() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/a/lib")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("server.js"), "console.log(1)\n").unwrap();
        std::fs::write(dir.path().join("node_modules/a/lib/index.js"), "module.exports = 1\n").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref\n").unwrap();
        std::os::unix::fs::symlink("../a/lib/index.js", dir.path().join("node_modules/a/bin")).unwrap();
        let one = pack(dir.path()).unwrap();
        // Touched again later: times differ, bytes do not.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(dir.path().join("server.js"), "console.log(1)\n").unwrap();
        assert_eq!(pack(dir.path()).unwrap(), one, "deterministic");
        std::fs::write(dir.path().join("server.js"), "console.log(2)\n").unwrap();
        assert_ne!(Release::new(&pack(dir.path()).unwrap(), true).id, Release::new(&one, true).id);

        let out = tempfile::tempdir().unwrap();
        let tar = out.path().join("r.tar");
        std::fs::write(&tar, &one).unwrap();
        let x = std::process::Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(out.path()).status().unwrap();
        assert!(x.success());
        assert_eq!(std::fs::read_to_string(out.path().join("server.js")).unwrap(), "console.log(1)\n");
        assert_eq!(std::fs::read_link(out.path().join("node_modules/a/bin")).unwrap(), Path::new("../a/lib/index.js"));
        assert!(!out.path().join(".git").exists(), ".git is not shipped");
    }

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            if *kind == tar::EntryType::Block {
                h.set_device_major(8).unwrap();
                h.set_device_minor(0).unwrap();
            }
            if link.is_empty() {
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            } else {
                b.append_link(&mut h, name, link).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn pack_refuses_what_is_not_a_file_a_directory_or_a_link_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/index.js"), "1\n").unwrap();
        std::os::unix::fs::symlink("lib/index.js", dir.path().join("main.js")).unwrap();
        pack(dir.path()).expect("a link inside is fine");
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("lib/.ready")).unwrap();
        let e = format!("{:#}", pack(dir.path()).unwrap_err());
        assert!(e.contains("lib/.ready is a symbolic link to /etc/shadow, outside the release"), "{e}");
        std::fs::remove_file(dir.path().join("lib/.ready")).unwrap();
        std::os::unix::fs::symlink("../../x", dir.path().join("lib/up")).unwrap();
        assert!(format!("{:#}", pack(dir.path()).unwrap_err()).contains("lib/up is a symbolic link to ../../x"));
        std::fs::remove_file(dir.path().join("lib/up")).unwrap();
        let fifo = std::process::Command::new("mkfifo").arg(dir.path().join("pipe")).status().unwrap();
        assert!(fifo.success());
        let e = format!("{:#}", pack(dir.path()).unwrap_err());
        assert!(e.contains("pipe is neither a file, a directory nor a symbolic link"), "{e}");
    }

    #[test]
    fn a_given_tar_with_a_device_node_or_a_link_outside_is_refused() {
        use tar::EntryType::*;
        check_tar(&tar_with(&[("a", Directory, ""), ("a/x.js", Regular, ""), ("a/l", Symlink, "x.js"), ("a/h", Link, "a/x.js")])).unwrap();
        let e = format!("{:#}", check_tar(&tar_with(&[("disk", Block, "")])).unwrap_err());
        assert!(e.contains("disk is a Block entry"), "{e}");
        let e = format!("{:#}", check_tar(&tar_with(&[(".ready", Symlink, "/etc/nologin")])).unwrap_err());
        assert!(e.contains(".ready is a link to /etc/nologin, outside the release"), "{e}");
        assert!(check_tar(&tar_with(&[("a/l", Symlink, "../../etc")])).is_err());
        assert!(check_tar(&tar_with(&[("h", Link, "../etc/shadow")])).is_err());
    }

    /// The hosts' unpack script (apply's, the Ansible role's), run for real as root on this
    /// machine: a tar holding a block device, or a link out of the release, is refused and leaves
    /// nothing; a good one is unpacked owned by root.
    #[test]
    fn hosts_unpack_as_nobody_and_refuse_devices_and_links_out() {
        if !crate::exec::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        use tar::EntryType::*;
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let unpack = |name: &str, tar: Vec<u8>| {
            let t = base.path().join(name);
            std::fs::create_dir(&t).unwrap();
            let file = base.path().join(format!("{name}.tar"));
            std::fs::write(&file, tar).unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
            // As the Ansible role and cloud-init run it: `unpack-release.sh TAR DIR`.
            let script = format!("set -e\n{}", crate::exec::commands::unpack_release("\"$1\"", "\"$2\""));
            (t.clone(), std::process::Command::new("sh").arg("-c").arg(script).arg("sh").arg(&file).arg(&t).output().unwrap())
        };
        let (t, out) = unpack("dev", tar_with(&[("ok.js", Regular, ""), ("disk", Block, "")]));
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("the release is refused") || said.contains("Cannot mknod"), "{said}");
        assert!(!t.join("disk").exists() && !t.exists(), "the device was made, or the directory kept");
        let (t, out) = unpack("link", tar_with(&[(".ready", Symlink, "/etc/nologin")]));
        assert!(!out.status.success() && !t.exists());
        assert!(String::from_utf8_lossy(&out.stderr).contains(".ready -> /etc/nologin leads outside the release"), "{}", String::from_utf8_lossy(&out.stderr));
        let (t, out) = unpack("good", tar_with(&[("lib", Directory, ""), ("lib/x.js", Regular, ""), ("main.js", Symlink, "lib/x.js")]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(t.join("lib/x.js")).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o644));
        assert_eq!(std::fs::read_link(t.join("main.js")).unwrap(), Path::new("lib/x.js"));
    }
}
