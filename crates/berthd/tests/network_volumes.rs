//! Volumes as issue #6 asks, through the docker CLI against a private berthd: named volumes surviving
//! container removal and a daemon restart, `:ro`, `--volumes-from` (own and overridden modes), binds of
//! missing paths (`-v` creates, `--mount` refuses), in-use removal refused, anonymous volumes of
//! `run --rm` removed.

mod common;

use common::{TestDaemon, can_run};

const BB: &str = "busybox:local";

#[test]
fn volumes_persist_share_and_refuse() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "vd:/data",
        BB,
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    d.kill9();
    d.spawn();
    assert_eq!(
        d.ok(&["run", "--rm", "-v", "vd:/data", BB, "cat", "/data/f"]),
        "kept\n"
    );
    let o = d.docker(&["run", "--rm", "-v", "vd:/data:ro", BB, "touch", "/data/g"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("Read-only file system"), "{o:?}");
    // --volumes-from: the other container's volumes and binds, with their modes or the one given.
    let host = d.dir.join("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("h"), "host\n").unwrap();
    let bind = format!("{}:/hostdir:ro", host.display());
    d.ok(&[
        "run", "-d", "--name", "holder", "-v", "vd:/data", "-v", &bind, BB, "sleep", "300",
    ]);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--volumes-from",
            "holder",
            BB,
            "sh",
            "-c",
            "cat /data/f /hostdir/h; touch /data/ok"
        ]),
        "kept\nhost\n"
    );
    let o = d.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "holder",
        BB,
        "touch",
        "/hostdir/x",
    ]);
    assert_ne!(o.code, 0, "the bind stays read-only");
    let o = d.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "holder:ro",
        BB,
        "touch",
        "/data/x",
    ]);
    assert_ne!(o.code, 0, ":ro overrides");
    // In use: refused unless forced... by dockerd's message.
    let o = d.docker(&["volume", "rm", "vd"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("volume is in use"), "{}", o.stderr);
    d.ok(&["rm", "-f", "holder"]);
    // Missing bind sources.
    let missing = d.dir.join("made-by-v");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/m", missing.display()),
        BB,
        "true",
    ]);
    assert!(missing.is_dir());
    let o = d.docker(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={}/nope,dst=/m", d.dir.display()),
        BB,
        "true",
    ]);
    assert_eq!(o.code, 125);
    assert!(
        o.stderr.contains("bind source path does not exist"),
        "{}",
        o.stderr
    );
    // run --rm removes its anonymous volumes, named ones stay.
    let before = d.ok(&["volume", "ls", "-q"]);
    d.ok(&["run", "--rm", "-v", "/anon", BB, "true"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]), before);
    assert!(before.contains("vd"));
    d.ok(&["volume", "rm", "vd"]);
}
