#!/usr/bin/env bash
# Reads of the database tier, in ONE run on the database lab (examples/database.yaml: PostgreSQL 15
# run by Patroni, HAProxy on the app hosts, scale-api behind nginx): `GET /users/{id}` of a random
# one of USERS users through the load balancer, side by side with
#   - the limit: pgbench running the same SELECT (prepared, as scale-api's driver does) on the
#     primary itself, over its local socket, at the same connection count;
#   - every read to the database (scale-api's Redis cache off: CACHE_TTL=0s), through HAProxy's
#     reader port: to the primary alone (the replica's Patroni stopped: the reader falls back to the
#     primary), to one replica, to two replicas (a third database host added by apply);
#   - the same with scale-api's line per request off (RUST_LOG=warn): each line goes through
#     journald and rsyslog to the log collector, which costs more CPU here than the query;
#   - scale-api's Redis cache on (cache-aside, CACHE_TTL=60s);
#   - nginx's cache in front (load_balancer.cache on /users/).
# Each row is wrk -c CONN for DUR after a warm-up of the same length (a cache fills, pools open);
# each prints requests per second, p99, non-2xx answers, and its ratio to the limit and to the
# primary alone. Every host is a container on this one machine, sharing its cores: a replica adds
# no CPU here, so what it shows is the cost of the route, not the capacity a replica adds on a
# machine of its own. Nothing leaves loopback and the lab's own network.
#
#   bash scripts/bench-db.sh                  # about 6 minutes on 2 cores
#   DUR=10s CONN=32 USERS=10000 bash scripts/bench-db.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10s}
[[ $DUR =~ ^[0-9]+s$ ]] || { echo "bench-db: DUR is whole seconds, such as 10s (got $DUR)" >&2; exit 1; }
CONN=${CONN:-32}
USERS=${USERS:-10000}
bash scripts/setup.sh >/dev/null
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk >/dev/null; }
cargo build --locked --release --workspace --bins -q
LAB_REDIS_PASSWORD="$(cat target/lab-redis-password)"
LAB_DB_PASSWORD="$(cat target/lab-db-password)"
LAB_DB_REPLICATION_PASSWORD="$(cat target/lab-db-replication-password)"
LAB_DB_REST_PASSWORD="$(cat target/lab-db-rest-password)"
export LAB_REDIS_PASSWORD LAB_DB_PASSWORD LAB_DB_REPLICATION_PASSWORD LAB_DB_REST_PASSWORD
export SCALECTL_HOME=$PWD/target/bench-db-home
s=$PWD/target/release/scalectl
release=$PWD/target/release/scale-api
work=$(mktemp -d)
cleanup() { $s lab down -f "$work/three.yaml" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# The topologies: the example with scale-api's cache lifetime set, with a third database host, and
# with nginx's cache.
variant() { # name cache_ttl extra_db_host(0|1) nginx_cache(0|1) [log level]
  python3 - "$2" "$3" "$4" "${5:-info}" > "$work/$1.yaml" <<'PY'
import sys
ttl, third, nginx, level = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4]
s = open("examples/database.yaml").read()
s = s.replace("  port: 3000\n", f"  port: 3000\n  env: {{CACHE_TTL: {ttl}, RUST_LOG: {level}}}\n", 1)
db2 = "  db-2:  {address: dblab-db-2,  roles: [database]}\n"
assert db2 in s
if third:
    s = s.replace(db2, db2 + "  db-3:  {address: dblab-db-3,  roles: [database]}\n", 1)
if nginx:
    s += "load_balancer:\n  cache:\n    paths:\n      - {path: /users/, ttl: 60s}\n"
print(s, end="")
PY
}
variant nocache 0s 0 0
variant three 0s 1 0
variant quiet 0s 1 0 warn
variant redis 60s 1 0
variant nginx 60s 1 1
apply() { $s apply -f "$work/$1.yaml" --release "$release" --yes >/dev/null; }
healthy() { # members
  for _ in $(seq 90); do
    [ "$($s db status -f "$work/nocache.yaml" -o json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["members"]) if d["healthy"] else -1)' 2>/dev/null)" = "$1" ] && return 0
    sleep 2
  done
  echo "bench-db: the database never had $1 members running" >&2; exit 1
}
leader() { $s db status -f "$work/nocache.yaml" -o json | python3 -c 'import json,sys; print([m["name"] for m in json.load(sys.stdin)["members"] if m["role"] == "leader"][0])'; }

