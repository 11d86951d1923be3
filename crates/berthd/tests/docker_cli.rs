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

    let o = d.docker(&["run", "--rm", "nosuchimage"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr
            .contains("Unable to find image 'nosuchimage:latest' locally"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("pull access denied for nosuchimage"),
        "{}",
        o.stderr
    );

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
