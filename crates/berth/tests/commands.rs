//! The commands of issues #3 and #4 through berth, and the key ones through the docker CLI against the
//! same private berthd (so outputs must agree). Needs root, berthd/berth-shim built next to berth,
//! /usr/bin/busybox; the registry test also docker-registry and htpasswd. Skips what is missing.

mod common;

use common::{Daemon, Registry, code, err, have, out, pty_run};

fn ok(o: &std::process::Output, what: &str) -> String {
    assert_eq!(code(o), 0, "{what}: {}{}", out(o), err(o));
    out(o)
}

fn setup() -> Option<Daemon> {
    let d = Daemon::start()?;
    d.busybox("bb:1")?;
    Some(d)
}

#[test]
fn exec_runs_in_the_container_with_its_exit_code() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-d", "--name", "box", "bb:1", "sleep", "1000"]),
        "run",
    );
    assert_eq!(ok(&d.run(&["exec", "box", "echo", "hi"]), "exec"), "hi\n");
    let o = d.run(&["exec", "box", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        (code(&o), out(&o), err(&o)),
        (7, "out\n".into(), "err\n".into())
    );
    let o = d.docker(&["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7, "docker exec: {}", err(&o));
    let envf = d.dir.join("env.list");
    std::fs::write(&envf, "# comment\nFROMFILE=yes\n").unwrap();
    let o = d.run(&[
        "exec",
        "-e",
        "FOO=bar",
        "--env-file",
        envf.to_str().unwrap(),
        "-w",
        "/tmp",
        "-u",
        "1:2",
        "box",
        "sh",
        "-c",
        "echo $FOO $FROMFILE; pwd; id",
    ]);
    assert_eq!(ok(&o, "exec flags"), "bar yes\n/tmp\nuid=1 gid=2\n");
    let o = d.run(&["exec", "box", "nosuch"]);
    assert_eq!(code(&o), 127, "{}", err(&o));
    // The daemon writes the failure into the exec's stream (stdout), as dockerd does.
    assert!(out(&o).contains("executable file not found"), "{}", out(&o));
    let dk = d.docker(&["exec", "box", "nosuch"]);
    assert_eq!((code(&dk), out(&dk), err(&dk)), (127, out(&o), err(&o)));
    let o = d.run_stdin(&["exec", "-i", "box", "cat"], b"piped\n");
    assert_eq!(ok(&o, "exec -i"), "piped\n");
    let o = d.run(&["exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg"]);
    assert_eq!(ok(&o, "exec -d"), "");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(ok(&d.run(&["exec", "box", "cat", "/tmp/bg"]), "bg"), "bg\n");
    // -t without a terminal on stdin, like docker.
    let o = d.run(&["exec", "-it", "box", "sh"]);
    assert_eq!(
        (code(&o), err(&o).as_str()),
        (1, "the input device is not a TTY\n")
    );
    let o = d.run(&["exec", "nosuch", "true"]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        err(&o),
        "Error response from daemon: No such container: nosuch\n"
    );
    let o = d.run(&["exec", "box"]);
    assert_eq!(code(&o), 1);
    assert!(
        err(&o).starts_with("berth: 'berth exec' requires at least 2 arguments"),
        "{}",
        err(&o)
    );
    // The management alias.
    assert_eq!(
        ok(&d.run(&["container", "exec", "box", "echo", "x"]), "alias"),
        "x\n"
    );
}

#[test]
fn interactive_exec_through_a_pseudo_terminal() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-d", "--name", "box", "bb:1", "sleep", "1000"]),
        "run",
    );
    let (rc, shown) = pty_run(
        &d,
        &["exec", "-it", "box", "sh"],
        &[("# ", "tty; echo $((6*7))\r"), ("42", "exit 3\r")],
    );
    assert!(
        !shown.contains("MISSING") && !shown.contains("HUNG"),
        "{shown}"
    );
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert_eq!(rc, 3, "{shown}");
    // The exec's terminal starts at the client's size and follows its resizes.
    let (rc, shown) = pty_run(
        &d,
        &["exec", "-it", "box", "sh"],
        &[
            ("# ", "stty size\r"),
            ("30 100", "@resize 40 120"),
            ("", "stty size\r"),
            ("40 120", "exit\r"),
        ],
    );
    assert_eq!(rc, 0, "{shown}");
    assert!(!shown.contains("MISSING"), "{shown}");
    // Detach keys leave the exec running and exit 0.
    let (rc, shown) = pty_run(
        &d,
        &["exec", "-it", "--detach-keys", "ctrl-x", "box", "sh"],
        &[("# ", "\x18")],
    );
    assert_eq!(rc, 0, "{shown}");
}

