//! Volumes as issue #6 asks, through the docker CLI against a private berthd: named volumes surviving
//! container removal and a daemon restart, `:ro`, `--volumes-from` (own and overridden modes), binds of
//! missing paths (`-v` creates, `--mount` refuses), in-use removal refused, anonymous volumes of
//! `run --rm` removed. Local volumes with mount options (tmpfs, bind, a loop device's ext4)
//! mounted at first use and unmounted after the last, across a daemon restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Out, TestDaemon, can_run, run_with_timeout};

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

/// The berth CLI next to berthd (built when missing), against `d`.
fn berth(d: &TestDaemon, args: &[&str]) -> Out {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_berthd")).with_file_name("berth");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo).args(["build", "-p", "berth"]).status();
        assert!(st.unwrap().success());
    }
    let mut c = Command::new(p);
    c.args(args)
        .env("BERTH_HOST", format!("unix://{}", d.sock.display()));
    run_with_timeout(c, None, Duration::from_secs(60))
}

/// How many mounts sit exactly on `p` (in the test's mount namespace, which berthd shares).
fn mounts_on(p: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.display().to_string();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .count()
}

/// Mounts left under the test's directory.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.display().to_string();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(str::to_string)
        .collect()
}

/// A loop device over an image file, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// An ext4 image attached to a free loop device, or `None` where the machine has no loop devices.
fn ext4_loop(dir: &Path) -> Option<Loop> {
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status();
    if !mkfs.is_ok_and(|s| s.success()) {
        return None;
    }
    let o = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .ok()?;
    let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && dev.starts_with("/dev/loop")).then_some(Loop(dev))
}

