#!/usr/bin/env bash
# Container lifecycle costs, berthd and Debian's dockerd side by side in one run (issue #4):
#   `exec true` latency (API round trip, and the docker CLI end to end), `ps -a` with 100 and 1000
#   created containers (plus 10 running), `stats --no-stream` with 100 running containers,
#   logs: reading a 200k-line json-file log, and the daemon CPU spent following a container that
#   writes as fast as it can.
# Usage: bench/lifecycle.sh [RUNS]   (root; needs docker.io, hyperfine, busybox-static, python3)
#        ONLY=ps bench/lifecycle.sh [RUNS]   the ps part alone (1000 containers, API round trip);
#        ONLY=exec bench/lifecycle.sh [RUNS] the exec part alone (API round trip and docker CLI);
#        add NODOCKER=1 to measure berthd alone.
# Prints a markdown block to stdout; append it to BENCHMARKS.md with the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-20}
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io hyperfine busybox-static python3; do dpkg -s $p >/dev/null 2>&1 || need+=($p); done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; }
[ -n "${NOBUILD:-}" ] || cargo build --release -q -p berthd -p berth-shim

T=$(mktemp -d /tmp/bl.XXXXXX)
BS=$T/b.sock
DS=$T/d.sock
PY="python3 bench/lifecycle.py"
cleanup() {
  set +e
  for s in $BS $DS; do
    [ -S $s ] && docker -H unix://$s ps -aq 2>/dev/null | xargs -r -n 50 docker -H unix://$s rm -f >/dev/null 2>&1
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

cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }

target/release/berthd -H unix://$BS --data-root $T/bdata --exec-root $T/bexec --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BS
SOCKS="$BS"
if [ -z "${NODOCKER:-}" ]; then
  dockerd -H unix://$DS --data-root $T/ddata --exec-root $T/dexec --pidfile $T/dockerd.pid \
    --iptables=false --ip6tables=false --bridge=none >$T/dockerd.log 2>&1 &
  wait_sock $DS
  SOCKS="$BS $DS"
fi
sleep 1
for s in $SOCKS; do docker -H unix://$s import $T/rootfs.tar busybox:local >/dev/null; done
BPID=$(cat $T/berthd.pid); DPID=$(cat $T/dockerd.pid 2>/dev/null || true)

if [ "${ONLY:-}" = ps ]; then
  # ps alone: 1000 created containers plus 10 running, API round trip; load average printed
  # because the machine is shared.
  echo "### ONLY=ps bench/lifecycle.sh $RUNS ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
  echo
  echo '```'
  for s in $SOCKS; do
    for i in $(seq 10); do docker -H unix://$s run -d --network none busybox:local sleep 1000 >/dev/null; done
    $PY $s create 990 busybox:local
  done
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "berthd:  $($PY $BS ps $RUNS)"
  [ -n "${NODOCKER:-}" ] || echo "dockerd: $($PY $DS ps $RUNS)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo '```'
  exit 0
fi

echo "### ${ONLY:+ONLY=$ONLY }bench/lifecycle.sh $RUNS ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
echo
echo '```'
[ -z "${ONLY:-}" ] || echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# exec
for s in $BS $DS; do docker -H unix://$s run -d --name ex --network none busybox:local sleep 1000 >/dev/null; done
echo "berthd:  $($PY $BS exec ex $RUNS)"
echo "dockerd: $($PY $DS exec ex $RUNS)"
hyperfine -N --warmup 2 --runs $RUNS --style basic \
  -n "docker exec ex true → berthd" "docker -H unix://$BS exec ex true" \
  -n "docker exec ex true → dockerd" "docker -H unix://$DS exec ex true" 2>/dev/null | grep -E "Benchmark|Time" || true