echo "bench-db: the database lab, fresh, with scale-api's cache off" >&2
$s lab down -f "$work/three.yaml" >/dev/null 2>&1 || true
$s lab up -f examples/database.yaml >/dev/null
apply nocache
healthy 2
docker exec dblab-app-1 sh -c "set -a; . /etc/scale-api/secrets.env; set +a; psql \"\$DB_WRITER_URL\" -X -q -v ON_ERROR_STOP=1 -c \"INSERT INTO users (id, name) SELECT g, 'user ' || g FROM generate_series(1, $USERS) g ON CONFLICT (id) DO NOTHING\""

# The load balancer at its container's own address on the lab's network: the published port on
# 127.0.0.1 goes through docker-proxy, a process that copies every byte and would be the row's
# limit.
lb=http://$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' dblab-lb-1):80
# Where the last read of a user came from ("db" or "cache"), and nginx's cache status for it.
source_of() { curl -fsS "$lb/users/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["source"])'; }
nginx_cache() { curl -fsS -o /dev/null -D - "$lb/users/$1" | awk 'tolower($1) == "x-cache-status:" {print $2}' | tr -d '\r'; }
expect() { # what got wanted
  [ "$2" = "$3" ] || { echo "bench-db: $1: got '$2', wanted '$3'" >&2; exit 1; }
}
source_of 1 >/dev/null
expect "scale-api's cache off, a second read" "$(source_of 1)" db

cat > "$work/users.lua" <<LUA
math.randomseed(os.time())
request = function() return wrk.format("GET", "/users/" .. math.random(1, $USERS)) end
LUA
declare -A rps p99 bad
# "req/s p99_ms non2xx" of wrk through the load balancer, after a warm-up.
load() { # row
  wrk -t2 -c"$CONN" -d"$DUR" -s "$work/users.lua" "$lb" >/dev/null 2>&1
  local out; out=$(wrk -t2 -c"$CONN" -d"$DUR" --latency -s "$work/users.lua" "$lb" 2>&1)
  rps[$1]=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p99[$1]=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}' <<<"$out")
  # Answers that were not 2xx, and socket errors (connect, read, write, timeout) added to them.
  bad[$1]=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
  echo "bench-db: $1: ${rps[$1]} req/s, p99 ${p99[$1]} ms, ${bad[$1]} not 2xx" >&2
}

# The limit: the same statement on the primary itself.
primary=$(leader)
docker exec "dblab-$primary" sh -c "printf '\\\\set id random(1, $USERS)\nSELECT name FROM users WHERE id = :id;\n' > /tmp/get.sql"
secs=${DUR%s}
out=$(docker exec "dblab-$primary" sudo -u postgres /usr/lib/postgresql/15/bin/pgbench -n -M prepared -c "$CONN" -j 2 -T "$secs" -f /tmp/get.sql app 2>&1)
rps[pgbench]=$(awk '/^tps/ {printf "%.0f", $3; exit}' <<<"$out")
p99[pgbench]=-
bad[pgbench]=$(awk '/failed transactions:/ {print $5}' <<<"$out"); bad[pgbench]=${bad[pgbench]:-0}
echo "bench-db: pgbench: ${rps[pgbench]} transactions/s" >&2

# One replica (the example), then the primary alone (the replica's Patroni stopped).
load one

