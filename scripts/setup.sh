#!/usr/bin/env bash
# Install what scalectl's tests and lab need on a fresh Debian 12 machine (idempotent).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(nginx-light prometheus redis-server redis-tools ansible-core rsyslog rsyslog-relp openssl systemd)
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
