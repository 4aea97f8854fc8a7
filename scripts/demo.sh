#!/usr/bin/env bash
# The main job until the lab lands: validate and render the three-host example, then show the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --bin scalectl
out=${1:-out/three-hosts}
./target/release/scalectl validate -f examples/three-hosts.yaml
./target/release/scalectl render -f examples/three-hosts.yaml -o "$out"
find "$out" -type f | sort
