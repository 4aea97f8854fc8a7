#!/usr/bin/env bash
# How deploy cost grows with the fleet, in ONE run: a lab of lab hosts (systemd + sshd containers)
# grown to 5, 20 and 50 app hosts in turn (one shared load balancer, Redis and monitor beside
# them: 3 more hosts), and at each size, side by side:
#   - scalectl: plan and apply with no change, apply with --parallel 4/16/64, a one-file change,
#     a new release rolled across every instance under continuous load (wrk, which resends
#     nothing: every failed request counts), status, doctor's collection;
#   - ansible-playbook (ansible/site.yml) on the same hosts: the same no-change run and the same
#     new release under the same load;
#   - the floor: as many OpenSSH sessions as hosts at once, each running `true`.
# Each figure is printed with its ratio to Ansible and to the floor, then the growth from the
# smallest size to the largest. Nothing leaves loopback and the lab's own network.
#
#   scripts/bench-fleet.sh              # 5, 20 and 50 app hosts (about 55 minutes here)
#   SIZES="5 20" scripts/bench-fleet.sh
#
# The hosts' image has the app hosts' Debian packages installed (built once from the lab's base),
# so that growing the lab measures the deploy and not 50 downloads of the same packages; the
# load balancer, Redis and monitor hosts install theirs on the first apply, as any host does.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-5 20 50}
# The playbook rolls app hosts one at a time (serial: 1): its new release at 50 hosts alone takes
# about half an hour at 50 app hosts here (810 s at 20). Up to this many app hosts it runs; above, its row says "not run".
ANSIBLE_ROLL_UP_TO=${ANSIBLE_ROLL_UP_TO:-20}
bash scripts/setup.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk >/dev/null; }
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)"; export LAB_REDIS_PASSWORD
cargo build --locked --release --workspace --bins -q
export SCALECTL_HOME=$PWD/target/bench-fleet-home
# Every lab host runs systemd, which takes inotify instances: the kernel's default of 128 per user
# runs out at about 20 hosts on one machine.
sysctl -qw fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=1048576
s=$PWD/target/release/scalectl
work=$(mktemp -d)
wrk_pid=
cleanup() {
  [ -n "$wrk_pid" ] && kill "$wrk_pid" 2>/dev/null || true
  for f in fleet base; do [ -f "$work/$f.yaml" ] && $s lab down -f "$work/$f.yaml" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$SCALECTL_HOME"

# The hosts' image: the lab's base with what every app host installs (and python3 for Ansible).
image=scalectl-bench/fleet-host:1
if ! docker image inspect "$image" >/dev/null 2>&1; then
  if ! docker image inspect scalectl/lab-base:bookworm >/dev/null 2>&1; then
    # `lab up` builds the base the first time (debootstrap): one host, then gone.
    printf 'name: fleetbase\ntarget: hosts\nssh: {user: deploy}\nhosts:\n  a: {address: fleetbase-a, roles: [app]}\n' > "$work/base.yaml"
    $s lab up -f "$work/base.yaml" >/dev/null
    $s lab down -f "$work/base.yaml" >/dev/null
  fi
  printf 'FROM scalectl/lab-base:bookworm\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables prometheus-node-exporter rsyslog rsyslog-relp openssl curl python3 >/dev/null && apt-get clean\n' |
    docker build -q -t "$image" - >/dev/null
fi
export SCALECTL_LAB_IMAGE=$image

release=$PWD/target/release/scale-api
# A new release: the same program with bytes appended (another sha256, so another release id).
variant() { cp "$release" "$work/scale-api-$1"; printf '\nbench-fleet-%s-%s\n' "$1" "$$" >> "$work/scale-api-$1"; echo "$work/scale-api-$1"; }

topology() { # app-host-count body-size
  {
    cat <<YAML
name: fleet
target: hosts
app: {port: 3000, instances: 1, drain_timeout: 1s}
ssh: {user: deploy}
load_balancer: {listen: 80, client_max_body_size: $2}
redis: {maxmemory: 64MiB, persistence: none, password: {env: LAB_REDIS_PASSWORD}}
observability:
  prometheus: {scrape_interval: 15s, retention: 1d}
  grafana: false
lab: {publish: {load_balancer: 8180, prometheus: 9190}}
hosts:
  lb-1: {address: fleet-lb-1, roles: [lb]}
  cache-1: {address: fleet-cache-1, roles: [redis]}
  mon-1: {address: fleet-mon-1, roles: [monitor]}
YAML
    for i in $(seq 1 "$1"); do echo "  app-$i: {address: fleet-app-$i, roles: [app]}"; done
  } > "$work/fleet.yaml"
}

now() { date +%s.%N; }
# The machine's stolen time (a virtual machine's neighbours) and all its time, in clock ticks:
# every size's figures are printed with the share stolen while they were taken.
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }
all_ticks() { awk '/^cpu /{s=0; for (i=2; i<=NF; i++) s+=$i; print s}' /proc/stat; }
# Seconds a command takes; its output to $work/last.log, and a failure stops the run there.
# The whole output of a failed command is kept in target/bench-fleet-failed.log (the fleet is gone
# once the script ends); its errors and last lines are printed.
timed() {
  local t0; t0=$(now)
  if ! "$@" >"$work/last.log" 2>&1; then
    cp "$work/last.log" target/bench-fleet-failed.log
    echo "FAILED: $* (its whole output: target/bench-fleet-failed.log)" >&2
    grep -iE '^(error|warning)|failed|timed out' "$work/last.log" | head -20 >&2 || true
    tail -20 "$work/last.log" >&2
    exit 1
  fi
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
}
apply() { $s apply -f "$work/fleet.yaml" --release "$1" --yes "${@:2}"; }
lab_dir() { echo "$SCALECTL_HOME/lab/fleet"; }

