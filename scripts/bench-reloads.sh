#!/usr/bin/env bash
# Failed requests while `scalectl reload` runs several times in a row under load, on the lab
# (examples/lab.yaml, through its load balancer at 127.0.0.1:8080): one `wrk -t1 -c16` run per
# reload, lasting as long as the reload, figures side by side. Any failure is a defect: a planned
# restart must never fail a request or count as an instance failure at the load balancer.
#   SCALECTL=path/to/scalectl RELOADS=3 bash scripts/bench-reloads.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
export SCALECTL_HOME=${SCALECTL_HOME:-$PWD/target/lab-home}
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)"; export LAB_REDIS_PASSWORD   # made by scripts/setup.sh
s=${SCALECTL:-./target/debug/scalectl}
lab=examples/lab.yaml
reloads=${RELOADS:-3}
$s lab up -f $lab >/dev/null
$s apply -f $lab --release "$PWD/target/release/scale-api" --yes >/dev/null
out=$(mktemp -d)
printf "%-8s %10s %10s %10s %10s\n" "reload" "seconds" "requests" "failed" "failed %"
for i in $(seq 1 "$reloads"); do
  wrk -t1 -c16 -d60s --latency http://127.0.0.1:8080/ >"$out/wrk" 2>&1 & w=$!
  sleep 1
  t0=$(date +%s.%N)
  $s reload -f $lab --yes >"$out/reload" 2>&1 || { echo "reload $i failed:"; cat "$out/reload"; }
  t1=$(date +%s.%N)
  sleep 1
  kill -INT $w 2>/dev/null || true; wait $w 2>/dev/null || true
  total=$(awk '/requests in/ {print $1}' "$out/wrk")
  bad=$(awk '/Non-2xx/ {print $NF}' "$out/wrk"); bad=${bad:-0}
  sock=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$out/wrk"); sock=${sock:-0}
  awk -v i="$i" -v a="$t0" -v b="$t1" -v n="$total" -v f="$((bad + sock))" 'BEGIN { printf "%-8s %10.1f %10d %10d %9.2f%%\n", i, b - a, n, f, n ? 100 * f / n : 0 }'
done
rm -rf "$out"
