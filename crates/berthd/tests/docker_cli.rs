//! Root integration tests: a private berthd per test, driven with the real docker CLI.

mod common;

use std::time::{Duration, Instant};

use common::{TestDaemon, can_run, tail};

#[test]
fn version_info_ping_and_errors() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    let v = d.ok(&["version"]);
    assert!(v.contains("Server: Berth Engine"), "{v}");
    assert!(v.contains("1.44"), "{v}");
    let info = d.ok(&["info"]);
    assert!(info.contains("Storage Driver: overlay2"), "{info}");
    assert!(info.contains("Docker Root Dir: "), "{info}");
    assert!(info.contains("Images: 1"), "{info}");

    let r = d.raw("GET", "/_ping", None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "OK");
    let head = r.head.to_ascii_lowercase();
    for h in [
        "api-version: 1.44",
        "ostype: linux",
        "docker-experimental: false",
        "server: berth/",
        "cache-control: no-cache, no-store, must-revalidate",
        "pragma: no-cache",
    ] {
        assert!(head.contains(h), "missing {h} in {head}");
    }
    let r = d.raw("HEAD", "/_ping", None).unwrap();
    assert_eq!(r.status, 200);

    let r = d.raw("GET", "/v1.99/version", None).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .contains("client version 1.99 is too new. Maximum supported API version is 1.44"),
        "{}",
        r.body
    );
    let r = d.raw("GET", "/v1.12/version", None).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("client version 1.12 is too old"),
        "{}",
        r.body
    );
    let r = d.raw("GET", "/v1.40/version", None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.head.to_ascii_lowercase().contains("api-version: 1.44"));

    let r = d.raw("GET", "/v1.44/nothing/here", None).unwrap();
    assert_eq!(r.status, 404);
    assert!(
        r.body.contains(r#"{"message":"page not found"}"#),
        "{}",
        r.body
    );
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );

    let r = d
        .raw("POST", "/v1.44/containers/create", Some("{not json"))
        .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("\"message\""), "{}", r.body);

    let r = d
        .raw(
            "POST",
            "/v1.44/containers/create?name=a%21b",
            Some(r#"{"Image":"hello-world"}"#),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body.contains("Invalid container name (a!b)"),
        "{}",
        r.body
    );

    let r = d.raw("GET", "/containers/nosuch/json", None).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No such container: nosuch"), "{}", r.body);
}

#[test]
fn hello_world() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    let o = d.docker(&["run", "--rm", "hello-world"]);
    assert_eq!(o.code, 0, "{o:?}\n{}", tail(&d.log(), 30));
    assert!(o.stdout.contains("Hello from Berth!"), "{}", o.stdout);
    // --rm: gone afterwards.
    let ps = d.ok(&["ps", "-aq"]);
    assert_eq!(ps.trim(), "", "container left behind: {ps}");
    let imgs = d.ok(&["images"]);
    assert!(imgs.contains("hello-world"), "{imgs}");
}

/// An exec-root so deep that `<exec-root>/containers/<id>/shim.sock` exceeds a socket address
/// (108 bytes): run, attach, exec, cp, logs and stop still reach the shim.
#[test]
fn long_exec_root() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start_with_exec_root(&"x".repeat(60));
    d.import_busybox();
    let out = d.ok(&["run", "--rm", "busybox:local", "echo", "deep"]);
    assert_eq!(out, "deep\n");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "deep",
        "busybox:local",
        "sleep",
        "100",
    ]);
    let id = d.ok(&["inspect", "-f", "{{.Id}}", "deep"]);
    let sock = d
        .dir
        .join("x".repeat(60))
        .join("containers")
        .join(id.trim())
        .join("shim.sock");
    assert!(sock.as_os_str().len() > 108, "{}", sock.display());
    assert_eq!(d.ok(&["exec", "deep", "echo", "in"]), "in\n");
    let o = d.docker(&["cp", "deep:/etc/hostname", "-"]);
    assert_eq!(o.code, 0, "{o:?}");
    d.ok(&["stop", "-t", "1", "deep"]);
    d.ok(&["rm", "deep"]);
}

