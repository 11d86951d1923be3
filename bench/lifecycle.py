#!/usr/bin/env python3
"""Engine API timings for bench/lifecycle.sh, measured in one process (no CLI start-up cost).

Usage: lifecycle.py SOCK exec CONTAINER RUNS      median/p90 ms of exec create+start+inspect of `true`
       lifecycle.py SOCK ps RUNS                  median/p90 ms of GET /containers/json?all=1
       lifecycle.py SOCK create N IMAGE           creates N containers (`sleep 1000`), not started
       lifecycle.py SOCK stats RUNS               median ms of one-shot stats of every running container
"""
import http.client
import json
import socket
import statistics
import sys
import time


class Conn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=300)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self.sock = s


def call(c, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    hdr = {"Content-Type": "application/json"} if data is not None else {}
    c.request(method, path, body=data, headers=hdr)
    r = c.getresponse()
    out = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {out[:200]!r}")
    return out


def report(name, ms):
    ms.sort()
    p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
    print(f"{name}: median {statistics.median(ms):.2f} ms, p90 {p90:.2f} ms, n={len(ms)}")


def main():
    sock, what = sys.argv[1], sys.argv[2]
    c = Conn(sock)
    if what == "exec":
        cid, runs = sys.argv[3], int(sys.argv[4])
        ms = []
        for i in range(runs + 3):
            t = time.perf_counter()
            eid = json.loads(call(c, "POST", f"/v1.41/containers/{cid}/exec",
                                  {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True}))["Id"]
            call(c, "POST", f"/v1.41/exec/{eid}/start", {"Detach": False, "Tty": False})
            code = json.loads(call(c, "GET", f"/v1.41/exec/{eid}/json"))["ExitCode"]
            if i >= 3:
                ms.append((time.perf_counter() - t) * 1000)
            assert code == 0, code
        report("exec true (API)", ms)
    elif what == "ps":
        runs = int(sys.argv[3])
        ms = []
        n = 0
        for i in range(runs + 2):
            t = time.perf_counter()
            n = len(json.loads(call(c, "GET", "/v1.41/containers/json?all=1")))
            if i >= 2:  # two warm-up calls
                ms.append((time.perf_counter() - t) * 1000)
        report(f"ps -a with {n} containers (API)", ms)
    elif what == "create":
        n, image = int(sys.argv[3]), sys.argv[4]
        for _ in range(n):
            call(c, "POST", "/v1.41/containers/create",
                 {"Image": image, "Cmd": ["sleep", "1000"], "HostConfig": {"NetworkMode": "none"}})
    elif what == "stats":
        runs = int(sys.argv[3])
        ids = [x["Id"] for x in json.loads(call(c, "GET", "/v1.41/containers/json"))]
        ms = []
        for _ in range(runs):
            t = time.perf_counter()
            for i in ids:
                call(c, "GET", f"/v1.41/containers/{i}/stats?stream=false&one-shot=true")
            ms.append((time.perf_counter() - t) * 1000)
        report(f"one-shot stats of {len(ids)} running containers, sequential (API)", ms)


main()
