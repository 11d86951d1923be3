#!/usr/bin/env bash
# Build speed, berth against Docker's classic builder, side by side in one run:
#   a multi-stage Dockerfile over a ~50 MB context; for each engine the median of RUNS of
#   cold build (--no-cache), fully cached rebuild, and rebuild after changing one source file.
#   berth: `berth build` against a private berthd.  docker: `DOCKER_BUILDKIT=0 docker build`
#   against a privately started Debian dockerd (no bridge/iptables: RUN steps use --network none
#   on both sides so the runs compare the same work).
# Usage: bench/build.sh [RUNS]   (root; installs docker.io busybox-static if missing)
#   BIN=DIR bench/build.sh: use the berthd/berth/berth-shim in DIR instead of building (on a shared
#   machine a concurrent `cargo build --release` may replace target/release mid-run).
# Results: bench/results/build-<date>.md and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-5}
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io busybox-static; do dpkg -s $p >/dev/null 2>&1 || need+=($p); done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; }
[ -n "${BIN:-}" ] || cargo build --release -q -p berthd -p berth -p berth-shim

T=$(mktemp -d /tmp/bb.XXXX)
OUT=bench/results; mkdir -p $OUT
stamp=$(date -u +%Y%m%dT%H%M%SZ)
BERTH_SOCK=$T/b.sock
DOCKER_SOCK=$T/d.sock
cleanup() {
  set +e
  [ -f $T/berthd.pid ] && kill $(cat $T/berthd.pid) 2>/dev/null
  [ -f $T/dockerd.pid ] && kill $(cat $T/dockerd.pid) 2>/dev/null
  sleep 2
  grep -o " $T[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf $T
}
trap cleanup EXIT

busybox_tree $T/rootfs
tar -C $T/rootfs -cf $T/rootfs.tar .

