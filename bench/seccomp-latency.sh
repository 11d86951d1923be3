#!/usr/bin/env bash
# Cost of the hardened default: `docker run --rm` latency against berthd with Docker's default
# seccomp profile (the default) vs --security-opt seccomp=unconfined, and under --runtime runc,
# next to Debian's dockerd (runc + its own default profile) in the same run.
# Usage: bench/seccomp-latency.sh [RUNS]   (root; hyperfine, busybox-static; dockerd optional;
#        BENCH_NO_BUILD=1 uses the release binaries as they are)
# Results: bench/results/seccomp-latency-<date>.{md,json} and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-40}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p berthd -p berth-shim

T=$(mktemp -d /tmp/bsec.XXXXXX)
OUT=bench/results; mkdir -p $OUT
stamp=$(date -u +%Y%m%dT%H%M%SZ)
BS=$T/b.sock
DS=$T/d.sock
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


echo '{}' >$T/daemon.json
target/release/berthd -H unix://$BS --data-root $T/bd --exec-root $T/be --pidfile $T/berthd.pid \
  --config-file $T/daemon.json >$T/berthd.log 2>&1 &
wait_sock $BS
D="docker -H unix://$BS"
$D import $T/rootfs.tar busybox:local >/dev/null
$D run --rm --network none busybox:local true

have_docker=0
if command -v dockerd >/dev/null; then
  dockerd -H unix://$DS --data-root $T/dd --exec-root $T/de --pidfile $T/dockerd.pid \
    --iptables=false --ip6tables=false --bridge=none >$T/dockerd.log 2>&1 &
  if wait_sock $DS && sleep 1 && docker -H unix://$DS import $T/rootfs.tar busybox:local >/dev/null \
     && docker -H unix://$DS run --rm --network none busybox:local true; then have_docker=1; fi
fi

cmds=(-n "berthd, default seccomp profile" "$D run --rm --network none busybox:local true"
      -n "berthd, seccomp=unconfined" "$D run --rm --network none --security-opt seccomp=unconfined busybox:local true"
      -n "berthd --runtime runc, default profile" "$D run --rm --network none --runtime runc busybox:local true")
[ $have_docker = 1 ] && cmds+=(-n "dockerd (runc), default profile" "docker -H unix://$DS run --rm --network none busybox:local true")

# Paired and interleaved (default, unconfined, default, …): load from other work on the machine
# hits both sides alike, unlike hyperfine's one-benchmark-after-the-other order.
python3 - "$D" "$RUNS" <<'PY' | tee $OUT/seccomp-latency-paired-$stamp.txt
import statistics, subprocess, sys, time
d, n = sys.argv[1].split(), int(sys.argv[2]) * 2
base = d + ["run", "--rm", "--network", "none"]
variants = {"default profile": base + ["busybox:local", "true"],
            "seccomp=unconfined": base + ["--security-opt", "seccomp=unconfined", "busybox:local", "true"]}
times = {k: [] for k in variants}
for i in range(n):
    for k, cmd in (variants.items() if i % 2 == 0 else reversed(list(variants.items()))):
        t = time.perf_counter(); subprocess.run(cmd, check=True); times[k].append(time.perf_counter() - t)
for k, v in times.items():
    print(f"{k}: median {statistics.median(v)*1000:.1f} ms, mean {statistics.mean(v)*1000:.1f} ms, n={len(v)}")
a, b = statistics.median(times["default profile"]), statistics.median(times["seccomp=unconfined"])
print(f"paired cost of the default profile: {(a-b)/b*100:+.1f}% of the median")
PY

hyperfine -N -w 5 -r $RUNS --export-markdown $OUT/seccomp-latency-$stamp.md --export-json $OUT/seccomp-latency-$stamp.json "${cmds[@]}"
python3 - "$OUT/seccomp-latency-$stamp.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
on, off = r["berthd, default seccomp profile"], r["berthd, seccomp=unconfined"]
cost = (on["median"] - off["median"]) / off["median"] * 100
print(f"median: profile {on['median']*1000:.1f} ms, unconfined {off['median']*1000:.1f} ms, cost {cost:+.1f}%")
PY
