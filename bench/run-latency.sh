#!/usr/bin/env bash
# Container start latency and memory, side by side in one run:
#   berth run --rm (berth CLI and docker CLI against berthd), docker run --rm (Debian's dockerd),
#   podman run --rm, runc run and crun run (where crun starts on this host) on the same busybox rootfs,
#   plus the idle RSS of berthd and dockerd+containerd and the RSS of one berth-shim / containerd-shim.
# Usage: bench/run-latency.sh [RUNS]   (root; installs docker.io podman runc crun hyperfine if missing)
# Results: bench/results/run-latency-<date>.{md,json} and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-30}
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io podman runc crun hyperfine busybox-static; do dpkg -s $p >/dev/null 2>&1 || need+=($p); done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; }
cargo build --release --bins -q

T=$(mktemp -d /tmp/b.XXXX)
OUT=bench/results; mkdir -p $OUT
stamp=$(date -u +%Y%m%dT%H%M%SZ)
BERTH_SOCK=$T/berth.sock
DOCKER_SOCK=$T/docker.sock
cleanup() {
  set +e
  [ -f $T/berthd.pid ] && kill $(cat $T/berthd.pid) 2>/dev/null
  [ -f $T/dockerd.pid ] && kill $(cat $T/dockerd.pid) 2>/dev/null
  sleep 2
  runc delete -f bench-runc >/dev/null 2>&1; crun delete -f bench-crun >/dev/null 2>&1
  podman --root $T/podman --runroot $T/podman-run rm -af >/dev/null 2>&1
  grep -o " $T[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf $T
}
trap cleanup EXIT

# One busybox rootfs for everyone.
busybox_tree $T/rootfs
tar -C $T/rootfs -cf $T/rootfs.tar .

rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }

# berthd
target/release/berthd -H unix://$BERTH_SOCK --data-root $T/berth-data --exec-root $T/x --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BERTH_SOCK
B="target/release/berth -H unix://$BERTH_SOCK"
$B import $T/rootfs.tar busybox:local >/dev/null
$B run --rm busybox:local true

# dockerd (Debian's), no bridge/iptables so that it touches nothing of the host's networking
have_docker=0
if command -v dockerd >/dev/null; then
  dockerd -H unix://$DOCKER_SOCK --data-root $T/docker-data --exec-root $T/docker-exec --pidfile $T/dockerd.pid \
    --iptables=false --ip6tables=false --bridge=none >$T/dockerd.log 2>&1 &
  if wait_sock $DOCKER_SOCK && sleep 1 && docker -H unix://$DOCKER_SOCK import $T/rootfs.tar busybox:local >/dev/null \
     && docker -H unix://$DOCKER_SOCK run --rm --network none busybox:local true; then have_docker=1; fi
fi

# podman (runc as its runtime: Debian's crun 1.8 refuses this hybrid cgroup host)
P="podman --root $T/podman --runroot $T/podman-run --cgroup-manager cgroupfs --events-backend file --runtime runc"
have_podman=0
if $P import $T/rootfs.tar localhost/busybox:local >/dev/null 2>&1 && $P run --rm --network none localhost/busybox:local true >/dev/null 2>&1; then have_podman=1; fi

# bare OCI runtimes on one bundle
mkdir -p $T/bundle && cp -a $T/rootfs $T/bundle/rootfs
(cd $T/bundle && runc spec && python3 - <<'PY'
import json
c=json.load(open('config.json')); c['process']['args']=['true']; c['process']['terminal']=False
json.dump(c,open('config.json','w'))
PY
)
have_crun=0
crun run -b $T/bundle bench-crun >/dev/null 2>&1 && have_crun=1

cmds=(-n "berth run --rm" "$B run --rm busybox:local true"
      -n "docker CLI → berthd" "docker -H unix://$BERTH_SOCK run --rm busybox:local true")
[ $have_docker = 1 ] && cmds+=(-n "docker run --rm (dockerd)" "docker -H unix://$DOCKER_SOCK run --rm --network none busybox:local true")
[ $have_podman = 1 ] && cmds+=(-n "podman run --rm" "$P run --rm --network none localhost/busybox:local true")
cmds+=(-n "runc run" "runc run -b $T/bundle bench-runc")
[ $have_crun = 1 ] && cmds+=(-n "crun run" "crun run -b $T/bundle bench-crun")

hyperfine -N --warmup 3 --runs $RUNS --export-markdown $OUT/run-latency-$stamp.md --export-json $OUT/run-latency-$stamp.json "${cmds[@]}"
[ $have_podman = 1 ] || echo "podman: could not run a container here (seen: its runc refuses to set RLIMIT_NPROC/NOFILE without CAP_SYS_RESOURCE)"
[ $have_crun = 1 ] || echo "crun: refused to run on this host (Debian's crun 1.8 and a hybrid cgroup hierarchy)"

# Memory
echo
echo "## Memory (VmRSS)"
bp=$(cat $T/berthd.pid)
echo "berthd right after the runs: $(rss_kb $bp) kB"
# berthd gives memory back after 10-15 s without work (two quiet 5 s checks).
sleep 16
echo "berthd idle: $(rss_kb $bp) kB"
cid=$($B run -d busybox:local sleep 60)
# The shim pages out its start-up code once no request came for 1 s.
sleep 2
shim=$(pgrep -f "berth-shim --id $cid" | head -1 || true)
[ -n "$shim" ] && echo "berth-shim (one sleeping container): $(rss_kb $shim) kB"
$B rm -f $cid >/dev/null
if [ $have_docker = 1 ]; then
  dp=$(cat $T/dockerd.pid); cp=$(pgrep -f "containerd --config $T/docker-exec" | head -1 || pgrep -P $dp containerd | head -1 || true)
  echo "dockerd idle: $(rss_kb $dp) kB; its containerd: ${cp:+$(rss_kb $cp)} kB"
  did=$(docker -H unix://$DOCKER_SOCK run -d --network none busybox:local sleep 60); sleep 0.5
  ds=$(pgrep -f "containerd-shim-runc-v2 -namespace moby -id $did" | head -1 || true)
  [ -n "$ds" ] && echo "containerd-shim-runc-v2 (one sleeping container): $(rss_kb $ds) kB"
  docker -H unix://$DOCKER_SOCK rm -f $did >/dev/null
fi
