#!/usr/bin/env bash
# One command from a fresh checkout to a running Berth: installs dependencies, builds release binaries,
# installs them, starts berthd on /run/berth/berth.sock, makes a busybox image from the host's busybox-static,
# and runs hello-world.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "setup needs root (it installs packages and starts the daemon)" >&2; exit 1; fi
bash scripts/deps.sh
cargo build --release --bins
install -m 0755 target/release/berth target/release/berthd target/release/berth-shim /usr/local/bin/
getent group berth >/dev/null || groupadd --system berth

sock=/run/berth/berth.sock
if ! berth version >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup berthd >/var/log/berthd.log 2>&1 &
  for _ in $(seq 100); do [ -S "$sock" ] && berth version >/dev/null 2>&1 && break; sleep 0.1; done
fi

if ! berth image inspect busybox:local >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
  cp /bin/busybox "$rootfs/bin/busybox"
  chroot "$rootfs" /bin/busybox --install -s /bin
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  tar -C "$rootfs" -c . | berth import - busybox:local >/dev/null
  rm -rf "$rootfs"
fi

berth run --rm hello-world
echo
echo "berthd is running (log: /var/log/berthd.log). Try: berth run --rm -it busybox:local sh"
echo "or, with the docker CLI: DOCKER_HOST=unix://$sock docker run --rm -it busybox:local sh"
