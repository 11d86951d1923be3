#!/usr/bin/env bash
# Published-port throughput and connection rate, berth (kernel NAT in its own nftables table) against
# Debian's dockerd (its default docker-proxy + iptables path, private bridge and subnet), in one run;
# and run latency with a bridge network against --network none (berth).
# Usage: bench/network.sh [GIB] [RUNS]   (root; hyperfine, ab, dockerd, busybox-static)
# Results: bench/results/network-<date>.md and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-2}
RUNS=${2:-20}
cargo build --release -q -p berthd -p berth -p berth-shim

T=$(mktemp -d /tmp/bn.XXXX)
OUT=bench/results; mkdir -p $OUT
stamp=$(date -u +%Y%m%dT%H%M%SZ)
BS=$T/b.sock; DS=$T/d.sock
DBR=bnd$$; DNET=10.219.$((RANDOM % 200)).0/24
cleanup() {
  set +e
  docker -H unix://$BS rm -f $(docker -H unix://$BS ps -aq) >/dev/null 2>&1
  docker -H unix://$DS rm -f $(docker -H unix://$DS ps -aq) >/dev/null 2>&1
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

mkdir -p $T/rootfs/bin $T/rootfs/etc $T/rootfs/tmp
cp /bin/busybox $T/rootfs/bin/busybox
chroot $T/rootfs /bin/busybox --install -s /bin
echo 'root:x:0:0:root:/root:/bin/sh' >$T/rootfs/etc/passwd
head -c 4096 /dev/urandom | base64 >$T/rootfs/etc/page
tar -C $T/rootfs -cf $T/rootfs.tar .
wait_sock() { for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; return 1; }

# berthd: its own bridge, subnet and table come from its data root.
target/release/berthd -H unix://$BS --data-root $T/bd --exec-root $T/bx --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BS
B="target/release/berth -H unix://$BS"
$B import $T/rootfs.tar busybox:local >/dev/null

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
