#!/usr/bin/env bash
# Images and registries (issue #3), berthd and Debian's dockerd side by side in one run:
#   pull of a ~200 MB multi-layer image from a loopback docker-registry (gzip layers, and zstd layers
#   made by skopeo), push of it to a wiped registry, save and load.
# The image is made from local material: busybox-static plus 6 layers of random and compressible files.
# Usage: bench/registry.sh [RUNS]   (root; needs docker.io docker-registry skopeo hyperfine busybox-static)
# Results: bench/results/registry-<date>.md and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${1:-5}
export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io docker-registry skopeo hyperfine busybox-static python3; do dpkg -s $p >/dev/null 2>&1 || need+=($p); done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq "${need[@]}" >/dev/null; }
[ -n "${NOBUILD:-}" ] || cargo build --release -q -p berthd -p berth -p berth-shim

T=$(mktemp -d /tmp/breg.XXXX)
OUT=bench/results; mkdir -p $OUT
stamp=$(date -u +%Y%m%dT%H%M%SZ)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
BS=$T/b.sock; DS=$T/d.sock
cleanup() {
  set +e
  [ -f $T/berthd.pid ] && kill $(cat $T/berthd.pid) 2>/dev/null
  [ -f $T/dockerd.pid ] && kill $(cat $T/dockerd.pid) 2>/dev/null
  for p in $T/*reg.pid; do [ -f $p ] && kill $(cat $p) 2>/dev/null; done
  sleep 2
  grep -o " $T[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf $T
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Two registries: one to pull from, one wiped before each push.
start_registry() { # name port
  mkdir -p $T/$1
  printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
    $T/$1/data $2 >$T/$1/config.yml
  docker-registry serve $T/$1/config.yml >$T/$1.log 2>&1 &
  echo $! >$T/$1.pid
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$2) 2>/dev/null && return 0; sleep 0.1; done
  echo "registry $1 did not start" >&2; return 1
}
RP=$(free_port); start_registry reg $RP
PP=$(free_port); start_registry pushreg $PP

# The image: a docker-archive made here (busybox, then 6 layers: random files, text, and a mix).
python3 - $T <<'PY'
import hashlib, io, json, os, platform, random, sys, tarfile
T = sys.argv[1]
rnd = random.Random(3)
def layer(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in files:
            i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644; i.mtime = 1700000000
            t.addfile(i, io.BytesIO(data))
    return buf.getvalue()
def text(n):
    words = [b"lorem", b"ipsum", b"registry", b"layer", b"berth", b"docker", b"\n", b"0123", b"image"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + b" "
    return bytes(out[:n])
bb = io.BytesIO()
with tarfile.open(fileobj=bb, mode="w") as t:
    t.add("/bin/busybox", arcname="bin/busybox")
    for d in ("etc", "tmp"):
        i = tarfile.TarInfo(d); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
layers = [bb.getvalue()]
MB = 1 << 20
for k in range(6):
    files = []
    for j in range(8):
        n = 4 * MB
        data = os.urandom(n) if (k + j) % 2 == 0 else text(n)
        files.append((f"data{k}/f{j}", data))
    layers.append(layer(files))
diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
names = [f"l{i}.tar" for i in range(len(layers))]
manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bench/big:1"], "Layers": names}]).encode()
with tarfile.open(f"{T}/image.tar", "w") as t:
    for name, data in [("manifest.json", manifest), ("config.json", config)] + list(zip(names, layers)):
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644
        t.addfile(i, io.BytesIO(data))
print(f"image: {len(layers)} layers, {sum(map(len, layers)) / MB:.0f} MiB uncompressed", file=sys.stderr)
PY

target/release/berthd -H unix://$BS --data-root $T/bdata --exec-root $T/bexec --pidfile $T/berthd.pid >$T/berthd.log 2>&1 &
wait_sock $BS
dockerd -H unix://$DS --data-root $T/ddata --exec-root $T/dexec --pidfile $T/dockerd.pid \
  --iptables=false --ip6tables=false --bridge=none >$T/dockerd.log 2>&1 &
wait_sock $DS; sleep 1
B="target/release/berth -H unix://$BS"
D="docker -H unix://$DS"
export DOCKER_CONFIG=$T/docker-config; mkdir -p $DOCKER_CONFIG

GZ=127.0.0.1:$RP/bench/gz:1
ZS=127.0.0.1:$RP/bench/zst:1
$B load -i $T/image.tar >/dev/null
$B tag bench/big:1 $GZ
$B push $GZ >/dev/null
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-compress --dest-compress-format zstd \
  docker://$GZ docker://$ZS
$B rmi bench/big:1 $GZ >/dev/null
zst_ok=1
$D pull -q $ZS >/dev/null 2>&1 && $D rmi $ZS >/dev/null || zst_ok=0
sizes=$(python3 - $T/reg/data <<'PY'
import json, os, sys
root = sys.argv[1] + "/docker/registry/v2"
def blob(d): return open(f"{root}/blobs/sha256/{d[7:9]}/{d[7:]}/data", "rb").read()
for repo in ("gz", "zst"):
    link = open(f"{root}/repositories/bench/{repo}/_manifests/tags/1/current/link").read().strip()
    m = json.loads(blob(link))
    print(f"{repo}: {len(m['layers'])} layers, {sum(l['size'] for l in m['layers']) / (1 << 20):.0f} MiB compressed")
PY
)
echo "$sizes"

# Each table also goes to <name>.json, from which the medians are printed.
hf() { local name=$1; shift; hyperfine -N --runs $RUNS --style basic --export-markdown $T/$name.md --export-json $T/$name.json "$@"; }
P=127.0.0.1:$PP/bench/pushed:1
# Every name of the image goes (gzip and zstd forms share the config, so the image ID), then its
# layers: each timed pull starts from a store without them. hyperfine -N runs without a shell; the
# prepare steps use one.
fresh() { echo "sh -c '$1 rmi -f $GZ $ZS $P >/dev/null 2>&1; $1 image prune -f >/dev/null 2>&1; true'"; }
pulls=(-n "berth pull (gzip)" --prepare "$(fresh "$B")" "$B pull -q $GZ"
       -n "dockerd pull (gzip)" --prepare "$(fresh "$D")" "$D pull -q $GZ")
if [ $zst_ok = 1 ]; then
  pulls+=(-n "berth pull (zstd)" --prepare "$(fresh "$B")" "$B pull -q $ZS"
          -n "dockerd pull (zstd)" --prepare "$(fresh "$D")" "$D pull -q $ZS")
else
  zst_note="dockerd $(dockerd --version | cut -d, -f1 | cut -d' ' -f3) cannot pull zstd layers: berth only"
  echo "$zst_note" >&2
  pulls+=(-n "berth pull (zstd)" --prepare "$(fresh "$B")" "$B pull -q $ZS")
fi
hf pull "${pulls[@]}"
# Sanity: the last timed pull downloaded every layer.
$B rmi -f $GZ $ZS >/dev/null 2>&1 || true; $B image prune -f >/dev/null
$B pull $ZS | grep -c "Pull complete" | grep -qx 7 || { echo "zstd pull did not fetch 7 layers" >&2; exit 1; }

# Push, to the second registry wiped before each run (every blob uploaded): the image as pulled
# (gzip layers), then as loaded from the archive (uncompressed layers: both engines compress).
push_bench() { # out-file label
  $B tag $GZ $P; $D tag $GZ $P
  hf $1 -n "berth push ($2)" --prepare "$wipe" "$B push -q $P" \
    -n "dockerd push ($2)" --prepare "$wipe" "$D push -q $P"
  # Sanity: a push after a wipe uploads every blob (7 layers, config, manifest).
  sh -c "rm -rf $T/pushreg/data"; $B push -q $P >/dev/null
  blobs=$(find $T/pushreg/data -path '*/blobs/*' -name data | wc -l)
  [ "$blobs" = 9 ] || { echo "berth push left $blobs blobs, not 9" >&2; exit 1; }
}
wipe="sh -c 'rm -rf $T/pushreg/data'"
for e in "$B" "$D"; do sh -c "$(fresh "$e" | sed "s/^sh -c '//; s/'$//")"; $e pull -q $GZ >/dev/null; done
push_bench push "pulled, gzip"
for e in "$B" "$D"; do
  sh -c "$(fresh "$e" | sed "s/^sh -c '//; s/'$//")"; $e load -q -i $T/image.tar >/dev/null; $e tag bench/big:1 $GZ
done
push_bench push2 "loaded, uncompressed"
$B rmi bench/big:1 >/dev/null; $D rmi bench/big:1 >/dev/null

# Save and load (the gzip image; load into a store without it).
hf save -n "berth save" "$B save -o $T/b.tar $GZ" -n "dockerd save" "$D save -o $T/d.tar $GZ"
hf load -n "berth load" --prepare "$(fresh "$B")" "$B load -q -i $T/b.tar" \
  -n "dockerd load" --prepare "$(fresh "$D")" "$D load -q -i $T/d.tar"

{
  echo "# Registry benchmark $stamp"
  echo
  echo "\`bench/registry.sh $RUNS\` on $(nproc) CPUs; load average before: $load0; $(dockerd --version)"
  echo
  echo "$sizes" | sed 's/^/- /'
  [ -z "${zst_note:-}" ] || echo "- $zst_note"
  echo
  echo "Medians (s) and berth's share of dockerd's time:"
  echo
  python3 - $T <<'PY'
import json, sys
print("| Operation | berth | dockerd | berth / dockerd |\n|:---|---:|---:|---:|")
for f in ("pull", "push", "push2", "save", "load"):
    rows = {r["command"]: r["median"] for r in json.load(open(f"{sys.argv[1]}/{f}.json"))["results"]}
    for cmd, med in rows.items():
        if not cmd.startswith("berth"):
            continue
        other = rows.get(cmd.replace("berth", "dockerd", 1))
        ratio = f"{med / other:.2f}" if other else "n/a"
        print(f"| {cmd[6:]} | {med:.2f} | {other:.2f} | {ratio} |" if other else f"| {cmd[6:]} | {med:.2f} | n/a | n/a |")
PY
  for f in pull push push2 save load; do echo; cat $T/$f.md; done
  echo
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee $OUT/registry-$stamp.md