#[test]
fn lifecycle_commands_match_docker() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-d", "--name", "c1", "bb:1", "sleep", "1000"]),
        "run",
    );
    assert_eq!(ok(&d.run(&["pause", "c1"]), "pause"), "c1\n");
    let ps = ok(&d.run(&["ps", "--format", "{{.Status}}"]), "ps");
    assert!(ps.contains("(Paused)"), "{ps}");
    assert_eq!(ok(&d.run(&["unpause", "c1"]), "unpause"), "c1\n");
    let o = d.run(&["pause", "c1", "nosuch"]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        err(&o),
        "Error response from daemon: No such container: nosuch\n"
    );
    ok(&d.run(&["unpause", "c1"]), "unpause again");
    ok(&d.run(&["rename", "c1", "c2"]), "rename");
    let o = d.run(&["rename", "c2", ""]);
    assert_eq!(
        (code(&o), err(&o).as_str()),
        (1, "Error: Neither old nor new names may be empty\n")
    );

    let top = ok(&d.run(&["top", "c2"]), "top");
    assert!(top.starts_with("UID "), "{top}");
    assert!(top.contains("sleep 1000"), "{top}");
    assert_eq!(top, ok(&d.docker(&["top", "c2"]), "docker top"));

    let o = d.run(&["port", "c2", "80"]);
    assert_eq!(
        (code(&o), err(&o).as_str()),
        (1, "Error: No public port '80' published for c2\n")
    );
    assert_eq!(err(&o), err(&d.docker(&["port", "c2", "80"])));

    ok(
        &d.run(&[
            "exec",
            "c2",
            "sh",
            "-c",
            "echo x > /tmp/new; rm /bin/true; mkdir /data",
        ]),
        "changes",
    );
    let diff = ok(&d.run(&["diff", "c2"]), "diff");
    for l in ["D /bin/true", "A /data", "C /tmp", "A /tmp/new"] {
        assert!(diff.lines().any(|x| x == l), "{l} in {diff}");
    }
    assert_eq!(diff, ok(&d.docker(&["diff", "c2"]), "docker diff"));

    let u = d.run(&[
        "update",
        "--restart",
        "on-failure:3",
        "--memory",
        "64m",
        "c2",
    ]);
    assert_eq!(ok(&u, "update"), "c2\n");
    let o = d.run(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Memory}}",
        "c2",
    ]);
    assert_eq!(ok(&o, "inspect"), "on-failure 67108864\n");
    let o = d.run(&["update", "c2"]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        err(&o),
        "You must provide one or more flags when using this command.\n"
    );

    let f = "{{.Name}} {{.MemUsage}} {{.PIDs}}";
    let s = ok(&d.run(&["stats", "--no-stream", "--format", f]), "stats");
    assert!(s.starts_with("c2 ") && s.trim_end().ends_with(" 1"), "{s}");
    let table = ok(&d.run(&["stats", "--no-stream"]), "stats table");
    assert!(
        table.starts_with("CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT"),
        "{table}"
    );
    let o = d.run(&["stats", "--no-stream", "nosuch"]);
    assert_eq!(code(&o), 1);
    assert_eq!(err(&o), err(&d.docker(&["stats", "--no-stream", "nosuch"])));

    // export: a tar of the container's filesystem, to -o or a pipe; never to a terminal.
    let tar = d.dir.join("exp.tar");
    ok(
        &d.run(&["export", "-o", tar.to_str().unwrap(), "c2"]),
        "export",
    );
    let list = std::process::Command::new("tar")
        .arg("tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out(&list)
            .lines()
            .any(|l| l.trim_end_matches('/') == "./tmp/new" || l == "tmp/new"),
        "{}",
        out(&list)
    );

    // commit and history, same output as docker's.
    let id = ok(
        &d.run(&[
            "commit",
            "-c",
            "CMD [\"sh\"]",
            "-m",
            "msg",
            "-a",
            "me",
            "c2",
            "snap:1",
        ]),
        "commit",
    );
    assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
    let o = d.run(&[
        "inspect",
        "-f",
        "{{.Author}} {{.Comment}} {{json .Config.Cmd}}",
        "snap:1",
    ]);
    assert_eq!(ok(&o, "inspect image"), "me msg [\"sh\"]\n");
    let h = ok(&d.run(&["history", "snap:1"]), "history");
    assert!(h.starts_with("IMAGE          CREATED"), "{h}");
    assert!(h.contains("msg"), "{h}");
    for args in [
        vec![
            "history",
            "--format",
            "table {{.ID}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
            "snap:1",
        ],
        vec!["history", "--no-trunc", "-H=false", "snap:1"],
        vec!["history", "-q", "snap:1"],
        vec![
            "history",
            "--format",
            "{{.ID}}|{{.Size}}|{{.Comment}}",
            "snap:1",
        ],
    ] {
        assert_eq!(out(&d.run(&args)), out(&d.docker(&args)), "{args:?}");
    }

    // events: the same lines as docker's for the same window, filters and --format.
    let until = chrono::Utc::now().timestamp().to_string();
    for args in [
        vec!["events", "--since", "10m", "--until", &until],
        vec![
            "events",
            "--since",
            "10m",
            "--until",
            &until,
            "--filter",
            "event=rename",
        ],
        vec![
            "events",
            "--since",
            "10m",
            "--until",
            &until,
            "--format",
            "{{.Type}} {{.Action}}",
        ],
        vec![
            "events", "--since", "10m", "--until", &until, "--format", "json",
        ],
    ] {
        let b = ok(&d.run(&args), "events");
        assert_eq!(b, out(&d.docker(&args)), "{args:?}");
        assert!(!b.is_empty(), "{args:?}");
    }
    let ev = ok(
        &d.run(&[
            "events",
            "--since",
            "10m",
            "--until",
            &until,
            "--filter",
            "event=rename",
        ]),
        "events",
    );
    assert!(
        ev.contains(" container rename ") && ev.contains("oldName=/c1"),
        "{ev}"
    );

    // restart, wait, container prune.
    assert_eq!(ok(&d.run(&["restart", "-t", "1", "c2"]), "restart"), "c2\n");
    assert_eq!(
        code(&d.run(&["run", "--name", "dead", "bb:1", "sh", "-c", "exit 3"])),
        3
    );
    assert_eq!(ok(&d.run(&["wait", "dead"]), "wait"), "3\n");
    let p = ok(&d.run(&["container", "prune", "-f"]), "prune");
    assert!(
        p.starts_with("Deleted Containers:\n") && p.ends_with("Total reclaimed space: 0B\n"),
        "{p}"
    );
    let o = d.run_stdin(&["container", "prune"], b"n\n");
    assert_eq!(
        ok(&o, "prune cancelled"),
        "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
    );
}