if [ "${ONLY:-}" = exec ]; then
  # What a user sees: each engine's own CLI (the docker CLI alone starts in ~20 ms).
  hyperfine -N --warmup 2 --runs $RUNS --style basic \
    -n "berth exec ex true → berthd" "target/release/berth -H unix://$BS exec ex true" \
    -n "docker exec ex true → dockerd" "docker -H unix://$DS exec ex true" 2>/dev/null | grep -E "Benchmark|Time" || true
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo '```'
  exit 0
fi

# ps: 100 and 1000 created containers, 10 running
for s in $BS $DS; do for i in $(seq 9); do docker -H unix://$s run -d --network none busybox:local sleep 1000 >/dev/null; done; done
for total in 100 1000; do
  for s in $BS $DS; do
    have=$(docker -H unix://$s ps -aq | wc -l)
    $PY $s create $((total - have)) busybox:local
  done
  echo "berthd:  $($PY $BS ps $RUNS)"
  echo "dockerd: $($PY $DS ps $RUNS)"
  hyperfine -N --warmup 2 --runs $RUNS --style basic \
    -n "docker ps -a ($total) → berthd" "docker -H unix://$BS ps -a" \
    -n "docker ps -a ($total) → dockerd" "docker -H unix://$DS ps -a" 2>/dev/null | grep -E "Benchmark|Time" || true
done
for s in $BS $DS; do docker -H unix://$s ps -aq --filter status=created | xargs -r -n 100 docker -H unix://$s rm >/dev/null; done

# stats --no-stream with 100 running containers
for s in $BS $DS; do
  have=$(docker -H unix://$s ps -q | wc -l)
  for i in $(seq $((100 - have))); do docker -H unix://$s run -d --network none busybox:local sleep 1000 >/dev/null; done
done
echo "running: berthd $(docker -H unix://$BS ps -q | wc -l), dockerd $(docker -H unix://$DS ps -q | wc -l)"
echo "berthd:  $($PY $BS stats 5)"
echo "dockerd: $($PY $DS stats 1)"
hyperfine -N --warmup 1 --runs 5 --style basic \
  -n "docker stats --no-stream (100) → berthd" "docker -H unix://$BS stats --no-stream" \
  -n "docker stats --no-stream (100) → dockerd" "docker -H unix://$DS stats --no-stream" 2>/dev/null | grep -E "Benchmark|Time" || true
b0=$(cpu_ticks $BPID); sleep 10; b1=$(cpu_ticks $BPID)
d0=$(cpu_ticks $DPID); sleep 10; d1=$(cpu_ticks $DPID)
echo "idle daemon CPU with 100 running containers over 10 s: berthd $((b1 - b0)) ticks, dockerd $((d1 - d0)) ticks"
for s in $BS $DS; do docker -H unix://$s ps -aq | xargs -r -n 50 docker -H unix://$s rm -f >/dev/null; done

# logs: read a 200k-line log; follow a container writing as fast as it can
N=200000
for s in $BS $DS; do
  docker -H unix://$s run --name lg --network none busybox:local seq 1 $N >/dev/null
done
hyperfine -N --warmup 1 --runs 5 --style basic \
  -n "docker logs ($N lines) → berthd" "docker -H unix://$BS logs lg" \
  -n "docker logs ($N lines) → dockerd" "docker -H unix://$DS logs lg" 2>/dev/null | grep -E "Benchmark|Time" || true
M=500000
for who in berthd dockerd; do
  if [ $who = berthd ]; then s=$BS; p=$BPID; else s=$DS; p=$DPID; fi
  docker -H unix://$s create --name fl --network none busybox:local sh -c "sleep 1; seq 1 $M" >/dev/null
  docker -H unix://$s start fl >/dev/null
  c0=$(cpu_ticks $p); t0=$(date +%s.%N)
  lines=$(docker -H unix://$s logs -f fl | wc -l)
  t1=$(date +%s.%N); c1=$(cpu_ticks $p)
  echo "logs -f of a container writing $M lines → $who: $lines lines in $(echo "$t1 - $t0 - 1" | bc) s, daemon CPU $(( (c1 - c0) * 10 )) ms"
done
echo '```'
