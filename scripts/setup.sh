#!/usr/bin/env bash
# Install what scalectl's tests and lab need on a fresh Debian 12 machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
packages=(nginx-light haproxy socat prometheus prometheus-alertmanager mtail prometheus-redis-exporter redis-server redis-tools ansible-core rsyslog rsyslog-relp logrotate openssl systemd curl
          docker.io debootstrap libssl-dev pkg-config nftables patroni postgresql-15 prometheus-postgres-exporter etcd-server)
# PostgreSQL for scale-api's tests, which start their own server: Debian's package makes and starts
# no cluster of its own then.
mkdir -p /etc/postgresql-common/createcluster.d
[ -f /etc/postgresql-common/createcluster.d/scalectl.conf ] || printf 'create_main_cluster = false\n' > /etc/postgresql-common/createcluster.d/scalectl.conf
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # Services are not started: there is no systemd as PID 1 here, and the tests start what they need.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is required (rustup)" >&2; exit 1; }

# Node.js for examples/node-app (the user's-own-app example): its dependencies are installed here,
# on the machine that runs scalectl, and shipped inside the release.
if ! command -v npm >/dev/null; then
  echo "setup: installing nodejs npm"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# examples/express-app is express-generator's skeleton as it comes (`npx express-generator --no-view`).
for app in examples/node-app examples/express-app; do
  if [ ! -d "$app/node_modules/express" ] || [ "$app/package-lock.json" -nt "$app/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in $app"
    (cd "$app" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
  fi
done

# checkov (PyPI) checks the Terraform module and the Kubernetes manifests; kubernetes-validate
# (PyPI) validates the manifests offline against the OpenAPI schemas it ships.
for tool in checkov kubernetes-validate; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup: installing $tool"
    python3 -m pip install -q --disable-pip-version-check "$tool" >/dev/null 2>&1 || python3 -m pip install --disable-pip-version-check "$tool"
    hash -r
  fi
done
# jsonschema (checkov's own dependency) validates the operators' resources against their CRDs.
python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check jsonschema

# The Docker engine for the lab: no systemd as PID 1 on these machines, so start dockerd directly.
if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start (see /var/log/dockerd.log)" >&2; exit 1; }
fi

# Docker Compose v2, to start the rendered compose bundle: Debian 12 has only v1, so Debian 13's
# package is fetched (apt checks its signature against the system's Debian keyring) and unpacked
# under target/tools. Nothing is installed system-wide and no apt source is added.
if [ ! -x target/tools/docker-compose ]; then
  echo "setup: fetching docker-compose (Debian trixie's package)"
  apt_dir="$PWD/target/tools/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/empty"
  echo "deb http://deb.debian.org/debian trixie main" > "$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/empty" -o "Dir::State::Lists=$apt_dir/lists"
            -o "Dir::Cache=$apt_dir/cache" -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$apt_dir/empty" -o APT::Sandbox::User=root)
  apt-get -qq "${apt_opts[@]}" update
  (cd "$apt_dir" && apt-get -qq "${apt_opts[@]}" download docker-compose)
  dpkg-deb -x "$apt_dir"/docker-compose_*_amd64.deb "$apt_dir/root"
  install -m 0755 "$apt_dir/root/usr/libexec/docker/cli-plugins/docker-compose" target/tools/docker-compose
  rm -rf "$apt_dir"
fi

# The labs' Redis password (examples/lab.yaml and node.yaml read it from LAB_REDIS_PASSWORD; the demo,
# benchmarks and tests from this file), made once, readable by its owner only.
if [ ! -s target/lab-redis-password ]; then
  mkdir -p target
  (umask 077; openssl rand -hex 24 > target/lab-redis-password)
fi
# The database lab's passwords (examples/database.yaml reads them from LAB_DB_PASSWORD,
# LAB_DB_REPLICATION_PASSWORD and LAB_DB_REST_PASSWORD), made once in the same way.
for f in lab-db-password lab-db-replication-password lab-db-rest-password; do
  [ -s "target/$f" ] || (mkdir -p target; umask 077; openssl rand -hex 24 > "target/$f")
done