#[test]
fn cp_both_ways_and_stdio_tars() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-d", "--name", "box", "bb:1", "sleep", "1000"]),
        "run",
    );
    ok(
        &d.run(&[
            "exec",
            "box",
            "sh",
            "-c",
            "mkdir -p /d/e; echo one > /d/f; echo two > /d/e/g",
        ]),
        "prep",
    );
    let host = d.dir.join("cp");
    std::fs::create_dir_all(host.join("src/sub")).unwrap();
    std::fs::write(host.join("src/a.txt"), "hello\n").unwrap();
    std::fs::write(host.join("src/sub/b.txt"), "deep\n").unwrap();
    let h = |p: &str| host.join(p).to_str().unwrap().to_string();

    // Container to host: into an existing directory, renamed to a new path, a file, contents with /.
    ok(&d.run(&["cp", "box:/d", &h("")]), "cp dir into");
    assert_eq!(
        std::fs::read_to_string(host.join("d/e/g")).unwrap(),
        "two\n"
    );
    ok(&d.run(&["cp", "box:/d", &h("d2")]), "cp dir renamed");
    assert_eq!(std::fs::read_to_string(host.join("d2/f")).unwrap(), "one\n");
    ok(&d.run(&["cp", "box:/d/f", &h("newf")]), "cp file renamed");
    assert_eq!(std::fs::read_to_string(host.join("newf")).unwrap(), "one\n");
    std::fs::create_dir_all(host.join("contents")).unwrap();
    ok(&d.run(&["cp", "box:/d/.", &h("contents")]), "cp contents");
    assert!(host.join("contents/e/g").exists() && !host.join("contents/d").exists());
    // To stdout as a tar.
    let o = d.run(&["cp", "box:/d", "-"]);
    let tarf = host.join("d.tar");
    std::fs::write(&tarf, &o.stdout).unwrap();
    let list = std::process::Command::new("tar")
        .arg("tf")
        .arg(&tarf)
        .output()
        .unwrap();
    assert!(out(&list).lines().any(|l| l == "d/e/g"), "{}", out(&list));

    // Host to container: into a directory, renamed, a tar on stdin.
    ok(&d.run(&["cp", &h("src"), "box:/tmp/"]), "cp into container");
    assert_eq!(
        ok(&d.run(&["exec", "box", "cat", "/tmp/src/sub/b.txt"]), "cat"),
        "deep\n"
    );
    ok(
        &d.run(&["cp", &h("src/a.txt"), "box:/tmp/renamed.txt"]),
        "cp renamed",
    );
    assert_eq!(
        ok(&d.run(&["exec", "box", "cat", "/tmp/renamed.txt"]), "cat"),
        "hello\n"
    );
    ok(&d.run_stdin(&["cp", "-", "box:/"], &o.stdout), "cp - into");
    assert_eq!(
        ok(&d.run(&["exec", "box", "cat", "/d/e/g"]), "cat"),
        "two\n"
    );
    // The docker CLI reads what berth wrote and the other way round.
    ok(
        &d.docker(&["cp", "box:/tmp/renamed.txt", &h("by-docker")]),
        "docker cp",
    );
    assert_eq!(
        std::fs::read_to_string(host.join("by-docker")).unwrap(),
        "hello\n"
    );

    // Errors, worded and coded like docker's.
    for args in [
        vec!["cp".to_string(), "box:/nope".into(), h("x")],
        vec!["cp".into(), h("src/a.txt"), "box:/nodir/x".into()],
        vec!["cp".into(), "a".into(), "b".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (b, dk) = (d.run(&args), d.docker(&args));
        assert_eq!((code(&b), err(&b)), (code(&dk), err(&dk)), "{args:?}");
        assert_eq!(code(&b), 1);
    }
    let o = d.run_stdin(&["cp", "-", "box:/tmp/renamed.txt"], b"");
    assert_eq!(
        err(&o),
        "destination \"box:/tmp/renamed.txt\" must be a directory\n"
    );
    // A symlink in the container that points at a host path stays inside the container.
    ok(
        &d.run(&["exec", "box", "ln", "-s", "/", "/escape"]),
        "symlink",
    );
    ok(
        &d.run(&["cp", &h("src/a.txt"), "box:/escape/tmp/"]),
        "cp through link",
    );
    assert!(
        !std::path::Path::new("/tmp/a.txt").exists()
            || std::fs::read_to_string("/tmp/a.txt").unwrap() != "hello\n"
    );
}