# The context: 40 MB of assets, 5 MB of dependencies, 200 source files (~5 MB).
C=$T/ctx; mkdir -p $C/assets $C/deps $C/src
for i in $(seq 1 20); do head -c 2000000 /dev/urandom >$C/assets/a$i.bin; done
for i in $(seq 1 5); do head -c 1000000 /dev/urandom >$C/deps/d$i.bin; done
for i in $(seq 1 200); do head -c 25000 /dev/urandom | base64 >$C/src/f$i.txt; done
cat >$C/Dockerfile <<'EOF'
FROM busybox:local AS deps
COPY deps/ /deps/
RUN cat /deps/* | md5sum > /deps.sum

FROM busybox:local AS build
WORKDIR /src
COPY src/ /src/
RUN for f in *; do md5sum $f; done > /build.out && cat /build.out | wc -l > /count

FROM busybox:local
COPY --from=deps /deps.sum /
COPY --from=build /build.out /count /
COPY assets/ /assets/
ENV APP=bench
CMD ["cat", "/count"]
EOF
echo "context: $(du -sh --apparent-size $C | cut -f1)"

R=${BIN:-$PWD/target/release}
$R/berthd -H unix://$BERTH_SOCK --data-root $T/berth-data --exec-root $T/x --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BERTH_SOCK
B="$R/berth -H unix://$BERTH_SOCK"
$B import $T/rootfs.tar busybox:local >/dev/null

have_docker=0
if command -v dockerd >/dev/null; then
  dockerd -H unix://$DOCKER_SOCK --data-root $T/docker-data --exec-root $T/de --pidfile $T/dockerd.pid \
    --iptables=false --ip6tables=false --bridge=none >$T/dockerd.log 2>&1 &
  if wait_sock $DOCKER_SOCK && sleep 1 && docker -H unix://$DOCKER_SOCK import $T/rootfs.tar busybox:local >/dev/null; then
    have_docker=1
  fi
fi
D="env DOCKER_BUILDKIT=0 docker -H unix://$DOCKER_SOCK"

# bash's own clock: a python3 per reading added its start-up (tens of ms under load) to every figure.
ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
timed() { # timed LABEL CMD... -> appends ms to $T/LABEL
  # The previous build's dirty pages are written out first, so neither engine pays for the other's.
  sync
  local t0 t1; t0=$(ms); "${@:2}" >$T/last.out 2>&1 || { cat $T/last.out; echo "FAILED: ${*:2}"; exit 1; }; t1=$(ms)
  echo $((t1 - t0)) >>$T/$1
}
median() { sort -n $T/$1 | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Runs alternate between the engines (berth, then docker, for each kind of build), so that
# whatever else the machine does weighs on both alike.
warm() { "$@" --network none -t bench:latest $C >/dev/null 2>&1 || true; }
engines=(berth); [ $have_docker = 1 ] && engines+=(docker)
cmd_of() { if [ $1 = berth ]; then echo "$B build"; else echo "$D build"; fi; }
for e in "${engines[@]}"; do warm $(cmd_of $e); done   # first cold run, page cache warm
for i in $(seq 1 $RUNS); do
  for e in "${engines[@]}"; do timed $e.cold $(cmd_of $e) --no-cache --network none -t bench:latest $C; done
  for e in "${engines[@]}"; do
    timed $e.cached $(cmd_of $e) --network none -t bench:latest $C
    grep -q "Using cache" $T/last.out || { echo "$e: rebuild was not cached"; cat $T/last.out; exit 1; }
  done
  echo "change $i $RANDOM" >>$C/src/f7.txt
  for e in "${engines[@]}"; do timed $e.changed $(cmd_of $e) --network none -t bench:latest $C; done
done

# The cached rebuild through the classic tar upload into berthd: `berth build` with the incremental
# context turned off, and the docker CLI itself pointed at berthd (what docker-compose and
# `alias docker=berth`-less users get).
for i in $(seq 1 $RUNS); do
  timed berth_tar.cached env BERTH_BUILD_CONTEXT=tar $B build --network none -t bench:latest $C
  grep -q "Using cache" $T/last.out || { echo "berth (tar): rebuild was not cached"; cat $T/last.out; exit 1; }
  timed dockercli_berthd.cached env DOCKER_BUILDKIT=0 docker -H unix://$BERTH_SOCK build --network none -t bench:latest $C
  grep -q "Using cache" $T/last.out || { echo "docker CLI → berthd: rebuild was not cached"; cat $T/last.out; exit 1; }
done

# The rebuild after one change must re-run only the build stage's COPY/RUN and what follows it.
echo "change final $RANDOM" >>$C/src/f7.txt
$B build --network none -t bench:latest $C >$T/berth.changed.out
berth_reused=$(grep -c "Using cache" $T/berth.changed.out || true)

host="$(nproc) cores, $(uname -r)"
{
  echo "### bench/build.sh $RUNS ($(date -u +%Y-%m-%dT%H:%MZ), $host)"
  echo
  echo "Context $(du -sh --apparent-size $C | cut -f1) (multi-stage: 3 stages, 2 RUN, 5 COPY); medians of $RUNS runs, ms,"
  echo "end to end through each CLI (context upload included). berth reused $berth_reused steps after the one-file change."
  echo
  echo "| build | berth build → berthd | DOCKER_BUILDKIT=0 docker build → dockerd | berth / docker |"
  echo "|---|---:|---:|---:|"
  for k in cold cached changed; do
    b=$(median berth.$k)
    if [ $have_docker = 1 ]; then
      d=$(median docker.$k)
      r=$(python3 -c "print(f'{$b/$d:.2f}')")
      echo "| $k | $b | $d | $r |"
    else
      echo "| $k | $b | (dockerd did not start) | |"
    fi
  done
  echo
  echo "Cached rebuild through the tar upload into berthd (medians, ms): \`BERTH_BUILD_CONTEXT=tar berth build\`"
  echo "$(median berth_tar.cached), \`DOCKER_BUILDKIT=0 docker build\` against berthd $(median dockercli_berthd.cached)."
} | tee $OUT/build-$stamp.md
