#!/usr/bin/env bash
# Published-port throughput and connection rate, berth (kernel NAT in its own nftables table) against
# Debian's dockerd (its default docker-proxy + iptables path, private bridge and subnet), in one run;
# and run latency with a bridge network against --network none (berth).
# Usage: bench/network.sh [GIB] [RUNS]   (root; hyperfine, ab, dockerd, busybox-static)
#        bench/network.sh latency [PAIRS]   (run latency only: bridge and none runs alternated in pairs,
#        so that a busy machine's drift hits both alike; min/median of each and of the paired difference,
#        plus berthd's own `network setup` times from its debug log; GAP=<seconds> waits before each run)
# Results: bench/results/network-<date>.md and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
LAT_ONLY=0
if [ "${1:-}" = latency ]; then LAT_ONLY=1; shift; RUNS=${1:-100}; GIB=0; else
GIB=${1:-2}
RUNS=${2:-20}
fi
cargo build --release -q -p berthd -p berth -p berth-shim

T=$(mktemp -d /tmp/bn.XXXX)
OUT=bench/results; mkdir -p $OUT
stamp=$(date -u +%Y%m%dT%H%M%SZ)
BS=$T/b.sock; DS=$T/d.sock
DBR=bnd$$; DNET=10.219.$((RANDOM % 200)).0/24
cleanup() {
  set +e
  docker -H unix://$BS rm -f $(docker -H unix://$BS ps -aq 2>/dev/null) >/dev/null 2>&1
  [ -S $DS ] && docker -H unix://$DS rm -f $(docker -H unix://$DS ps -aq) >/dev/null 2>&1
  [ -f $T/berthd.pid ] && kill $(cat $T/berthd.pid)
  [ -f $T/dockerd.pid ] && kill $(cat $T/dockerd.pid)
  sleep 3
  # dockerd leaves its iptables chains: remove exactly its jumps, its bridge's rules and its chains.
  for t in nat filter; do
    iptables-save -t $t | grep -E -- "-j DOCKER|$DBR" | grep '^-A' | sed 's/^-A/-D/' |
      while read -r r; do eval iptables -t $t $r; done
    for c in DOCKER DOCKER-USER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-FORWARD; do
      iptables -t $t -F $c 2>/dev/null; iptables -t $t -X $c 2>/dev/null
    done
  done
  ip link del $DBR 2>/dev/null
  grep -o " $T[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf $T
}
trap cleanup EXIT

busybox_tree $T/rootfs
head -c 4096 /dev/urandom | base64 >$T/rootfs/etc/page
tar -C $T/rootfs -cf $T/rootfs.tar .

# berthd: its own bridge, subnet and table come from its data root.
BERTHD_LOG=${BERTHD_LOG:-berthd=debug} target/release/berthd -H unix://$BS --data-root $T/bd --exec-root $T/bx \
  --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BS
B="target/release/berth -H unix://$BS"
$B import $T/rootfs.tar busybox:local >/dev/null