#[test]
fn volumes_df_and_prune_match_docker() {
    let Some(d) = setup() else { return };
    assert_eq!(ok(&d.run(&["volume", "create", "v1"]), "create"), "v1\n");
    ok(
        &d.run(&["volume", "create", "--label", "a=b", "v2"]),
        "create labelled",
    );
    let anon = ok(&d.run(&["volume", "create"]), "create anonymous");
    assert_eq!(anon.trim().len(), 64, "{anon}");
    for args in [
        vec!["volume", "ls"],
        vec!["volume", "ls", "-q", "--filter", "label=a=b"],
        vec!["volume", "ls", "--format", "{{.Name}}\t{{.Labels}}"],
        vec!["volume", "inspect", "v1", "v2"],
        vec!["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "v1"],
        vec!["system", "df"],
    ] {
        assert_eq!(
            ok(&d.run(&args), "berth"),
            out(&d.docker(&args)),
            "{args:?}"
        );
    }
    let v = ok(&d.run(&["system", "df", "-v"]), "df -v");
    assert!(v.starts_with("Images space usage:\n\nREPOSITORY "), "{v}");
    assert!(
        v.contains("\nLocal Volumes space usage:\n\nVOLUME NAME"),
        "{v}"
    );
    let o = d.run(&["volume", "rm", "v1", "nosuch"]);
    assert_eq!((code(&o), out(&o)), (1, "v1\n".to_string()));
    assert_eq!(
        err(&o),
        "Error response from daemon: get nosuch: no such volume\n"
    );
    let p = ok(&d.run(&["volume", "prune", "-f"]), "volume prune");
    assert_eq!(
        p,
        format!(
            "Deleted Volumes:\n{}\n\nTotal reclaimed space: 0B\n",
            anon.trim()
        )
    );
    let p = ok(&d.run(&["volume", "prune", "-af"]), "volume prune -a");
    assert_eq!(p, "Deleted Volumes:\nv2\n\nTotal reclaimed space: 0B\n");

    // image prune and system prune.
    ok(&d.run(&["tag", "bb:1", "bb:2"]), "tag");
    ok(&d.run(&["run", "--name", "gone", "bb:1", "true"]), "run");
    let p = ok(&d.run(&["image", "prune", "-f"]), "image prune");
    assert_eq!(p, "Total reclaimed space: 0B\n");
    let p = ok(&d.run(&["system", "prune", "-f"]), "system prune");
    assert!(p.starts_with("Deleted Containers:\n"), "{p}");
    assert!(p.ends_with("Total reclaimed space: 0B\n"), "{p}");
    let p = ok(&d.run(&["image", "prune", "-af"]), "image prune -a");
    assert!(
        p.contains("untagged: bb:1") && p.contains("untagged: bb:2"),
        "{p}"
    );
    assert!(p.contains("deleted: sha256:"), "{p}");
    let imgs = ok(&d.run(&["images", "-q"]), "images");
    assert!(!imgs.contains(|c: char| c.is_ascii_hexdigit()) || !p.is_empty());
}

#[test]
fn save_load_and_images_filters() {
    let Some(d) = setup() else { return };
    let a = d.dir.join("a.tar");
    ok(
        &d.run(&["save", "-o", a.to_str().unwrap(), "bb:1"]),
        "save -o",
    );
    let piped = d.run(&["save", "bb:1"]);
    assert_eq!(code(&piped), 0);
    assert_eq!(
        piped.stdout,
        std::fs::read(&a).unwrap(),
        "save to stdout = save -o"
    );
    assert_eq!(
        piped.stdout,
        d.docker(&["save", "bb:1"]).stdout,
        "berth save = docker save"
    );
    ok(&d.run(&["rmi", "bb:1"]), "rmi");
    let l = ok(&d.run(&["load", "-i", a.to_str().unwrap()]), "load -i");
    assert_eq!(l, "Loaded image: bb:1\n");
    ok(&d.run(&["rmi", "bb:1"]), "rmi");
    let l = ok(&d.run_stdin(&["load", "-q"], &piped.stdout), "load stdin");
    assert_eq!(l, "Loaded image: bb:1\n");
    let l = ok(&d.docker_stdin(&["load"], &piped.stdout), "docker load");
    assert_eq!(l, "Loaded image: bb:1\n");
    let o = d.run(&["load", "-i", "/nonexistent.tar"]);
    assert_eq!(
        (code(&o), err(&o).as_str()),
        (1, "open /nonexistent.tar: no such file or directory\n")
    );

    // A dangling image: commit without a name.
    ok(&d.run(&["run", "--name", "box", "bb:1", "true"]), "run");
    ok(&d.run(&["commit", "box"]), "commit");
    for args in [
        // Formats without the relative "CREATED" column, which may differ by a second between two runs.
        vec![
            "images",
            "--filter",
            "dangling=true",
            "--format",
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}",
        ],
        vec![
            "images",
            "--digests",
            "--format",
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.Size}}",
        ],
        vec!["image", "inspect", "-f", "{{.Id}}", "bb:1"],
        vec!["image", "history", "-H=false", "bb:1"],
    ] {
        assert_eq!(
            ok(&d.run(&args), "berth"),
            out(&d.docker(&args)),
            "{args:?}"
        );
    }
    let dang = ok(
        &d.run(&[
            "images",
            "--filter",
            "dangling=true",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]),
        "dangling",
    );
    assert_eq!(dang, "<none>:<none>\n");
}

