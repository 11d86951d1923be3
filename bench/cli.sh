#!/usr/bin/env bash
# The berth CLI end to end (process start, API version negotiation, request, output), against the docker CLI:
# `exec true`, `ps -a`, `images`, `volume ls`, `history`, `save`, `stats --no-stream` (5 running), with
#   berth  -> berthd,  docker -> berthd  (same daemon: the CLIs' own cost)  and  docker -> dockerd (Docker as
#   users run it). Medians by hyperfine.
# Usage: bench/cli.sh [RUNS]   (root; needs docker.io, hyperfine, busybox-static)
# Prints a markdown block to stdout; append it to BENCHMARKS.md with the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-30}
cargo build --release -q -p berth -p berthd -p berth-shim
B=$PWD/target/release/berth

T=$(mktemp -d /tmp/bc.XXXXXX)
BS=$T/b.sock
DS=$T/d.sock
cleanup() {
  set +e
  for s in $BS $DS; do
    [ -S $s ] && docker -H unix://$s ps -aq 2>/dev/null | xargs -r docker -H unix://$s rm -f >/dev/null 2>&1
  done
  [ -f $T/berthd.pid ] && kill $(cat $T/berthd.pid) 2>/dev/null
  [ -f $T/dockerd.pid ] && kill $(cat $T/dockerd.pid) 2>/dev/null
  sleep 2
  grep -o " $T[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf $T
}
trap cleanup EXIT

busybox_tree $T/rootfs
tar -C $T/rootfs -cf $T/rootfs.tar .

target/release/berthd -H unix://$BS --data-root $T/bdata --exec-root $T/bexec --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BS
dockerd -H unix://$DS --data-root $T/ddata --exec-root $T/dexec --pidfile $T/dockerd.pid \
  --iptables=false --ip6tables=false --bridge=none >$T/dockerd.log 2>&1 &
wait_sock $DS
sleep 1
export DOCKER_CONFIG=$T/cfg
for s in $BS $DS; do
  docker -H unix://$s import $T/rootfs.tar busybox:local >/dev/null
  for i in 1 2 3 4 5; do docker -H unix://$s run -d --name ex$i --network none busybox:local sleep 1000 >/dev/null; done
  docker -H unix://$s volume create v1 >/dev/null
done

median() { # name, command...
  local name=$1; shift
  hyperfine -N -w 3 -r $RUNS --export-json $T/h.json "$*" >/dev/null 2>&1
  python3 -c "import json;r=json.load(open('$T/h.json'))['results'][0];print('%-48s %7.1f ms' % ('$name', r['median']*1000))"
}

echo "### bench/cli.sh $RUNS ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
echo
echo '```'
for cmd in "exec ex1 true" "ps -a" "images" "volume ls" "history busybox:local" "stats --no-stream"; do
  median "berth  -> berthd:  $cmd" $B -H unix://$BS $cmd
  median "docker -> berthd:  $cmd" docker -H unix://$BS $cmd
  median "docker -> dockerd: $cmd" docker -H unix://$DS $cmd
done
# save writes a tar: to a file so the terminal check does not apply.
median "berth  -> berthd:  save -o" $B -H unix://$BS save -o $T/s.tar busybox:local
median "docker -> berthd:  save -o" docker -H unix://$BS save -o $T/s.tar busybox:local
median "docker -> dockerd: save -o" docker -H unix://$DS save -o $T/s.tar busybox:local
echo '```'