# Every host at once over OpenSSH, each running `true`: the handshakes alone (the ports are
# looked up before, outside the timing). Any session that fails fails the run.
ssh_ports() { $s lab status -f "$work/fleet.yaml" -o json | python3 -c 'import json,sys; print(" ".join(str(h["ssh_port"]) for h in json.load(sys.stdin)["hosts"]))'; }
floor() {
  local pids=() p
  for p in $ports; do
    ssh -q -o BatchMode=yes -o UserKnownHostsFile="$(lab_dir)/known_hosts" -o StrictHostKeyChecking=yes -o ControlMaster=no \
      -i "$(lab_dir)/id_ed25519" -p "$p" deploy@127.0.0.1 true & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}

ansible_run() { # release
  $s render -f "$work/fleet.yaml" -o "$work/render" >/dev/null
  (cd ansible && ansible-playbook -f 8 -i "$work/render/ansible/inventory.yml" -i "$(lab_dir)/inventory.yml" site.yml \
    -e scalectl_render_dir="$work/render" -e scalectl_release="$1")
}

# wrk against the load balancer for as long as the command runs: "seconds failed total" into
# $work/load.out (socket errors plus non-2xx answers, and every request sent). Runs in this shell,
# so that the cleanup stops wrk whatever happens.
under_load() {
  wrk -t1 -c16 -d3600s http://127.0.0.1:8180/ >"$work/wrk.log" 2>&1 & wrk_pid=$!
  sleep 1
  local t; t=$(timed "$@")
  kill -INT "$wrk_pid"; wait "$wrk_pid" 2>/dev/null || true; wrk_pid=
  python3 - "$work/wrk.log" "$t" >"$work/load.out" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
total = int(re.search(r"(\d+) requests in", s).group(1))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
errors = sum(int(x) for x in sock.groups()) if sock else 0
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", s)
print(sys.argv[2], errors + (int(non2xx.group(1)) if non2xx else 0), total)
PY
}

# Load-balancer reloads so far: nginx's and the balancer's (HAProxy) behind it, from systemd's
# journal of their units.
reloads() { docker exec fleet-lb-1 journalctl -u nginx.service -u haproxy.service -o cat 2>/dev/null | grep -c '^Reloaded' || true; }

# One size's table, printed as soon as that size is done: a later size that fails (or runs out of
# time) does not take the earlier sizes' figures with it.
size_table() {
  local n=$1
  printf '%s app hosts (%s hosts)   boot of the new hosts %ss, first apply onto them %ss; %s%% of the CPU time stolen by the host'"'"'s neighbours\n' "$n" $((n + 3)) "${R[$n,boot]}" "${R[$n,first]}" "${R[$n,steal]}"
  awk -v fl="${R[$n,floor]}" -v an="${R[$n,ansible]}" -v ar="${R[$n,aroll]}" '
    function row(what, t, vs_ansible) {
      if (t == 0) { printf "  %-40s %8s\n", what, "not run"; return }
      if (vs_ansible > 0) printf "  %-40s %8.2f %8.2fx %9.2fx\n", what, t, t / vs_ansible, t / fl
      else printf "  %-40s %8.2f %9s %9.2fx\n", what, t, "", t / fl
    }
    BEGIN { printf "  %-40s %8s %9s %10s\n", "", "seconds", "/ansible", "/floor"
      row("floor: one ssh session per host", fl, 0) }
    { gsub(",", " ", $1); row($1, $2, $3 == "a" ? an : ($3 == "r" ? ar : 0)) }' <<ROWS
plan,no-change ${R[$n,plan]} -
apply,no-change ${R[$n,apply]} a
apply,no-change,--parallel=4 ${R[$n,apply4]} a
apply,no-change,--parallel=16 ${R[$n,apply16]} a
apply,no-change,--parallel=64 ${R[$n,apply64]} a
apply,one-file-change ${R[$n,onefile]} -
apply,new-release,rolled ${R[$n,roll]} r
status ${R[$n,status]} -
doctor ${R[$n,doctor]} -
ansible-playbook,no-change ${R[$n,ansible]} -
ansible-playbook,new-release ${R[$n,aroll]} -
ROWS
  printf '  doctor (exit %s): %s\n' "${R[$n,doctor_rc]}" "${R[$n,verdict]}"
  printf '  a new release under load (wrk -c16; nothing resent):\n'
  printf '    scalectl: %s of %s requests failed; nginx and the balancer reloaded %s times\n' "${R[$n,roll_failed]}" "${R[$n,roll_total]}" "${R[$n,roll_reloads]}"
  printf '    ansible:  %s of %s requests failed; nginx and the balancer reloaded %s times\n\n' "${R[$n,aroll_failed]}" "${R[$n,aroll_total]}" "${R[$n,aroll_reloads]}"
}

