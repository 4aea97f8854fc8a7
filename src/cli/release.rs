//! What a deploy ships, read on the machine that runs scalectl: scale-api's binary, or the user's
//! program as one tar of its release directory (its `node_modules` included), packed so that the
//! same files always make the same bytes and so the same release id.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::plan::Release;
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
    let bytes = if meta.is_dir() {
        pack(path)?
    } else if path.extension().is_some_and(|e| e == "tar") {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
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
/// (node_modules/.bin); `.git` is left out.
pub fn pack(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries)?;
    anyhow::ensure!(!entries.is_empty(), "the program's release {} is an empty directory", dir.display());
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    for rel in &entries {
        b.append_path_with_name(dir.join(rel), rel).with_context(|| format!("cannot pack {}", dir.join(rel).display()))?;
    }
    b.into_inner().context("cannot finish the release archive")
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
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
        let meta = std::fs::symlink_metadata(root.join(&child)).with_context(|| format!("cannot read {}", root.join(&child).display()))?;
        out.push(child.clone());
        if meta.is_dir() {
            walk(root, &child, out)?;
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
}