#[test]
fn busybox_import_run_and_exit_codes() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let imgs = d.ok(&["images", "busybox"]);
    assert!(imgs.contains("local"), "{imgs}");
    let insp = d.ok(&["image", "inspect", "busybox:local", "--format", "{{.Id}}"]);
    assert!(insp.trim().starts_with("sha256:"), "{insp}");

    let out = d.ok(&["run", "--rm", "busybox:local", "echo", "hi", "there"]);
    assert_eq!(out, "hi there\n");

    let o = d.docker(&["run", "--rm", "busybox:local", "sh", "-c", "exit 3"]);
    assert_eq!(o.code, 3, "{o:?}");

    let o = d.docker(&["run", "--rm", "busybox:local", "nosuch"]);
    assert_eq!(o.code, 127, "{o:?}");
    assert!(
        o.stderr.contains("executable file not found"),
        "{}",
        o.stderr
    );

    // An image that is not here: the CLI tries a pull (from a closed loopback port, so the test
    // sends nothing off the machine), which fails; exit 125.
    let o = d.docker(&["run", "--rm", "127.0.0.1:9/nosuchimage"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr
            .contains("Unable to find image '127.0.0.1:9/nosuchimage:latest' locally"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("127.0.0.1:9"), "{}", o.stderr);

    // stdout and stderr are kept apart, stdin reaches the process, files are in place.
    let o = d.docker_in(
        &[
            "run",
            "-i",
            "--rm",
            "--name",
            "io",
            "busybox:local",
            "sh",
            "-c",
            "cat; echo to-err >&2; cat /etc/hostname /etc/hosts; id -u; echo $HOSTNAME",
        ],
        Some(b"from-stdin\n"),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("from-stdin\n"), "{}", o.stdout);
    assert_eq!(o.stderr, "to-err\n");
    assert!(o.stdout.contains("127.0.0.1\tlocalhost"), "{}", o.stdout);

    let o = d.docker(&["run", "--rm", "-u", "nobody", "busybox:local", "id", "-u"]);
    assert_eq!(o.stdout, "65534\n", "{o:?}");
    let o = d.docker(&["run", "--rm", "-u", "nosuchuser", "busybox:local", "id"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("unable to find user nosuchuser"),
        "{}",
        o.stderr
    );

    // Entrypoint and workdir from the create request.
    let out = d.ok(&[
        "run",
        "--rm",
        "-w",
        "/tmp",
        "--entrypoint",
        "pwd",
        "busybox:local",
    ]);
    assert_eq!(out, "/tmp\n");

    // tag and rmi.
    d.ok(&["tag", "busybox:local", "bb:two"]);
    let out = d.ok(&["rmi", "bb:two"]);
    assert!(out.contains("Untagged: bb:two"), "{out}");
}

#[test]
fn detached_lifecycle() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox:local",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = d.ok(&["logs", "web"]);
        if logs.contains("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "no output: {logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up "), "{ps}");
    let ps = d.ok(&[
        "ps",
        "--filter",
        "name=web",
        "--format",
        "{{.ID}} {{.Names}}",
    ]);
    assert_eq!(ps.trim(), format!("{} web", &id[..12]));
    let insp = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Name}} {{.GraphDriver.Name}}",
        &id[..8],
    ]);
    assert_eq!(insp.trim(), "running /web overlay2");

    // Name in use: 409 from the daemon, 125 from the CLI.
    let o = d.docker(&["run", "-d", "--name", "web", "busybox:local", "true"]);
    assert_eq!(o.code, 125);
    assert!(
        o.stderr
            .contains("Conflict. The container name \"/web\" is already in use by container"),
        "{}",
        o.stderr
    );
    // rm of a running container needs -f.
    let o = d.docker(&["rm", "web"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("container is running"), "{}", o.stderr);

    let t0 = Instant::now();
    d.ok(&["stop", "web"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t0.elapsed()
    );
    let logs = d.ok(&["logs", "web"]);
    assert!(logs.contains("bye"), "{logs}");
    let ps = d.ok(&["ps", "-a", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Exited (0)"), "{ps}");
    let o = d.docker(&["kill", "web"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("is not running"), "{}", o.stderr);
    // Start again, then rm -f of the running container.
    d.ok(&["start", "web"]);
    let st = d.ok(&["inspect", "--format", "{{.State.Running}}", "web"]);
    assert_eq!(st.trim(), "true");
    d.ok(&["rm", "-f", "web"]);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn containers_survive_daemon_restart() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "busybox:local",
        "sh",
        "-c",
        "trap 'exit 42' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    d.kill9();
    d.spawn();
    let ps = d.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("sleeper Up"), "{ps}\n{}", tail(&d.log(), 30));
    let logs = d.ok(&["logs", "sleeper"]);
    assert!(logs.contains("up"), "{logs}");
    d.ok(&["stop", "sleeper"]);
    let code = d.ok(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}} {{.State.Status}}",
        "sleeper",
    ]);
    assert_eq!(code.trim(), "42 exited");
    let w = d.ok(&["wait", "sleeper"]);
    assert_eq!(w.trim(), "42");
    d.ok(&["rm", "sleeper"]);
}

