#!/usr/bin/env bash
# Installs the Debian packages Berth's build, tests and set-up need (idempotent; root).
set -euo pipefail
pkgs=(busybox-static iproute2 ca-certificates docker-registry skopeo apache2-utils openssl nftables iptables docker-compose python3-venv e2fsprogs mount git)
# The docker CLI is the acceptance client; Debian's docker.io ships one if the machine has none.
command -v docker >/dev/null 2>&1 || pkgs+=(docker.io)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
