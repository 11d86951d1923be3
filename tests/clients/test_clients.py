"""Acceptance tests with the real clients users have: docker-py (PyPI) and docker-compose (Debian).

Each test module starts a private berthd (own data-root, exec-root and socket) from target/debug and
removes everything it made when it ends.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import urllib.request

import docker
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "debug")


@pytest.fixture(scope="module")
def daemon():
    tmp = tempfile.mkdtemp(prefix="bpy.", dir="/tmp")
    sock = os.path.join(tmp, "s")
    proc = subprocess.Popen(
        [os.path.join(BIN, "berthd"), "-H", f"unix://{sock}", "--data-root", f"{tmp}/d",
         "--exec-root", f"{tmp}/x", "--pidfile", f"{tmp}/pid"],
        stdout=open(f"{tmp}/log", "w"), stderr=subprocess.STDOUT)
    client = None
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        rootfs = f"{tmp}/rootfs"
        os.makedirs(f"{rootfs}/bin")
        os.makedirs(f"{rootfs}/etc")
        os.makedirs(f"{rootfs}/www")
        shutil.copy("/bin/busybox", f"{rootfs}/bin/busybox")
        subprocess.run(["chroot", rootfs, "/bin/busybox", "--install", "-s", "/bin"], check=True)
        with open(f"{rootfs}/etc/passwd", "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(f"{rootfs}/www/index.html", "w") as f:
            f.write("hello from berth\n")
        tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], check=True, capture_output=True).stdout
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=60)
        client.api.import_image_from_data(tar, repository="busybox", tag="local")
        yield {"sock": sock, "tmp": tmp, "client": client}
    finally:
        # Runs even when the set-up above failed, so no daemon, mount or table outlives the module.
        if client is not None:
            for c in client.containers.list(all=True):
                c.remove(force=True)
            client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(f"grep -o ' {tmp}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l", shell=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_docker_py_container_lifecycle(daemon):
    c = daemon["client"]
    assert c.ping()
    assert "Berth" in c.version()["Components"][0]["Name"] or c.version()["ApiVersion"] == "1.44"
    out = c.containers.run("busybox:local", ["echo", "hi", "there"], remove=True)
    assert out == b"hi there\n"
    with pytest.raises(docker.errors.ContainerError) as e:
        c.containers.run("busybox:local", ["sh", "-c", "exit 3"], remove=True)
    assert e.value.exit_status == 3
    with pytest.raises(docker.errors.ImageNotFound):
        c.containers.run("nosuch:image", "true")
    ctr = c.containers.run("busybox:local", ["sh", "-c", "echo started; sleep 60"], detach=True,
                           name="pyweb", labels={"app": "py"}, environment={"A": "b"})
    assert ctr.name == "pyweb"
    ctr.reload()
    assert ctr.status == "running"
    assert [x.name for x in c.containers.list(filters={"label": "app=py"})] == ["pyweb"]
    code, out = ctr.exec_run(["sh", "-c", "echo $A; exit 4"])
    assert (code, out) == (4, b"b\n")
    for _ in range(50):
        if b"started" in ctr.logs():
            break
        time.sleep(0.1)
    assert ctr.logs() == b"started\n"
    ctr.stop(timeout=1)
    assert ctr.wait()["StatusCode"] == 137
    ctr.remove()
    assert "busybox:local" in [t for i in c.images.list() for t in i.tags]


def test_docker_py_volumes_and_networks(daemon):
    c = daemon["client"]
    vol = c.volumes.create("pydata")
    c.containers.run("busybox:local", ["sh", "-c", "echo kept > /data/f"], remove=True,
                     volumes={"pydata": {"bind": "/data", "mode": "rw"}})
    out = c.containers.run("busybox:local", ["cat", "/data/f"], remove=True,
                           volumes={"pydata": {"bind": "/data", "mode": "ro"}})
    assert out == b"kept\n"
    vol.remove()
    net = c.networks.create("pynet")
    srv = c.containers.run("busybox:local", ["httpd", "-f", "-p", "80", "-h", "/www"], detach=True,
                           name="pysrv", network="pynet")
    try:
        out = c.containers.run("busybox:local",
                               ["sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc pysrv 80"],
                               remove=True, network="pynet")
        assert b"hello from berth" in out
    finally:
        srv.remove(force=True)
        net.remove()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_docker_compose_up_and_down(daemon):
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed")
    port = free_port()
    proj = tempfile.mkdtemp(prefix="cmp.", dir=daemon["tmp"])
    with open(f"{proj}/docker-compose.yml", "w") as f:
        f.write(textwrap.dedent(f"""\
            version: "3.8"
            services:
              web:
                image: busybox:local
                command: httpd -f -p 80 -h /www
                ports: ["127.0.0.1:{port}:80"]
              client:
                image: busybox:local
                command: sh -c "sleep 0.5; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 80; sleep 60"
                depends_on: [web]
            """))
    env = dict(os.environ, DOCKER_HOST=f"unix://{daemon['sock']}", COMPOSE_PROJECT_NAME="bt")
    run = lambda *a: subprocess.run(["docker-compose", *a], cwd=proj, env=env, capture_output=True,
                                    text=True, timeout=120)
    up = run("up", "-d")
    assert up.returncode == 0, up.stderr
    try:
        body = None
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"hello from berth\n"
        ps = run("ps")
        assert "bt_web_1" in ps.stdout and "Up" in ps.stdout, ps.stdout
        for _ in range(50):
            logs = run("logs", "client")
            if "hello from berth" in logs.stdout:
                break
            time.sleep(0.1)
        assert "hello from berth" in logs.stdout, logs.stdout + logs.stderr
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert [n.name for n in daemon["client"].networks.list(names=["bt_default"])] == []