/// Opens a hijacked attach over the raw socket; returns the stream after the 101 head.
fn raw_attach(d: &TestDaemon, id: &str, query: &str) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST /v1.44/containers/{id}/attach?{query} HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in head: {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: tcp"), "{head}");
    assert!(
        head.contains("content-type: application/vnd.docker.multiplexed-stream"),
        "{head}"
    );
    s
}

#[test]
fn attach_before_start_and_detach_keys() {
    use std::io::{Read, Write};
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    // Output of a container attached before start is complete.
    let id = d.ok(&[
        "create",
        "busybox:local",
        "sh",
        "-c",
        "echo first; echo second >&2",
    ]);
    let id = id.trim();
    let mut s = raw_attach(&d, id, "stream=1&stdout=1&stderr=1");
    d.ok(&["start", id]);
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let mut dm = berth_api::stdcopy::Demuxer::default();
    dm.feed(&all);
    let mut frames = Vec::new();
    while let Some((st, data)) = dm.next_frame().unwrap() {
        frames.push((st as u8, String::from_utf8_lossy(&data).into_owned()));
    }
    let out: String = frames
        .iter()
        .filter(|f| f.0 == 1)
        .map(|f| f.1.clone())
        .collect();
    let err: String = frames
        .iter()
        .filter(|f| f.0 == 2)
        .map(|f| f.1.clone())
        .collect();
    assert_eq!(out, "first\n");
    assert_eq!(err, "second\n");

    // Detach keys: the session ends, the container keeps running. (Without a TTY, dockerd closes
    // a StdinOnce container's stdin on detach too, so the process must not depend on stdin.)
    let id = d.ok(&[
        "create",
        "-i",
        "busybox:local",
        "sh",
        "-c",
        "read x; echo got $x; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    let mut s = raw_attach(
        &d,
        id,
        "stream=1&stdin=1&stdout=1&stderr=1&detachKeys=ctrl-x,y",
    );
    d.ok(&["start", id]);
    s.write_all(b"ping\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("ping") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF before echo");
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(&[24, b'y']).unwrap();
    let t0 = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "session not closed after detach keys");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let st = d.ok(&["inspect", "--format", "{{.State.Running}}", id]);
    assert_eq!(st.trim(), "true");
    // logs -f follows until the container ends.
    let logs = d.ok(&["logs", id]);
    assert_eq!(logs, "got ping\n");
    d.ok(&["kill", id]);
    let w = d.ok(&["wait", id]);
    assert_eq!(w.trim(), "137");
    let o = d.docker(&["logs", "-f", id]);
    assert_eq!(o.stdout, "got ping\n");
    d.ok(&["rm", id]);
}

