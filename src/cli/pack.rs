//! `scalectl pack`: the program's release as the one tar apply would upload (the same bytes, so the
//! same release id), for the Ansible playbook and for pipelines that build an artifact once.

use std::path::PathBuf;

use anyhow::Context;

use super::args::ReleaseArg;
use super::{Failure, TopologyArg};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  scalectl pack -f examples/node.yaml -o hello.tar\n  \
ansible-playbook -i out/ansible/inventory.yml ansible/site.yml -e scalectl_render_dir=$PWD/out -e scalectl_release=$PWD/hello.tar\n\n\
The tar holds the release directory's files in name order with fixed times and owners (`.git` left out),\n\
so packing the same files again gives the same bytes and the same release id.")]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,
    #[command(flatten)]
    pub release: ReleaseArg,
    /// Where to write the tar (written beside it first, then renamed)
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(a: Args, color: bool) -> Result<(), Failure> {
    let t = super::load(&a.topology.file, color)?;
    if t.app.program.is_none() {
        return Err(anyhow::anyhow!("{} deploys scale-api, whose release is its binary: pack is for app.program's release directory", a.topology.file.display()).into());
    }
    let artifact = a.release.load(&t, &a.topology.file)?;
    super::session::write_atomic(&a.out, &artifact.bytes).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "packed {} into {}: release {} ({})",
        artifact.path.display(),
        a.out.display(),
        artifact.release.id,
        bytesize::ByteSize::b(artifact.bytes.len() as u64).display().iec()
    );
    Ok(())
}
