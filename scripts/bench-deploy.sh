#!/usr/bin/env bash
# Deploy time, scalectl apply against ansible-playbook (ansible/site.yml), on the same lab
# (examples/lab.yaml, 5 hosts), side by side in one run: a first deploy onto fresh hosts (packages
# included) and a no-change deploy. Prints the figures and scalectl's share of Ansible's time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)"; export LAB_REDIS_PASSWORD
cargo build --locked --release --workspace --bins 2>/dev/null
export SCALECTL_HOME=${SCALECTL_HOME:-$PWD/target/bench-home}
s=./target/release/scalectl
lab=examples/lab.yaml
release=$PWD/target/release/scale-api
out=$(mktemp -d)
$s render -f $lab -o "$out/render" >/dev/null
now() { date +%s.%N; }
fresh_lab() { $s lab down -f $lab >/dev/null 2>&1 || true; $s lab up -f $lab >/dev/null 2>&1; }
ansible() {
  (cd ansible && ansible-playbook -i "$out/render/ansible/inventory.yml" -i "$SCALECTL_HOME/lab/lab/inventory.yml" site.yml \
    -e scalectl_render_dir="$out/render" -e scalectl_release="$release" >"$out/ansible.log" 2>&1)
}

fresh_lab
t0=$(now); $s apply -f $lab --release "$release" --yes >/dev/null 2>&1; t1=$(now)
$s apply -f $lab --release "$release" --yes >/dev/null 2>&1; t2=$(now)
fresh_lab
t3=$(now); ansible; t4=$(now)
ansible; t5=$(now)
$s lab down -f $lab >/dev/null 2>&1
rm -rf "$out"

awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v f="$t5" 'BEGIN {
  sf = b - a; sn = c - b; af = e - d; an = f - e
  printf "%-28s %12s %16s %10s\n", "deploy to 5 lab hosts", "scalectl (s)", "ansible (s)", "ratio"
  printf "%-28s %12.2f %16.2f %9.2fx\n", "first (fresh hosts)", sf, af, sf / af
  printf "%-28s %12.2f %16.2f %9.3fx\n", "no change", sn, an, sn / an
  printf "target: scalectl at most 0.33x of Ansible'"'"'s time in both rows\n"
}'