#[test]
fn local_volume_mount_options() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    let vroot = d.dir.join("data/volumes");
    let data = |name: &str| vroot.join(name).join("_data");
    // Options checked at create, with dockerd's messages.
    let o = d.docker(&["volume", "create", "--opt", "foo=bar", "bad"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("invalid option: \"foo\""), "{}", o.stderr);
    let o = berth(&d, &["volume", "create", "-o", "type=tmpfs", "bad"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("missing required option: \"device\""),
        "{}",
        o.stderr
    );
    assert!(!d.ok(&["volume", "ls", "-q"]).contains("bad"));

    // tmpfs: mounted at first use, with its options, shared by two containers at once.
    let o = berth(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=64m,uid=1000",
            "tv",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let tv = data("tv");
    assert_eq!(mounts_on(&tv), 0, "mounted before any use");
    d.ok(&[
        "run", "-d", "--name", "va", "-v", "tv:/data", BB, "sleep", "300",
    ]);
    assert_eq!(mounts_on(&tv), 1);
    let m = d.ok(&["exec", "va", "grep", " /data ", "/proc/mounts"]);
    assert!(m.starts_with("tmpfs /data tmpfs "), "{m}");
    assert!(m.contains("size=65536k") && m.contains("uid=1000"), "{m}");
    let df = d.ok(&["exec", "va", "df", "-k", "/data"]);
    assert!(df.contains(" 65536 "), "{df}");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "tv:/data",
        BB,
        "sh",
        "-c",
        "echo shared > /data/f",
    ]);
    assert_eq!(d.ok(&["exec", "va", "cat", "/data/f"]), "shared\n");
    assert_eq!(
        mounts_on(&tv),
        1,
        "the second user's exit leaves it mounted"
    );
    let o = d.docker(&["volume", "rm", "tv"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("volume is in use"), "{}", o.stderr);

    // Daemon restart while in use: the mount is kept (the data too), not mounted twice.
    d.kill9();
    d.spawn();
    assert_eq!(mounts_on(&tv), 1);
    assert_eq!(
        d.ok(&["run", "--rm", "-v", "tv:/data", BB, "cat", "/data/f"]),
        "shared\n"
    );
    assert_eq!(mounts_on(&tv), 1);
    d.ok(&["rm", "-f", "va"]);
    assert_eq!(mounts_on(&tv), 0, "unmounted after the last user");
    // A user that dies while the daemon is down: unmounted once its exit is recorded.
    d.ok(&[
        "run", "-d", "--name", "vb", "-v", "tv:/data", BB, "sleep", "300",
    ]);
    let pid = d.ok(&["inspect", "-f", "{{.State.Pid}}", "vb"]);
    d.kill9();
    let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    d.spawn();
    d.ok(&["wait", "vb"]);
    d.ok(&["rm", "vb"]);
    assert_eq!(mounts_on(&tv), 0);
    d.ok(&["volume", "rm", "tv"]);

    // type=none,o=bind: writes land in the host directory, which volume rm leaves alone.
    let host = d.dir.join("bind-src");
    std::fs::create_dir_all(&host).unwrap();
    let bind_volume = |name: &str, src: &Path| {
        let dev = format!("device={}", src.display());
        let opts = ["--opt", "type=none", "--opt", "o=bind", "--opt", &dev, name];
        d.ok(&[&["volume", "create"][..], &opts].concat());
    };
    bind_volume("bv", &host);
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "bv:/x",
        BB,
        "sh",
        "-c",
        "echo via-volume > /x/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("f")).unwrap(),
        "via-volume\n"
    );
    assert_eq!(mounts_on(&data("bv")), 0);
    d.ok(&["volume", "rm", "bv"]);
    assert!(host.join("f").exists(), "volume rm went through the bind");
    // A plain volume left mounted (as by a crash): rm unmounts before deleting.
    d.ok(&["volume", "create", "lv"]);
    let st = Command::new("mount")
        .args(["--bind"])
        .arg(&host)
        .arg(data("lv"))
        .status()
        .unwrap();
    assert!(st.success());
    d.ok(&["volume", "rm", "lv"]);
    assert!(host.join("f").exists(), "volume rm went through the mount");
    assert_eq!(mounts_on(&data("lv")), 0);
    // Unmounted when the mount fails at start, with dockerd's message.
    bind_volume("nv", Path::new("/nonexistent-berth"));
    let o = d.docker(&["run", "--rm", "-v", "nv:/x", BB, "true"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("error while mounting volume")
            && o.stderr.contains("failed to mount local volume"),
        "{}",
        o.stderr
    );
    d.ok(&["volume", "rm", "nv"]);

    // A block device: an ext4 image on a loop device made here.
    match ext4_loop(&d.dir) {
        None => eprintln!("ext4 on a loop device skipped: no loop device or mkfs.ext4"),
        Some(lo) => {
            let dev = format!("device={}", lo.0);
            d.ok(&[
                "volume",
                "create",
                "--opt",
                "type=ext4",
                "--opt",
                &dev,
                "ev",
            ]);
            let m = d.ok(&[
                "run",
                "--rm",
                "-v",
                "ev:/e",
                BB,
                "sh",
                "-c",
                "echo on-ext4 > /e/f && grep ' /e ' /proc/mounts",
            ]);
            assert!(m.starts_with(&format!("{} /e ext4 ", lo.0)), "{m}");
            assert_eq!(mounts_on(&data("ev")), 0);
            assert_eq!(
                d.ok(&["run", "--rm", "-v", "ev:/e", BB, "cat", "/e/f"]),
                "on-ext4\n"
            );
            assert_eq!(mounts_on(&data("ev")), 0);
            d.ok(&["volume", "rm", "ev"]);
        }
    }
    d.terminate();
    assert_eq!(mounts_under(&d.dir), Vec::<String>::new(), "leaked mounts");
}

/// Runs `mount` with `args`, asserting success.
fn mount(args: &[&str], path: &Path) {
    let st = Command::new("mount").args(args).arg(path).status().unwrap();
    assert!(st.success(), "mount {args:?} {}", path.display());
}

#[test]
fn bind_propagation() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    let src = d.dir.join("shared-src");
    let private = d.dir.join("private-src");
    for p in [&src, &private] {
        std::fs::create_dir_all(p).unwrap();
        mount(&["--bind", &p.display().to_string()], p);
    }
    mount(&["--make-shared"], &src);
    mount(&["--make-private"], &private);
    // Refused as dockerd refuses them.
    let o = d.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/p:rshared", private.display()),
        BB,
        "true",
    ]);
    assert_eq!(o.code, 125);
    let want = format!(
        "path {0} is mounted on {0} but it is not a shared mount",
        private.display()
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    let o = d.docker(&[
        "run",
        "--rm",
        "--mount",
        &format!(
            "type=bind,src={},dst=/p,bind-propagation=rslave",
            private.display()
        ),
        BB,
        "true",
    ]);
    assert!(
        o.stderr.contains("but it is not a shared or slave mount"),
        "{}",
        o.stderr
    );
    // rslave (-v), rshared (--mount) and rprivate binds of the shared mount.
    let s = src.display().to_string();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "slave",
        "-v",
        &format!("{s}:/s:rslave"),
        BB,
        "sleep",
        "300",
    ]);
    let shared = format!("type=bind,src={s},dst=/s,bind-propagation=rshared");
    d.ok(&[
        "run",
        "-d",
        "--privileged",
        "--name",
        "shared",
        "--mount",
        &shared,
        BB,
        "sleep",
        "300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "private",
        "-v",
        &format!("{s}:/s:rprivate"),
        BB,
        "sleep",
        "300",
    ]);
    assert_eq!(
        d.ok(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Propagation}}{{end}}",
            "slave"
        ]),
        "rslave\n"
    );
    // A tmpfs mounted on the host after the containers started.
    let sub = src.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    mount(&["-t", "tmpfs", "tmpfs"], &sub);
    std::fs::write(sub.join("x"), "from host\n").unwrap();
    for c in ["slave", "shared"] {
        assert_eq!(d.ok(&["exec", c, "cat", "/s/sub/x"]), "from host\n", "{c}");
    }
    let o = d.docker(&["exec", "private", "cat", "/s/sub/x"]);
    assert_ne!(o.code, 0, "rprivate saw the host's mount: {}", o.stdout);
    // rshared goes both ways: a mount made in the container shows on the host.
    d.ok(&[
        "exec",
        "shared",
        "sh",
        "-c",
        "mkdir -p /s/back && mount -t tmpfs none /s/back && echo c > /s/back/y",
    ]);
    assert_eq!(std::fs::read_to_string(src.join("back/y")).unwrap(), "c\n");
    // Nothing else of the containers' mounts reached the host.
    let proc_leaks: Vec<String> = mounts_under(&d.dir.join("data"))
        .into_iter()
        .filter(|l| {
            !l.split(' ')
                .nth(4)
                .is_some_and(|m| m.ends_with("/rootfs") || m.ends_with("/merged"))
        })
        .collect();
    assert_eq!(proc_leaks, Vec::<String>::new());
    d.ok(&["rm", "-f", "slave", "shared", "private"]);
    for p in [src.join("back"), sub, src.clone(), private] {
        berth_runtime::unmount(&p).unwrap();
    }
    d.terminate();
    assert_eq!(mounts_under(&d.dir), Vec::<String>::new(), "leaked mounts");
}
