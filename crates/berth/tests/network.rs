//! `berth network ...` and run's network flags against a private berthd, with the docker CLI on the
//! same daemon as the reference for outputs, messages and exit codes.

mod common;

use common::{Daemon, code, err, out};

fn ok(o: &std::process::Output, what: &str) -> String {
    assert_eq!(code(o), 0, "{what}: {}{}", out(o), err(o));
    out(o)
}

#[test]
fn network_commands_match_docker() {
    let Some(d) = Daemon::start() else { return };
    d.busybox("bb:1").unwrap();
    let id = ok(
        &d.run(&["network", "create", "--label", "k=v", "cn1"]),
        "create",
    );
    assert_eq!(id.trim().len(), 64);
    for args in [
        vec!["network", "ls"],
        vec!["network", "ls", "--no-trunc"],
        vec!["network", "ls", "-q"],
        vec![
            "network",
            "ls",
            "--format",
            "{{.Name}}\t{{.Driver}}\t{{.Labels}}",
        ],
        vec!["network", "ls", "-f", "label=k=v"],
        vec!["network", "inspect", "cn1"],
        vec![
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Internal}}",
            "cn1",
            "bridge",
        ],
    ] {
        let (b, k) = (d.run(&args), d.docker(&args));
        assert_eq!(out(&b), out(&k), "{args:?}");
        assert_eq!(code(&b), code(&k), "{args:?}");
    }
    // Errors: same message, same exit code.
    for args in [
        vec!["network", "create", "cn1"],
        vec!["network", "rm", "bridge"],
        vec!["network", "inspect", "nosuch"],
        vec!["network", "rm", "nosuch"],
        vec!["network", "connect", "cn1", "nosuch"],
    ] {
        let (b, k) = (d.run(&args), d.docker(&args));
        assert_eq!(code(&b), code(&k), "{args:?}: {} / {}", err(&b), err(&k));
        let first = |s: String| s.lines().next().unwrap_or("").replace("docker", "berth");
        assert_eq!(first(err(&b)), first(err(&k)), "{args:?}");
    }
    // run flags, connect/disconnect, port.
    ok(
        &d.run(&[
            "run",
            "-d",
            "--name",
            "c1",
            "--network",
            "cn1",
            "--network-alias",
            "al",
            "-p",
            "127.0.0.1::80",
            "bb:1",
            "sleep",
            "300",
        ]),
        "run",
    );
    let (b, k) = (d.run(&["port", "c1"]), d.docker(&["port", "c1"]));
    assert_eq!(out(&b), out(&k));
    assert!(out(&b).starts_with("80/tcp -> 127.0.0.1:"), "{}", out(&b));
    ok(&d.run(&["network", "create", "cn2"]), "create cn2");
    ok(
        &d.run(&["network", "connect", "--alias", "two", "cn2", "c1"]),
        "connect",
    );
    let nets = ok(
        &d.run(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            "c1",
        ]),
        "inspect",
    );
    assert_eq!(nets.trim(), "cn1 cn2");
    // The alias resolves on cn2 (nc then fails to connect, not to resolve).
    let o = ok(
        &d.run(&[
            "run",
            "--rm",
            "--network",
            "cn2",
            "bb:1",
            "sh",
            "-c",
            "nc -w 1 two 9 </dev/null 2>&1; true",
        ]),
        "resolve",
    );
    assert!(!o.contains("bad address"), "{o}");
    let o = ok(
        &d.run(&[
            "run",
            "--rm",
            "--network",
            "cn2",
            "bb:1",
            "sh",
            "-c",
            "nc -w 1 nosuchname 9 </dev/null 2>&1; true",
        ]),
        "resolve",
    );
    assert!(o.contains("bad address"), "{o}");
    ok(
        &d.run(&["network", "disconnect", "cn2", "c1"]),
        "disconnect",
    );
    let o = d.run(&["network", "rm", "cn1"]);
    assert_eq!(code(&o), 1);
    assert!(err(&o).contains("has active endpoints"), "{}", err(&o));
    // prune: docker's output, only unused networks.
    let o = ok(&d.run(&["network", "prune", "-f"]), "prune");
    assert_eq!(o, "Deleted Networks:\ncn2\n\n");
    ok(&d.run(&["rm", "-f", "c1"]), "rm");
    assert_eq!(ok(&d.run(&["network", "rm", "cn1"]), "rm cn1"), "cn1\n");
}