#[test]
fn follow_restart_autoremove_and_limits() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "busybox:local",
        "sh",
        "-c",
        "for i in 1 2 3; do echo n$i; sleep 0.2; done",
    ]);
    let id = id.trim();
    let o = d.docker(&["logs", "-f", "--tail", "all", id]);
    assert_eq!(o.stdout, "n1\nn2\nn3\n", "{o:?}");
    let o = d.docker(&["logs", "--tail", "1", id]);
    assert_eq!(o.stdout, "n3\n");
    let o = d.docker(&["logs", "-t", "--tail", "1", id]);
    assert!(o.stdout.contains("Z n3"), "{}", o.stdout);
    d.ok(&["restart", "-t", "1", id]);
    let o = d.docker(&["logs", "-f", id]);
    assert_eq!(o.stdout.matches("n1").count(), 2, "{}", o.stdout);
    let ps = d.ok(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Status}}",
    ]);
    assert!(ps.starts_with("Exited (0)"), "{ps}");
    // --rm with -d: removed when stopped.
    let id2 = d.ok(&["run", "-d", "--rm", "busybox:local", "sleep", "30"]);
    let id2 = id2.trim();
    d.ok(&["stop", "-t", "0", id2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.docker(&["inspect", id2]).code == 0 {
        assert!(Instant::now() < deadline, "not auto-removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // rmi of an image a container uses is a conflict.
    let o = d.docker(&["rmi", "busybox:local"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("conflict"), "{}", o.stderr);
    d.ok(&["rm", id]);
    // A body over the limit is refused, not buffered.
    let big = format!("{{\"Image\":\"{}\"}}", "a".repeat(17 << 20));
    let r = d
        .raw("POST", "/v1.44/containers/create", Some(&big))
        .unwrap();
    assert!(r.status == 413 || r.status == 400, "{}", r.status);
}

#[test]
fn mounts_caps_and_resources() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let host = d.dir.join("share");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from-host\n").unwrap();
    let bind = format!("{}:/mnt:ro", host.display());
    let out = d.ok(&["run", "--rm", "-v", &bind, "busybox:local", "cat", "/mnt/f"]);
    assert_eq!(out, "from-host\n");
    let o = d.docker(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox:local",
        "touch",
        "/mnt/g",
    ]);
    assert_ne!(o.code, 0, "read-only bind was writable");
    // A named volume outlives its container.
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "vol1:/data",
        "busybox:local",
        "sh",
        "-c",
        "echo kept > /data/x",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "vol1:/data",
        "busybox:local",
        "cat",
        "/data/x",
    ]);
    assert_eq!(out, "kept\n");
    let out = d.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch",
        "busybox:local",
        "sh",
        "-c",
        "grep -c ' /scratch tmpfs ' /proc/mounts",
    ]);
    assert_eq!(out.trim(), "1");
    let out = d.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "busybox:local",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(out.contains("0000000000000000"), "{out}");
    let out = d.ok(&[
        "run",
        "--rm",
        "busybox:local",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(out.contains("00000000a80425fb"), "{out}");
    // Inspect shows the mounts; a bad spec is refused at create.
    let id = d.ok(&["create", "-v", &bind, "busybox:local", "true"]);
    let m = d.ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}}{{end}}",
        id.trim(),
    ]);
    assert_eq!(m.trim(), "bind /mnt false");
    let o = d.docker(&["create", "-v", "/a:relative", "busybox:local", "true"]);
    assert_ne!(o.code, 0, "{o:?}");
    let o = d.docker(&["create", "--cap-add", "BOGUS", "busybox:local", "true"]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("unknown capability"), "{}", o.stderr);
    let _ = d.docker(&[
        "run",
        "--rm",
        "-m",
        "64m",
        "--pids-limit",
        "50",
        "busybox:local",
        "true",
    ]);
}

#[test]
fn restart_policy_on_failure() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--restart",
        "on-failure:2",
        "busybox:local",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    let id = id.trim();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = d.ok(&[
            "inspect",
            "--format",
            "{{.RestartCount}} {{.State.Running}}",
            id,
        ]);
        if n.trim() == "2 false" && d.ok(&["logs", id]).matches("run").count() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "restart count stuck at {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.ok(&["logs", id]).matches("run").count(), 3);
    let o = d.docker(&[
        "run",
        "--rm",
        "--restart",
        "always",
        "busybox:local",
        "true",
    ]);
    assert_ne!(o.code, 0);
    d.ok(&["rm", "-f", id]);
}