#[test]
fn login_push_pull_share_docker_config() {
    if !have("docker-registry") || !have("htpasswd") {
        eprintln!("skipping: docker-registry or htpasswd missing");
        return;
    }
    let Some(d) = setup() else { return };
    let reg = Registry::start(&d.dir, Some(("alice", "secret")));
    let host = reg.host();
    let image = format!("{host}/team/app:1.2");

    // Wrong password: dockerd's wording, exit 1, nothing stored.
    let o = d.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        b"wrong\n",
    );
    assert_eq!(code(&o), 1);
    assert_eq!(
        err(&o),
        format!(
            "Error response from daemon: login attempt to http://{host}/v2/ failed with status: 401 Unauthorized\n"
        )
    );
    assert!(!d.config.join("config.json").exists());
    let o = d.run(&["login", "-u", "alice", "-p", "x", "--password-stdin", &host]);
    assert_eq!(
        err(&o),
        "--password and --password-stdin are mutually exclusive\n"
    );
    let o = d.run(&["login", "--password-stdin", &host]);
    assert_eq!(err(&o), "Must provide --username with --password-stdin\n");

    // Pushing without a login is refused by the registry.
    ok(&d.run(&["tag", "bb:1", &image]), "tag");
    let o = d.run(&["push", &image]);
    assert_eq!(code(&o), 1, "{}", out(&o));

    // docker logs in; berth uses that login.
    let o = d.docker_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        b"secret\n",
    );
    assert_eq!(ok(&o, "docker login"), "Login Succeeded\n");
    let cfg = std::fs::read_to_string(d.config.join("config.json")).unwrap();
    assert!(cfg.contains("\"auth\": \"YWxpY2U6c2VjcmV0\""), "{cfg}");
    let p = ok(&d.run(&["push", &image]), "push");
    assert!(
        p.starts_with(&format!(
            "The push refers to repository [{host}/team/app]\n"
        )),
        "{p}"
    );
    assert!(p.contains("1.2: digest: sha256:"), "{p}");

    // berth logs out: docker is logged out too; berth logs in: docker can pull.
    assert_eq!(
        ok(&d.run(&["logout", &host]), "logout"),
        format!("Removing login credentials for {host}\n")
    );
    assert_eq!(
        ok(&d.run(&["logout", &host]), "logout twice"),
        format!("Removing login credentials for {host}\n")
    );
    ok(&d.run(&["rmi", &image]), "rmi");
    let o = d.docker(&["pull", &image]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let o = d.run(&["pull", &image]);
    assert_eq!(code(&o), 1);
    assert_eq!(err(&o), err(&d.docker(&["pull", &image])));
    let o = d.run_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        b"secret\n",
    );
    assert_eq!(ok(&o, "berth login"), "Login Succeeded\n");
    assert!(
        err(&o).contains("WARNING! Your credentials are stored unencrypted"),
        "{}",
        err(&o)
    );
    let cfg2 = std::fs::read_to_string(d.config.join("config.json")).unwrap();
    assert_eq!(
        cfg2,
        format!(
            "{{\n\t\"auths\": {{\n\t\t\"{host}\": {{\n\t\t\t\"auth\": \"YWxpY2U6c2VjcmV0\"\n\t\t}}\n\t}}\n}}"
        )
    );
    let o = d.docker(&["pull", &image]);
    assert!(ok(&o, "docker pull").ends_with(&format!("{image}\n")));
    ok(&d.run(&["rmi", &image]), "rmi");
    let p = ok(&d.run(&["pull", &image]), "berth pull");
    assert!(p.starts_with("1.2: Pulling from team/app\n"), "{p}");
    assert!(p.ends_with(&format!("{image}\n")), "{p}");
    assert_eq!(
        ok(&d.run(&["pull", "-q", &image]), "pull -q"),
        format!("{image}\n")
    );
    let o = d.run(&["pull", &format!("{host}/team/app")]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        out(&o),
        "Using default tag: latest\nlatest: Pulling from team/app\n"
    );
    assert_eq!(
        err(&o),
        format!(
            "manifest for {host}/team/app:latest not found: manifest unknown: manifest unknown\n"
        )
    );
    // The management alias and push -q.
    assert_eq!(
        ok(&d.run(&["image", "push", "-q", &image]), "push -q"),
        format!("{image}\n")
    );

    // Interactive login in a terminal: the password is not echoed.
    ok(&d.run(&["logout", &host]), "logout");
    let (rc, shown) = pty_run(
        &d,
        &["login", &host],
        &[("Username: ", "alice\r"), ("Password: ", "secret\r")],
    );
    assert_eq!(rc, 0, "{shown}");
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(!shown.contains("secret"), "password echoed: {shown}");
    assert!(stored(&d).contains("YWxpY2U6c2VjcmV0"));
}

