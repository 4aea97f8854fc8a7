#!/usr/bin/env bash
# Render benchmark: whole-process time for examples/three-hosts.yaml and for a generated 1,000-host
# topology, with peak memory. Prints figures side by side against the issue's targets.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
for p in hyperfine time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || { apt-get update -qq; apt-get install -y -qq "$p" >/dev/null; }
done
cargo build --locked --release --bin scalectl -q
bin=$PWD/target/release/scalectl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/big.yaml" <<'PY'
import sys
hosts = ["name: big", "app: {port: 3000, instances: 2}", "hosts:",
         "  lb-1: {address: 10.1.0.1, roles: [lb]}",
         "  data-1: {address: 10.1.0.2, roles: [redis, monitor]}"]
for i in range(998):
    hosts.append(f"  app-{i+1}: {{address: 10.2.{i // 250}.{i % 250 + 1}, roles: [app]}}")
open(sys.argv[1], "w").write("\n".join(hosts) + "\n")
PY

run() { # name file
  local json="$work/$1.json"
  hyperfine -N --warmup 3 --runs "${3:-20}" --export-json "$json" \
    "$bin render -f $2 -o $work/out-$1 --cores 2" >/dev/null 2>&1
  local mean max
  mean=$(python3 -c "import json;print(round(json.load(open('$json'))['results'][0]['mean']*1000,1))")
  max=$(/usr/bin/time -f %M "$bin" render -f "$2" -o "$work/out-$1" --cores 2 2>&1 >/dev/null | tail -1)
  local files
  files=$(find "$work/out-$1" -type f | wc -l)
  printf '%-28s %8s ms %10s MB %8s files\n' "$1" "$mean" "$(python3 -c "print(round($max/1024,1))")" "$files"
  echo "$1 $mean $max" >> "$work/results"
}

printf '%-28s %11s %13s %14s\n' topology "mean time" "peak memory" "output"
run three-hosts examples/three-hosts.yaml 30
run generated-1000-hosts "$work/big.yaml" 5
python3 - "$work/results" <<'PY'
import sys
r = {l.split()[0]: (float(l.split()[1]), int(l.split()[2]) / 1024) for l in open(sys.argv[1])}
t, big = r["three-hosts"], r["generated-1000-hosts"]
print()
print(f"three-hosts:   {t[0]:.1f} ms vs target 50 ms   -> {t[0]/50:.2f}x of budget")
print(f"1,000 hosts:   {big[0]:.1f} ms vs target 1000 ms -> {big[0]/1000:.2f}x of budget; "
      f"peak {big[1]:.1f} MB vs 200 MB -> {big[1]/200:.2f}x")
print(f"1,000 hosts / three-hosts time ratio: {big[0]/t[0]:.1f}x")
PY
