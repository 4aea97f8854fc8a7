#!/usr/bin/env bash
# The main job: the local lab of examples/lab.yaml (five containers with systemd and sshd), deployed
# by scalectl over SSH, then requests through its load balancer at 127.0.0.1:8080, then doctor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked --release --workspace --bins
scalectl=./target/release/scalectl
# The lab's Redis requires a password (its app hosts reach it over the network): setup.sh made one.
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)"
export LAB_REDIS_PASSWORD
$scalectl validate -f examples/lab.yaml
$scalectl lab up -f examples/lab.yaml
$scalectl apply -f examples/lab.yaml --release target/release/scale-api --yes
$scalectl status -f examples/lab.yaml
echo "requests through the load balancer (x-instance shows which instance answered):"
for _ in 1 2 3 4 5 6 7 8; do
  curl -fsS -D - -o /dev/null http://127.0.0.1:8080/ | grep -i '^x-instance'
done
echo "the shared Redis counter: $(curl -fsS http://127.0.0.1:8080/count)"
echo "doctor (exit 0 healthy, 2 findings; the lab's hosts share this machine's cores, so right after the"
echo "set-up, build and apply above it may rightly find them busy: run it again in a minute):"
code=0
$scalectl doctor -f examples/lab.yaml --window 1m || code=$?
[ "$code" -le 2 ]
echo "next (with LAB_REDIS_PASSWORD=\$(cat target/lab-redis-password) exported): \`$scalectl plan -f examples/lab.yaml --release target/release/scale-api\` (no changes), \`$scalectl lab down -f examples/lab.yaml\`"