# Alternated pairs of `run --rm` on the default bridge and with --network none (order flipped each pair).
paired_latency() {
  python3 - "$RUNS" "$B" "${GAP:-0}" <<'PY'
import statistics as st, subprocess, sys, time
pairs, b, gap = int(sys.argv[1]), sys.argv[2].split(), float(sys.argv[3])
cmd = {"bridge": b + ["run", "--rm", "busybox:local", "true"],
       "none": b + ["run", "--rm", "--network", "none", "busybox:local", "true"]}
def once(k):
    time.sleep(gap)  # GAP=<s>: lets the previous run's teardown finish first
    t = time.perf_counter(); subprocess.run(cmd[k], check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000
for k in cmd: once(k); once(k)  # warm-up
ts = {"bridge": [], "none": []}
for i in range(pairs):
    for k in (("bridge", "none") if i % 2 == 0 else ("none", "bridge")):
        ts[k].append(once(k))
d = [x - y for x, y in zip(ts["bridge"], ts["none"])]
print("| run --rm busybox true | min [ms] | median [ms] | mean [ms] |")
print("|:---|---:|---:|---:|")
for k, v in ts.items():
    print(f"| {k} ({pairs} runs) | {min(v):.1f} | {st.median(v):.1f} | {st.mean(v):.1f} |")
print(f"| bridge − none, paired | | {st.median(d):.1f} | {st.mean(d):.1f} |")
print(f"\nbridge − none: difference of minima {min(ts['bridge']) - min(ts['none']):.1f} ms, "
      f"of medians {st.median(ts['bridge']) - st.median(ts['none']):.1f} ms")
PY
}
# berthd's own `network setup` (endpoint, netns) times from its debug log: min/median in ms.
setup_times() {
  python3 - "$T/berthd.log" <<'PY'
import re, statistics as st, sys
v = {}
for l in open(sys.argv[1], errors="replace"):
    l = re.sub(r"\x1b\[[0-9;]*m", "", l)
    m = re.search(r"network setup .*mode=(\S+) elapsed=([0-9.]+)(µs|ms|s)", l)
    if m:
        mode = "bridge" if m.group(1) in ("default", "bridge") else m.group(1)
        v.setdefault(mode, []).append(float(m.group(2)) * {"µs": 1e-3, "ms": 1, "s": 1e3}[m.group(3)])
for mode, x in sorted(v.items()):
    print(f"berthd network setup, {mode}: {len(x)} starts, min {min(x):.2f} ms, "
          f"median {st.median(x):.2f} ms, max {max(x):.2f} ms  ")
PY
}
if [ $LAT_ONLY = 1 ]; then
  {
    echo "## Run latency, bridge vs none ($stamp)"
    echo
    echo "Command: \`GAP=${GAP:-0} bench/network.sh latency $RUNS\`; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    paired_latency
    echo
    hyperfine -N --warmup 3 --runs $RUNS --export-markdown $T/lat.md \
      -n "berth run --rm (bridge)" "$B run --rm busybox:local true" \
      -n "berth run --rm --network none" "$B run --rm --network none busybox:local true" >/dev/null
    cat $T/lat.md
    echo
    setup_times
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  } | tee $OUT/network-latency-$stamp.md
  exit 0
fi

# dockerd: a bridge made for it, iptables on, docker-proxy (its default).
ip link add $DBR type bridge
ip addr add ${DNET%.0/24}.1/24 dev $DBR
ip link set $DBR up
dockerd -H unix://$DS --data-root $T/dd --exec-root $T/dx --pidfile $T/dockerd.pid \
  --bridge=$DBR --iptables=true --ip6tables=false >$T/dockerd.log 2>&1 &
wait_sock $DS; sleep 1
D="docker -H unix://$DS"
$D import $T/rootfs.tar busybox:local >/dev/null

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# Sends GIB GiB to a sink in the container through the published port; prints MB/s.
throughput() {
  python3 - "$1" "$GIB" <<'PY'
import socket, sys, time
port, gib = int(sys.argv[1]), float(sys.argv[2])
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError: time.sleep(0.1)
buf = b"x" * (1 << 20); n = int(gib * 1024)
t = time.time()
for _ in range(n): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1)
dt = time.time() - t
print(f"{n / dt:.0f}")
PY
}

declare -A TP CR
for eng in berth docker; do
  if [ $eng = berth ]; then E=$B; else E=$D; fi
  p1=$(port); p2=$(port)
  $E run -d --name sink -p $p1:5001 busybox:local sh -c 'nc -l -p 5001 >/dev/null' >/dev/null
  $E run -d --name web -p $p2:80 busybox:local httpd -f -p 80 -h /etc >/dev/null
  sleep 1
  TP[$eng]=$(throughput $p1)
  ab -q -n 5000 -c 8 http://127.0.0.1:$p2/page >$T/ab-$eng.txt 2>&1 || true
  CR[$eng]=$(awk '/Requests per second/ {print $4}' $T/ab-$eng.txt)
  $E rm -f sink web >/dev/null
done

# Run latency: default bridge vs --network none (berth).
hyperfine -N --warmup 3 --runs $RUNS --export-markdown $T/lat.md \
  -n "berth run --rm (bridge)" "$B run --rm busybox:local true" \
  -n "berth run --rm --network none" "$B run --rm --network none busybox:local true" >/dev/null

{
  echo "## Published-port network ($stamp)"
  echo
  echo "Command: \`bench/network.sh $GIB $RUNS\`"
  echo
  echo "| engine | TCP throughput via 127.0.0.1:port (MiB/s) | HTTP connection rate, ab -c 8 (req/s) |"
  echo "|---|---|---|"
  echo "| berth (nftables DNAT) | ${TP[berth]} | ${CR[berth]} |"
  echo "| dockerd 20.10 (docker-proxy + iptables) | ${TP[docker]} | ${CR[docker]} |"
  echo
  cat $T/lat.md
} | tee $OUT/network-$stamp.md