#[test]
fn commit_history_rename_prune() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "maker",
        "busybox:local",
        "sh",
        "-c",
        "echo made > /made",
    ]);
    d.ok(&["rename", "maker", "maker2"]);
    let o = d.docker(&["inspect", "maker"]);
    assert_ne!(o.code, 0);
    let id = d.ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/made\"]",
        "maker2",
        "made:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let out = d.ok(&["run", "--rm", "made:1"]);
    assert_eq!(out, "made\n");
    let h = d.ok(&["history", "made:1"]);
    assert!(h.lines().count() >= 3, "{h}");
    d.ok(&["rm", "maker2"]);
    let out = d.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    d.ok(&["create", "--name", "stopped", "busybox:local", "true"]);
    let out = d.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Deleted Containers"), "{out}");
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    d.ok(&["rmi", "made:1"]);
    let out = d.ok(&["image", "prune", "-af"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert!(!d.ok(&["images"]).contains("busybox"));
}

#[test]
fn events_stream() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.ok(&["run", "--rm", "--name", "ev", "hello-world"]);
    let until = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .timestamp()
        .to_string();
    let out = d.ok(&[
        "events",
        "--since",
        "1",
        "--until",
        &until,
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "container create ev",
        "container attach ev",
        "container start ev",
        "container die ev",
        "container destroy ev",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {out}");
    }
    let out = d.ok(&[
        "events",
        "--since",
        "1",
        "--until",
        &until,
        "--filter",
        "event=die",
        "--format",
        "{{.Actor.Attributes.exitCode}}",
    ]);
    assert_eq!(out.trim(), "0");
}

#[test]
fn volumes_api() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    assert_eq!(
        d.ok(&["volume", "create", "--label", "k=v", "v1"]).trim(),
        "v1"
    );
    let ls = d.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert_eq!(ls.trim(), "local v1");
    let mp = d.ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}} {{.Labels.k}}",
        "v1",
    ]);
    assert!(mp.trim().ends_with("/volumes/v1/_data v"), "{mp}");
    d.ok(&[
        "run",
        "--name",
        "user",
        "-v",
        "v1:/d",
        "busybox:local",
        "sh",
        "-c",
        "echo x > /d/f",
    ]);
    let o = d.docker(&["volume", "rm", "v1"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("volume is in use"), "{}", o.stderr);
    d.ok(&["rm", "user"]);
    d.ok(&["volume", "rm", "v1"]);
    let o = d.docker(&["volume", "inspect", "v1"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("no such volume"), "{}", o.stderr);
}

#[test]
fn exec_in_running_container() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "-e",
        "FROM_RUN=1",
        "busybox:local",
        "sleep",
        "60",
    ]);
    let out = d.ok(&["exec", "box", "sh", "-c", "echo $FROM_RUN; echo err >&2"]);
    assert_eq!(out, "1\n");
    let o = d.docker(&["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(o.code, 7, "{o:?}");
    let o = d.docker(&["exec", "box", "nosuch"]);
    assert_eq!(o.code, 127, "{o:?}");
    assert!(
        o.stdout.contains("executable file not found")
            || o.stderr.contains("executable file not found"),
        "{o:?}"
    );
    let o = d.docker_in(&["exec", "-i", "box", "cat"], Some(b"via-stdin\n"));
    assert_eq!(o.stdout, "via-stdin\n", "{o:?}");
    let out = d.ok(&[
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "X=y",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $X",
    ]);
    assert_eq!(out, "65534\n/tmp\ny\n");
    d.ok(&["exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.docker(&["exec", "box", "cat", "/tmp/bg"]).stdout != "bg\n" {
        assert!(Instant::now() < deadline, "detached exec did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ok(&["stop", "-t", "0", "box"]);
    let o = d.docker(&["exec", "box", "true"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("is not running"), "{}", o.stderr);
    d.ok(&["rm", "box"]);
}

#[test]
fn pause_top_stats() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "pz",
        "busybox:local",
        "sh",
        "-c",
        "while true; do echo t; sleep 0.1; done",
    ]);
    let top = d.ok(&["top", "pz"]);
    assert!(top.contains("PID") && top.contains("sh -c"), "{top}");
    let st = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "pz",
    ]);
    assert!(st.starts_with("pz "), "{st}");
    let pids: u64 = st.trim().split(' ').nth(1).unwrap().parse().unwrap();
    assert!(pids >= 1, "{st}");
    d.ok(&["pause", "pz"]);
    let s = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Paused}}",
        "pz",
    ]);
    assert_eq!(s.trim(), "paused true");
    let ps = d.ok(&["ps", "--format", "{{.Status}}"]);
    assert!(ps.contains("(Paused)"), "{ps}");
    let n1 = d.ok(&["logs", "pz"]).lines().count();
    std::thread::sleep(Duration::from_millis(400));
    let n2 = d.ok(&["logs", "pz"]).lines().count();
    assert!(n2 <= n1 + 1, "output continued while paused: {n1} -> {n2}");
    let o = d.docker(&["pause", "pz"]);
    assert!(o.stderr.contains("already paused"), "{}", o.stderr);
    d.ok(&["unpause", "pz"]);
    std::thread::sleep(Duration::from_millis(400));
    let n3 = d.ok(&["logs", "pz"]).lines().count();
    assert!(n3 > n2, "no output after unpause");
    d.ok(&["pause", "pz"]);
    let t0 = Instant::now();
    d.ok(&["stop", "-t", "1", "pz"]);
    assert!(t0.elapsed() < Duration::from_secs(8));
    let s = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Paused}}",
        "pz",
    ]);
    assert_eq!(s.trim(), "exited false");
    d.ok(&["rm", "pz"]);
}

