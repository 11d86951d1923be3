//! User namespaces (`userns-remap`): a container's root is an unprivileged uid on the host.
//! Through the real docker CLI against a private berthd with `userns-remap: default` (the
//! `berthremap` user and its /etc/subuid and /etc/subgid ranges are created once and kept:
//! the setup is idempotent and a later daemon reuses them).

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::{TestDaemon, can_run};

/// The start of `berthremap`'s range in `file`.
fn range_start(file: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && f[0] == "berthremap").then(|| f[1].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no berthremap range in {file}:\n{text}"))
}

#[test]
fn remapped_root_is_unprivileged_on_host() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    let runc = std::path::Path::new("/usr/sbin/runc").exists();
    let conf = if runc {
        r#"{"userns-remap":"default","runtimes":{"runc":{"path":"/usr/sbin/runc"}}}"#
    } else {
        r#"{"userns-remap":"default"}"#
    };
    std::fs::write(d.dir.join("daemon.json"), conf).unwrap();
    d.kill9();
    d.spawn();
    // (TestDaemon's drop kills the containers it started, even after a failed assertion.)
    let subuid_before = std::fs::read_to_string("/etc/subuid").unwrap();
    let start = range_start("/etc/subuid");
    let gstart = range_start("/etc/subgid");
    assert_eq!(start % 65536, 0, "range not 65536-aligned");
    d.import_busybox();

    // Inside: root, mapped to the range.
    let out = d.ok(&[
        "run",
        "--rm",
        "busybox:local",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map /proc/self/gid_map",
    ]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        vec![
            "0",
            "0",
            &start.to_string(),
            "65536",
            "0",
            &gstart.to_string(),
            "65536"
        ],
        "{out}"
    );

    // The container's own files are its root's; sysfs shows its own network namespace.
    let out = d.ok(&[
        "run", "--rm", "busybox:local", "sh", "-c",
        "echo 10.0.0.9 extra >> /etc/hosts && stat -c %u /etc/hosts /etc/hostname /etc/resolv.conf; ls /sys/class/net",
    ]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, vec!["0", "0", "0", "eth0", "lo"], "{out}");
    assert!(
        d.ok(&["info", "--format", "{{.SecurityOptions}}"])
            .contains("name=userns")
    );

    // Files of the image are root's inside (id-mapped lowers), and can be changed (copy-up).
    let out = d.ok(&[
        "run", "--rm", "busybox:local", "sh", "-c",
        "stat -c '%u:%g' /bin/busybox /etc; echo x > /etc/new && stat -c '%u' /etc/new && chown 0:0 /bin/busybox && echo chowned",
    ]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, vec!["0:0", "0:0", "0", "chowned"], "{out}");
    // The store's layer stays owned by the host's root (shared with unmapped containers).
    let layers = d.dir.join("data/image/layers");
    for e in std::fs::read_dir(&layers).unwrap().flatten() {
        let bb = e.path().join("diff/bin/busybox");
        if bb.exists() {
            assert_eq!(std::fs::metadata(&bb).unwrap().uid(), 0, "{}", bb.display());
        }
    }

    // A file created by the container's root on a bind mount belongs to the range start.
    let bind = d.dir.join("bind");
    std::fs::create_dir_all(&bind).unwrap();
    std::os::unix::fs::chown(&bind, Some(start), Some(gstart)).unwrap();
    let v = format!("{}:/b", bind.display());
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &v,
        "busybox:local",
        "touch",
        "/b/made-inside",
    ]);
    let md = std::fs::metadata(bind.join("made-inside")).unwrap();
    assert_eq!((md.uid(), md.gid()), (start, gstart));

    // A named volume's data is given to the mapped root: writable from inside.
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "unsvol:/v",
        "busybox:local",
        "sh",
        "-c",
        "echo hi > /v/f && stat -c %u /v/f",
    ]);
    assert_eq!(out.trim(), "0");
    let vol = d.dir.join("data/volumes/unsvol/_data/f");
    assert_eq!(std::fs::metadata(&vol).unwrap().uid(), start);

    // Seen from the host, the container's process runs as the range start, and so does an exec.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "uns-top",
        "busybox:local",
        "sleep",
        "300",
    ]);
    let pid = d.ok(&["inspect", "-f", "{{.State.Pid}}", "uns-top"]);
    let o = Command::new("ps")
        .args(["-o", "uid=", "-p", pid.trim()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), start.to_string());
    let out = d.ok(&[
        "exec",
        "uns-top",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, vec!["0", "0", &start.to_string(), "65536"], "{out}");

    // The same spec under Debian's runc (driven by the shim): remapped too.
    if runc {
        d.ok(&[
            "run",
            "-d",
            "--name",
            "uns-runc",
            "--runtime",
            "runc",
            "busybox:local",
            "sleep",
            "300",
        ]);
        let pid = d.ok(&["inspect", "-f", "{{.State.Pid}}", "uns-runc"]);
        let o = Command::new("ps")
            .args(["-o", "uid=", "-p", pid.trim()])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), start.to_string());
        let out = d.ok(&[
            "exec",
            "uns-runc",
            "sh",
            "-c",
            "id -u; stat -c %u /bin/busybox; cat /proc/self/uid_map",
        ]);
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(
            words,
            vec!["0", "0", "0", &start.to_string(), "65536"],
            "{out}"
        );
        d.ok(&["rm", "-f", "uns-runc"]);
    }

    // --userns host: the host's root, as without remapping.
    let out = d.ok(&[
        "run",
        "--rm",
        "--userns",
        "host",
        "busybox:local",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, vec!["0", "0", "0", "4294967295"], "{out}");

    // dockerd's refusals of host modes inside a remapped user namespace.
    for (opt, msg) in [
        (
            vec!["--privileged"],
            "privileged mode is incompatible with user namespaces",
        ),
        (
            vec!["--net", "host"],
            "cannot share the host's network namespace",
        ),
        (vec!["--pid", "host"], "cannot share the host PID namespace"),
    ] {
        let mut a = vec!["create"];
        a.extend(opt.iter().copied());
        a.extend(["busybox:local", "true"]);
        let o = d.docker(&a);
        assert_ne!(o.code, 0, "{opt:?} accepted");
        assert!(o.stderr.contains(msg), "{opt:?}: {}", o.stderr);
        let mut a = vec!["run", "--rm", "--userns", "host"];
        a.extend(opt.iter().copied());
        a.extend(["busybox:local", "true"]);
        d.ok(&a);
    }

    d.ok(&["rm", "-f", "uns-top"]);
    // A commit of a remapped container has the container's ids, not the host's.
    d.ok(&[
        "run",
        "--name",
        "uns-commit",
        "busybox:local",
        "sh",
        "-c",
        "echo c > /made; chown 5:6 /made",
    ]);
    d.ok(&["commit", "uns-commit", "uns:committed"]);
    d.ok(&["rm", "uns-commit"]);
    let out = d.ok(&[
        "run",
        "--rm",
        "--userns",
        "host",
        "uns:committed",
        "stat",
        "-c",
        "%u:%g",
        "/made",
        "/bin/busybox",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["5:6", "0:0"],
        "{out}"
    );

    // A restarted daemon reuses the ranges: /etc/subuid is not touched again.
    d.terminate();
    d.spawn();
    assert_eq!(
        std::fs::read_to_string("/etc/subuid").unwrap(),
        subuid_before
    );
}