fn stored(d: &Daemon) -> String {
    std::fs::read_to_string(d.config.join("config.json")).unwrap_or_default()
}

#[test]
fn attach_and_start_ai() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-dit", "--name", "sh1", "bb:1", "sh"]),
        "run -dit",
    );
    let (rc, shown) = pty_run(
        &d,
        &["attach", "sh1"],
        &[("", "echo $((6*7))\r"), ("42", "\x10\x11")],
    );
    assert_eq!(rc, 0, "{shown}");
    assert!(shown.contains("42") && !shown.contains("HUNG"), "{shown}");
    let st = ok(
        &d.run(&["inspect", "-f", "{{.State.Running}}", "sh1"]),
        "inspect",
    );
    assert_eq!(st, "true\n", "detaching leaves the container running");
    let (rc, shown) = pty_run(
        &d,
        &["attach", "--detach-keys", "ctrl-x", "sh1"],
        &[("", "echo ok$((1+1))\r"), ("ok2", "\x18")],
    );
    assert_eq!(rc, 0, "{shown}");

    // start -ai: the container's terminal, then its exit code.
    ok(
        &d.run(&["create", "-it", "--name", "sh2", "bb:1", "sh"]),
        "create -it",
    );
    let (rc, shown) = pty_run(&d, &["start", "-ai", "sh2"], &[("# ", "exit 5\r")]);
    assert_eq!(rc, 5, "{shown}");

    // --no-stdin on a container without a terminal: its output, then its exit code.
    ok(
        &d.run(&[
            "run",
            "-d",
            "--name",
            "late",
            "bb:1",
            "sh",
            "-c",
            "sleep 1; echo late; exit 4",
        ]),
        "run",
    );
    let o = d.run(&["attach", "--no-stdin", "late"]);
    assert_eq!(
        (code(&o), out(&o)),
        (4, "late\n".to_string()),
        "{}",
        err(&o)
    );
    let o = d.run(&["attach", "late"]);
    assert_eq!(
        (code(&o), err(&o).as_str()),
        (
            1,
            "You cannot attach to a stopped container, start it first\n"
        )
    );

    // --sig-proxy (default): a SIGTERM to the CLI reaches the container.
    ok(
        &d.run(&[
            "run",
            "-d",
            "--name",
            "sp",
            "bb:1",
            "sh",
            "-c",
            "trap 'echo got; exit 9' TERM; while true; do sleep 0.1; done",
        ]),
        "run trap",
    );
    let child = d
        .cmd(&["attach", "sp"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Time for the CLI to attach and install its signal handlers.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!((code(&o), out(&o)), (9, "got\n".to_string()), "{}", err(&o));
}

#[test]
fn stats_and_events_stream() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-d", "--name", "st", "bb:1", "sleep", "1000"]),
        "run",
    );
    let spawn = |args: &[&str]| {
        d.cmd(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stats = spawn(&["stats", "--format", "{{.Name}} {{.PIDs}}"]);
    let events = spawn(&[
        "events",
        "--filter",
        "event=start",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(
        &d.run(&["run", "-d", "--name", "later", "bb:1", "true"]),
        "run later",
    );
    std::thread::sleep(std::time::Duration::from_millis(4500));
    for c in [&stats, &events] {
        std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
    }
    let s = out(&stats.wait_with_output().unwrap());
    assert!(
        s.lines().filter(|l| *l == "st 1").count() >= 2,
        "redrawn: {s}"
    );
    let e = out(&events.wait_with_output().unwrap());
    assert_eq!(e, "start later\n");
}

#[test]
fn errors_match_docker() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["run", "-d", "--name", "up", "bb:1", "sleep", "1000"]),
        "run",
    );
    ok(&d.run(&["run", "--name", "down", "bb:1", "true"]), "run");
    for args in [
        "pause down",
        "unpause up",
        "rename nosuch x",
        "rename up down",
        "commit nosuch",
        "history nosuch",
        "diff nosuch",
        "top down",
        "top nosuch",
        "port nosuch",
        "update --memory 10m nosuch",
        "save nosuch",
        "volume inspect nosuch",
        "exec down true",
        "wait nosuch",
        "restart nosuch",
        "image inspect nosuch",
        "inspect --type image nosuch",
        "events --since bogus",
        "cp down:/nope -",
        "logout 1.2.3.4:1",
    ] {
        let a: Vec<&str> = args.split(' ').collect();
        let (b, dk) = (d.run(&a), d.docker(&a));
        assert_eq!((code(&b), err(&b)), (code(&dk), err(&dk)), "{args}");
        assert_eq!(out(&b), out(&dk), "{args}");
    }
}