# Replication lag under a write load: pgbench updating random users on the primary (CONN clients,
# DUR), while the primary's view of its replica is sampled every 0.2 s: bytes of WAL not yet
# replayed there, and PostgreSQL's own replay_lag (the time from a commit to its replay).
docker exec "dblab-$primary" sh -c "printf '\\\\set id random(1, $USERS)\nUPDATE users SET name = md5(random()::text) WHERE id = :id;\n' > /tmp/put.sql"
docker exec "dblab-$primary" sudo -u postgres /usr/lib/postgresql/15/bin/pgbench -n -M prepared -c "$CONN" -j 2 -T "$secs" -f /tmp/put.sql app > "$work/writes.out" 2>&1 &
writer=$!
: > "$work/lag"
end=$((SECONDS + secs))
while [ $SECONDS -lt $end ]; do
  docker exec "dblab-$primary" sudo -u postgres psql -XAtF' ' -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), coalesce(extract(epoch FROM replay_lag) * 1000, 0) FROM pg_stat_replication" >> "$work/lag" 2>/dev/null || true
  sleep 0.2
done
wait "$writer"
writes=$(awk '/^tps/ {printf "%.0f", $3; exit}' "$work/writes.out")
lag=$(python3 - "$work/lag" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
if not rows:
    print("- - - - 0"); sys.exit()
b = sorted(r[0] for r in rows); t = sorted(r[1] for r in rows)
print(f"{statistics.median(b):.0f} {max(b):.0f} {statistics.median(t):.1f} {max(t):.1f} {len(rows)}")
PY
)
read -r lag_b50 lag_bmax lag_t50 lag_tmax lag_n <<<"$lag"
echo "bench-db: writes: $writes updates/s; replica behind by median $lag_b50 B (max $lag_bmax B), replay_lag median $lag_t50 ms (max $lag_tmax ms), $lag_n samples" >&2
replica=$([ "$primary" = db-1 ] && echo db-2 || echo db-1)
docker exec "dblab-$replica" systemctl stop patroni
sleep 5
load alone
docker exec "dblab-$replica" systemctl start patroni
healthy 2
# Two replicas: a third database host, added by apply.
$s lab up -f "$work/three.yaml" >/dev/null
apply three
healthy 3
load two
apply quiet
load quiet
apply redis
source_of 2 >/dev/null
expect "scale-api's cache on, a second read" "$(source_of 2)" cache
load redis
apply nginx
nginx_cache 3 >/dev/null
expect "nginx's cache, a second read" "$(nginx_cache 3)" HIT
load nginx

limit=${rps[pgbench]}
alone=${rps[alone]}
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')" 2>/dev/null || echo "-"; }
echo
echo "GET /users/{id} of $USERS users through the load balancer of the database lab ($lb); wrk -c$CONN for $DUR after a warm-up, $(nproc) cores shared by every host"
printf '%-58s %10s %9s %8s %10s %10s\n' row req/s p99_ms not_2xx vs_limit vs_alone
row() { # key label
  printf '%-58s %10s %9s %8s %10s %10s\n' "$2" "${rps[$1]}" "${p99[$1]}" "${bad[$1]}" "$(ratio "${rps[$1]}" "$limit")" "$(ratio "${rps[$1]}" "$alone")"
}
row pgbench "pgbench, the same SELECT on the primary (the limit)"
row alone "no cache, reads to the primary alone"
row one "no cache, reads to one replica"
row two "no cache, reads to two replicas"
row quiet "no cache, two replicas, no line per request"
row redis "scale-api's Redis cache (cache-aside, 60 s)"
row nginx "nginx's cache on /users/ (60 s)"
echo
echo "Replication lag under a write load (pgbench UPDATE of random users on the primary, -c$CONN for $DUR; sampled every 0.2 s on the primary)"
printf '%-14s %16s %16s %18s %18s %8s\n' updates/s bytes_median bytes_max replay_lag_median replay_lag_max samples
printf '%-14s %16s %16s %18s %18s %8s\n' "$writes" "$lag_b50" "$lag_bmax" "${lag_t50} ms" "${lag_tmax} ms" "$lag_n"