#[test]
fn config_file_conflicts_with_flags() {
    let dir = std::env::temp_dir().join(format!("bt-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("daemon.json");
    std::fs::write(&conf, r#"{"data-root": "/tmp/elsewhere", "debug": true}"#).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berthd"));
    cmd.arg("--config-file")
        .arg(&conf)
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("-H")
        .arg(format!("unix://{}/s.sock", dir.display()));
    let o = common::run_with_timeout(cmd, None, Duration::from_secs(20));
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains(
            "the following directives are specified both as a flag and in the configuration file: data-root"
        ),
        "{}",
        o.stderr
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berthd"));
    cmd.arg("--config-file")
        .arg(&conf)
        .arg("-H")
        .arg("tcp://127.0.0.1:1");
    let o = common::run_with_timeout(cmd, None, Duration::from_secs(20));
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("only unix sockets"), "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn save_and_load() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let file = d.dir.join("saved.tar");
    d.ok(&["save", "-o", file.to_str().unwrap(), "busybox:local"]);
    assert!(std::fs::metadata(&file).unwrap().len() > 1_000_000);
    d.ok(&["rmi", "busybox:local"]);
    let out = d.ok(&["load", "-i", file.to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:local"), "{out}");
    assert_eq!(
        d.ok(&["run", "--rm", "busybox:local", "echo", "loaded"]),
        "loaded\n"
    );
    let o = d.docker(&[
        "save",
        "-o",
        d.dir.join("x.tar").to_str().unwrap(),
        "nosuch:1",
    ]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("No such image") || o.stderr.contains("nosuch"),
        "{}",
        o.stderr
    );
}

#[test]
fn cp_export_diff() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "files",
        "busybox:local",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo hello > /data/sub/f && rm -f /bin/vi",
    ]);
    // Out of a stopped container.
    let out_dir = d.dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    d.ok(&["cp", "files:/data", out_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("data/sub/f")).unwrap(),
        "hello\n"
    );
    // Into it, then read back from a running one.
    let src = d.dir.join("in.txt");
    std::fs::write(&src, "pushed\n").unwrap();
    d.ok(&["cp", src.to_str().unwrap(), "files:/data/in.txt"]);
    d.ok(&["start", "-a", "files"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox:local",
        "sleep",
        "30",
    ]);
    d.ok(&["cp", src.to_str().unwrap(), "live:/tmp/"]);
    assert_eq!(d.ok(&["exec", "live", "cat", "/tmp/in.txt"]), "pushed\n");
    let o = d.docker(&["cp", "live:/nonexistent", out_dir.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("Could not find the file /nonexistent"),
        "{}",
        o.stderr
    );
    // diff of the stopped one.
    let diff = d.ok(&["diff", "files"]);
    for want in [
        "A /data",
        "A /data/sub/f",
        "D /bin/vi",
        "C /bin",
        "A /data/in.txt",
    ] {
        assert!(
            diff.lines().any(|l| l == want),
            "missing {want:?} in {diff}"
        );
    }
    // export.
    let tarf = d.dir.join("export.tar");
    d.ok(&["export", "-o", tarf.to_str().unwrap(), "files"]);
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tarf)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.trim_start_matches("./") == "data/sub/f"),
        "{list}"
    );
    d.ok(&["rm", "-f", "live", "files"]);
}

#[test]
fn health_checks() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox:local",
        "sleep",
        "30",
    ]);
    let status = || {
        d.ok(&["inspect", "--format", "{{.State.Health.Status}}", "hc"])
            .trim()
            .to_string()
    };
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = status();
            if s == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health stuck at {s}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("unhealthy");
    d.ok(&["exec", "hc", "touch", "/tmp/ok"]);
    wait_for("healthy");
    let ps = d.ok(&["ps", "--format", "{{.Status}}"]);
    assert!(ps.contains("(healthy)"), "{ps}");
    let log = d.ok(&[
        "inspect",
        "--format",
        "{{(index .State.Health.Log 0).ExitCode}}",
        "hc",
    ]);
    assert!(log.trim() == "0" || log.trim() == "1", "{log}");
    d.ok(&["rm", "-f", "hc"]);
}