#[test]
fn pull_draws_progress_on_a_terminal_and_plain_lines_elsewhere() {
    if !have("docker-registry") {
        eprintln!("skipping: docker-registry missing");
        return;
    }
    let Some(src) = setup() else { return };
    let reg = Registry::start(&src.dir, None);
    let image = format!("{}/p/bb:1", reg.host());
    ok(&src.run(&["tag", "bb:1", &image]), "tag");
    ok(&src.run(&["push", &image]), "push");

    // A fresh daemon pulls through a terminal: docker's cursor movements and per-layer lines.
    let Some(a) = Daemon::start() else { return };
    let (rc, shown) = pty_run(&a, &["pull", &image], &[]);
    assert_eq!(rc, 0, "{shown}");
    assert!(shown.contains("1: Pulling from p/bb"), "{shown}");
    assert!(
        shown.contains("\x1b[1A") && shown.contains("\x1b[2K"),
        "{shown:?}"
    );
    assert!(shown.contains("Pull complete"), "{shown}");
    assert!(shown.trim_end().ends_with(&image), "{shown}");

    // Another fresh daemon pulls into a pipe: plain lines, no bars, no escapes.
    let Some(b) = Daemon::start() else { return };
    let p = ok(&b.run(&["pull", &image]), "pull");
    assert!(!p.contains('\x1b') && !p.contains("=>"), "{p:?}");
    assert!(p.starts_with("1: Pulling from p/bb\n"), "{p}");
    assert!(
        p.contains(": Pull complete\n") && p.contains("\nDigest: sha256:"),
        "{p}"
    );
    assert!(
        p.ends_with(&format!(
            "Status: Downloaded newer image for {image}\n{image}\n"
        )),
        "{p}"
    );
}

#[test]
fn archives_are_never_written_to_a_terminal() {
    let Some(d) = setup() else { return };
    ok(
        &d.run(&["create", "--name", "ex", "bb:1", "true"]),
        "create",
    );
    for (args, msg) in [
        (
            vec!["save", "bb:1"],
            "cowardly refusing to save to a terminal. Use the -o flag or redirect",
        ),
        (
            vec!["export", "ex"],
            "cowardly refusing to save to a terminal. Use the -o flag or redirect",
        ),
        (
            vec!["load"],
            "requested load from stdin, but stdin is empty",
        ),
    ] {
        let (rc, shown) = pty_run(&d, &args, &[]);
        assert_eq!(rc, 1, "{args:?}: {shown}");
        assert_eq!(shown.trim_end(), msg, "{args:?}");
    }
}