echo
printf 'Deploy cost by fleet size on this machine (2 cores; every host a container on it). Seconds;\n'
printf 'ratios against Ansible (ansible-playbook -f 8, ansible/site.yml) and against the floor (as many\n'
printf 'OpenSSH sessions as hosts at once, each running `true`).\n\n'
declare -A R
first=
for n in $SIZES; do
  first=${first:-$n}
  hosts=$((n + 3))
  echo "== $n app hosts ($hosts hosts) ==" >&2
  st0=$(steal_ticks); all0=$(all_ticks)
  topology "$n" 1MiB
  R[$n,boot]=$(timed $s lab up -f "$work/fleet.yaml")
  R[$n,first]=$(timed apply "$release")
  ports=$(ssh_ports)
  R[$n,floor]=$(timed floor)
  R[$n,plan]=$(timed $s plan -f "$work/fleet.yaml" --release "$release")
  R[$n,apply]=$(timed apply "$release")
  for p in 4 16 64; do R[$n,apply$p]=$(timed apply "$release" --parallel "$p"); done
  topology "$n" 2MiB
  R[$n,onefile]=$(timed apply "$release")
  topology "$n" 1MiB
  timed apply "$release" >/dev/null
  r0=$(reloads)
  under_load apply "$(variant "s$n")"
  read -r "R[$n,roll]" "R[$n,roll_failed]" "R[$n,roll_total]" <"$work/load.out"
  R[$n,roll_reloads]=$(($(reloads) - r0))
  R[$n,status]=$(timed $s status -f "$work/fleet.yaml")
  # doctor's exit 2 (findings) is an answer too; 1 is not.
  t1=$(now); rc=0; $s doctor -f "$work/fleet.yaml" >"$work/doctor.log" 2>&1 || rc=$?
  if [ "$rc" = 1 ]; then echo "doctor failed:" >&2; cat "$work/doctor.log" >&2; exit 1; fi
  R[$n,doctor]=$(awk -v a="$t1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  # Kept for a look afterwards, with what the balancer and each instance counted in the last
  # minute: the fleet is gone when the script ends.
  {
    cat "$work/doctor.log"
    for q in 'sum by (instance_name) (increase(scale_api_http_request_duration_seconds_count{route="/"}[1m]))' \
             'sum by (server) (increase(haproxy_server_http_responses_total[1m]))'; do
      echo "== $q"
      curl -fsS --get http://127.0.0.1:9190/api/v1/query --data-urlencode "query=$q" || true
      echo
    done
  } > "target/bench-fleet-doctor-$n.txt" 2>&1
  R[$n,doctor_rc]=$rc
  R[$n,verdict]=$([ "$rc" = 0 ] && echo "healthy" || echo "$(grep -cE '^(critical|warning|info) ' "$work/doctor.log" || true) findings, the first: $(grep -m1 -E '^(critical|warning|info) ' "$work/doctor.log" || true)")
  # Ansible: the release scalectl left (no change), then a new one under the same load.
  R[$n,ansible]=$(timed ansible_run "$work/scale-api-s$n")
  if [ "$n" -le "$ANSIBLE_ROLL_UP_TO" ]; then
    r0=$(reloads)
    under_load ansible_run "$(variant "a$n")"
    read -r "R[$n,aroll]" "R[$n,aroll_failed]" "R[$n,aroll_total]" <"$work/load.out"
    R[$n,aroll_reloads]=$(($(reloads) - r0))
  else
    R[$n,aroll]=0; R[$n,aroll_failed]=-; R[$n,aroll_total]=-; R[$n,aroll_reloads]=-
  fi
  R[$n,steal]=$(awk -v s=$(($(steal_ticks) - st0)) -v a=$(($(all_ticks) - all0)) 'BEGIN { printf "%.0f", (a > 0 ? 100 * s / a : 0) }')
  size_table "$n"
done

last=$n
if [ "$first" != "$last" ]; then
  printf 'Growth from %s to %s app hosts (%sx the hosts):\n' "$first" "$last" "$(awk -v a=$((first + 3)) -v b=$((last + 3)) 'BEGIN { printf "%.1f", b / a }')"
  for k in floor plan apply apply4 apply16 apply64 onefile roll status doctor ansible aroll; do
    awk -v k="$k" -v a="${R[$first,$k]}" -v b="${R[$last,$k]}" 'BEGIN { if (a == 0 || b == 0) printf "  %-10s not run at both sizes\n", k; else printf "  %-10s %7.2fs -> %7.2fs  %5.1fx\n", k, a, b, b / a }'
  done
fi