#[test]
fn network_modes() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "neta",
        "busybox:local",
        "sleep",
        "30",
    ]);
    let a = d.ok(&["exec", "neta", "readlink", "/proc/self/ns/net"]);
    let b = d.ok(&[
        "run",
        "--rm",
        "--network",
        "container:neta",
        "busybox:local",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(a, b);
    let c = d.ok(&[
        "run",
        "--rm",
        "busybox:local",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_ne!(a, c);
    let host = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    let h = d.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox:local",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(h.trim(), host);
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "nosuchnet",
        "busybox:local",
        "true",
    ]);
    assert_eq!(o.code, 125);
    assert!(
        o.stderr.contains("network nosuchnet not found"),
        "{}",
        o.stderr
    );
    let o = d.docker(&["run", "--rm", "-p", "8080:80", "busybox:local", "true"]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-p",
        "8080:80",
        "busybox:local",
        "true",
    ]);
    assert_eq!(o.code, 0);
    assert!(
        o.stderr.contains("Published ports are discarded"),
        "{}",
        o.stderr
    );
    d.ok(&["rm", "-f", "neta"]);
}

#[test]
fn sizes_and_system_df() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "writer",
        "busybox:local",
        "sh",
        "-c",
        "head -c 100000 /dev/zero > /blob",
    ]);
    let s = d.ok(&["ps", "-as", "--format", "{{.Size}}"]);
    assert!(s.contains("100kB") && s.contains("virtual"), "{s}");
    let df = d.ok(&["system", "df"]);
    assert!(df.contains("Images") && df.contains("Containers"), "{df}");
    d.ok(&["rm", "writer"]);
}

#[test]
fn update_restart_policy_and_limits() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&["run", "-d", "--name", "up", "busybox:local", "sleep", "30"]);
    d.ok(&[
        "update",
        "--restart",
        "on-failure:3",
        "--pids-limit",
        "77",
        "up",
    ]);
    let rp = d.ok(&[
        "inspect", "--format",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.HostConfig.PidsLimit}}",
        "up",
    ]);
    assert_eq!(rp.trim(), "on-failure 3 77");
    let o = d.docker(&["update", "--restart", "bogus", "up"]);
    assert_ne!(o.code, 0);
    d.ok(&["rm", "-f", "up"]);
}

#[test]
fn anonymous_volumes_and_copy_up() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "seed",
        "busybox:local",
        "sh",
        "-c",
        "mkdir /vdata && echo seeded > /vdata/f",
    ]);
    d.ok(&["commit", "-c", "VOLUME /vdata", "seed", "withvol:1"]);
    d.ok(&["rm", "seed"]);
    // The image's data is copied into the new anonymous volume.
    d.ok(&[
        "run",
        "--name",
        "v1",
        "withvol:1",
        "sh",
        "-c",
        "cat /vdata/f; echo more >> /vdata/f",
    ]);
    let vols = d.ok(&["volume", "ls", "-q"]);
    assert_eq!(vols.lines().count(), 1, "{vols}");
    let m = d.ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Destination}}{{end}}",
        "v1",
    ]);
    assert_eq!(m.trim(), "volume /vdata");
    assert_eq!(d.ok(&["logs", "v1"]), "seeded\n");
    // rm -v removes it; --rm does too.
    d.ok(&["rm", "-v", "v1"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "-v",
            "/scratch",
            "busybox:local",
            "sh",
            "-c",
            "echo x > /scratch/y && cat /scratch/y"
        ]),
        "x\n"
    );
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
}

#[test]
fn an_error_before_the_body_is_read_still_reaches_the_client() {
    use std::io::{Read, Write};
    let d = TestDaemon::start();
    // The answer (404) comes before the body is needed; the client sends its body after reading
    // the answer's start, as a slow client would: the body must not meet a closed socket.
    let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    let body = vec![b' '; 1 << 20];
    write!(
        s,
        "POST /v1.44/containers/nosuch/update HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    s.write_all(&body)
        .expect("the daemon drains what it did not read");
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("No such container: nosuch"), "{rest}");
}
