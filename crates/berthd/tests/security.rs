//! Security tests: escapes tried from inside containers (through the real docker CLI against a
//! private berthd) that must fail. SECURITY.md lists each one with the class it guards against.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestDaemon, can_run};

const PROBE_C: &str = include_str!("security_probe.c");

/// Builds the probe (static, so it runs in the busybox image) into `dir`.
fn build_probe(dir: &Path) -> PathBuf {
    let src = dir.join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let out = dir.join("probe");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "building the probe failed");
    out
}

/// Imports `sec:local`: busybox, the probe at /bin/probe and a symlink `/escape` pointing at
/// an absolute host path (`outside`), for the mount-target test.
fn import_image(d: &TestDaemon, outside: &Path) {
    let tar = common::busybox_tar(&d.dir);
    let extra = d.dir.join("extra");
    std::fs::create_dir_all(extra.join("bin")).unwrap();
    std::fs::copy(build_probe(&d.dir), extra.join("bin/probe")).unwrap();
    std::os::unix::fs::symlink(outside, extra.join("escape")).unwrap();
    let st = Command::new("tar")
        .arg("-rf")
        .arg(&tar)
        .arg("-C")
        .arg(&extra)
        .args(["./bin/probe", "./escape"])
        .status()
        .unwrap();
    assert!(st.success());
    let o = d.docker(&["import", tar.to_str().unwrap(), "sec:local"]);
    assert_eq!(o.code, 0, "import: {}", o.stderr);
}

/// The built-in runtime's OCI CLI (`berth-runc`), built next to berthd when missing.
fn berth_runc() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_berthd")).with_file_name("berth-runc");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "berth-runtime", "--bin", "berth-runc"])
            .status()
            .expect("cargo build berth-runc");
        assert!(st.success());
    }
    p
}

/// A daemon whose config knows `runc` as an extra runtime (unused by the built-in runs).
fn daemon(runtime: Option<&str>) -> TestDaemon {
    let mut d = TestDaemon::start();
    if runtime.is_none() {
        return d;
    }
    let conf = serde_json::json!({"runtimes": {
        "runc": {"path": "/usr/sbin/runc", "runtimeArgs": []},
        "berth-runc": {"path": berth_runc()},
    }});
    std::fs::write(d.dir.join("daemon.json"), conf.to_string()).unwrap();
    d.kill9();
    d.spawn();
    d
}

/// `docker run --rm [--runtime R] <args> sec:local <cmd>`: (exit code, stdout + stderr).
fn run(d: &TestDaemon, runtime: Option<&str>, opts: &[&str], cmd: &[&str]) -> (i32, String) {
    let mut a = vec!["run", "--rm", "--network", "none"];
    if let Some(r) = runtime {
        a.extend(["--runtime", r]);
    }
    a.extend_from_slice(opts);
    a.push("sec:local");
    a.extend_from_slice(cmd);
    let o = d.docker(&a);
    (o.code, format!("{}{}", o.stdout, o.stderr))
}

fn escapes(runtime: Option<&str>) {
    let d = daemon(runtime);
    let outside = d.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    import_image(&d, &outside);
    let sh = |opts: &[&str], script: &str| run(&d, runtime, opts, &["sh", "-c", script]);

    // Kernel memory: /proc/kcore is masked (or absent), nothing readable.
    let (c, o) = sh(&[], "head -c 16 /proc/kcore 2>/dev/null | wc -c");
    assert_eq!((c, o.trim()), (0, "0"), "/proc/kcore readable");

    // mount(2): needs CAP_SYS_ADMIN, and the default profile refuses it.
    let (c, o) = sh(&[], "mount -t tmpfs none /tmp");
    assert_ne!(c, 0, "mount worked: {o}");

    // New user namespace (privilege gain inside one): EPERM by the profile's clone/unshare rules.
    let (c, o) = run(&d, runtime, &[], &["probe", "unshare-user"]);
    assert_eq!((c, o.trim()), (1, "EPERM"), "unshare(CLONE_NEWUSER)");
    let (c, o) = sh(&[], "unshare -U true");
    assert_ne!(c, 0, "unshare -U worked: {o}");

    // keyctl: the kernel keyring is not namespaced.
    let (c, o) = run(&d, runtime, &[], &["probe", "keyctl"]);
    assert_eq!((c, o.trim()), (1, "EPERM"), "keyctl");

    // ptrace: Docker's profile allows it on kernels >= 4.8 (a container may trace its own
    // children, as under Docker) but nothing outside the container can even be named.
    let (c, o) = run(&d, runtime, &[], &["probe", "ptrace-child"]);
    assert_eq!(
        (c, o.trim()),
        (0, "OK"),
        "ptrace of an own child (Docker parity)"
    );
    let host_pid = std::process::id().to_string();
    let (c, o) = run(&d, runtime, &[], &["probe", "ptrace", &host_pid]);
    assert_eq!((c, o.trim()), (1, "ESRCH"), "ptrace of a host pid");
    // A custom profile (file content sent by the CLI) without ptrace: EPERM.
    let prof = d.dir.join("noptrace.json");
    std::fs::write(
        &prof,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", prof.display());
    let (c, o) = run(
        &d,
        runtime,
        &["--security-opt", &opt],
        &["probe", "ptrace-child"],
    );
    assert_eq!((c, o.trim()), (1, "EPERM"), "custom profile");

    // Network links: NET_ADMIN is not a default capability.
    let (c, o) = sh(&[], "ip link set lo mtu 1400");
    assert_ne!(c, 0, "mtu change without NET_ADMIN: {o}");
    let (c, o) = sh(
        &["--cap-add", "NET_ADMIN"],
        "ip link set lo mtu 1400 && cat /sys/class/net/lo/mtu",
    );
    assert_eq!((c, o.trim()), (0, "1400"), "with NET_ADMIN");

    // Seccomp is on by default, off with seccomp=unconfined.
    let (_, o) = sh(&[], "grep ^Seccomp: /proc/self/status");
    assert!(o.contains('2'), "no filter by default: {o}");
    let (_, o) = sh(
        &["--security-opt", "seccomp=unconfined"],
        "grep ^Seccomp: /proc/self/status",
    );
    assert!(o.contains('0'), "filter although unconfined: {o}");
    let (_, o) = sh(
        &["--security-opt", "no-new-privileges"],
        "grep ^NoNewPrivs: /proc/self/status",
    );
    assert!(o.contains('1'), "no-new-privileges: {o}");

    // A symlinked mount target resolves inside the rootfs, never to the host path it names.
    let vol = d.dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("marker"), "m").unwrap();
    let bind = format!("{}:/escape", vol.display());
    let (c, o) = sh(&["-v", &bind], "ls /escape/ && touch /escape/written");
    assert_eq!(c, 0, "symlinked target: {o}");
    assert!(o.contains("marker"), "{o}");
    assert!(vol.join("written").exists(), "the bind landed elsewhere");
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "the host path the symlink names was touched"
    );

    // Leaked descriptors: only 0, 1, 2 reach the container's process (+ the probe's none).
    let (c, o) = run(&d, runtime, &[], &["probe", "fds"]);
    assert_eq!(c, 0, "{o}");
    let fds: Vec<&str> = o.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(fds, ["0", "1", "2"], "leaked fds: {o}");
    let (_, o) = sh(&[], "ls /proc/self/fd");
    let n: Vec<&str> = o.split_whitespace().collect();
    assert!(n.len() <= 4 && n[..3] == ["0", "1", "2"], "{o}");
    // The working directory is inside the rootfs (CVE-2024-21626: no leaked dir fds).
    let (c, o) = run(&d, runtime, &["-w", "/tmp"], &["probe", "cwd"]);
    assert_eq!((c, o.trim()), (0, "/tmp"));

    // Host processes are invisible.
    let (_, o) = sh(&[], "ls /proc | grep -c '^[0-9]'");
    let n: u32 = o.trim().parse().unwrap_or(99);
    assert!(n <= 3, "{n} processes visible");
    let (c, _) = sh(&[], &format!("test -e /proc/{host_pid}"));
    assert_ne!(c, 0, "host pid visible");

    // Devices: no access to a disk without --device, even when the node is made.
    let (c, o) = sh(&[], "mknod /tmp/sda b 8 0 && head -c1 /tmp/sda");
    assert_ne!(c, 0, "block device readable: {o}");

    // CVE-2019-5736: while `exec`s enter the container, no host binary is reachable through
    // /proc/<pid>/exe.
    let name = format!("exe-{}", runtime.unwrap_or("builtin"));
    let mut a = vec!["run", "-d", "--name", &name, "--network", "none"];
    if let Some(r) = runtime {
        a.extend(["--runtime", r]);
    }
    a.extend(["sec:local", "probe", "exewatch", "4"]);
    d.ok(&a);
    for _ in 0..15 {
        let _ = d.docker(&["exec", &name, "true"]);
    }
    let _ = d.docker(&["wait", &name]);
    let logs = d.ok(&["logs", &name]);
    assert!(logs.contains("DONE"), "{logs}");
    assert!(!logs.contains("WROTE"), "host binary writable: {logs}");
    assert!(!logs.contains("LEAK"), "host binary reachable: {logs}");
    d.ok(&["rm", "-f", &name]);
}

#[test]
fn escapes_fail_builtin_runtime() {
    if !can_run() {
        return;
    }
    escapes(None);
}

#[test]
fn bad_security_options_are_400() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    for (hc, want) in [
        (r#"{"SecurityOpt":["bogus=1"]}"#, "invalid --security-opt 2"),
        (r#"{"SecurityOpt":["seccomp={not json"]}"#, "seccomp"),
        (r#"{"Sysctls":{"kernel.panic":"1"}}"#, "kernel.panic"),
        (
            r#"{"NetworkMode":"host","Sysctls":{"net.ipv4.ip_forward":"1"}}"#,
            "host network",
        ),
        (
            r#"{"Ulimits":[{"Name":"nope","Soft":1,"Hard":1}]}"#,
            "ulimit",
        ),
        (
            r#"{"Devices":[{"PathOnHost":"/nonexistent","PathInContainer":"/dev/x","CgroupPermissions":"rwm"}]}"#,
            "device",
        ),
        (
            r#"{"DeviceCgroupRules":["x 1:2 rwm"]}"#,
            "device cgroup rule",
        ),
        (r#"{"CgroupnsMode":"sideways"}"#, "cgroup namespace mode"),
        (
            r#"{"Runtime":"nope"}"#,
            "unknown or invalid runtime name: nope",
        ),
    ] {
        let body = format!(r#"{{"Image":"busybox:local","Cmd":["true"],"HostConfig":{hc}}}"#);
        let r = d
            .raw("POST", "/v1.44/containers/create", Some(&body))
            .unwrap();
        assert_eq!(r.status, 400, "{hc}: {r:?}");
        assert!(r.body.contains(want), "{hc}: {}", r.body);
    }
    // Nothing was stored.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn privileged_and_namespace_modes() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let sh = |opts: &[&str], script: &str| {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(opts);
        a.extend(["busybox:local", "sh", "-c", script]);
        let o = d.docker(&a);
        (o.code, format!("{}{}", o.stdout, o.stderr))
    };
    // --privileged: all capabilities, no seccomp, host devices, unmasked paths.
    let (c, o) = sh(
        &["--privileged"],
        "grep -E '^(CapEff|Seccomp):' /proc/self/status; mount -t tmpfs none /tmp && echo mounted; test -e /dev/loop-control && echo devs",
    );
    assert_eq!(c, 0, "{o}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert!(o.contains(&format!("CapEff:\t{bnd}")), "{o}");
    assert!(o.contains("Seccomp:\t0"), "{o}");
    assert!(o.contains("mounted") && o.contains("devs"), "{o}");
    // --cap-drop ALL: nothing effective, chown refused.
    let (c, o) = sh(
        &["--cap-drop", "ALL"],
        "grep ^CapEff: /proc/self/status; chown nobody /tmp",
    );
    assert_ne!(c, 0, "{o}");
    assert!(o.contains("CapEff:\t0000000000000000"), "{o}");
    // Docker's 14 default capabilities.
    let (_, o) = sh(&[], "grep ^CapBnd: /proc/self/status");
    assert!(o.contains("00000000a80425fb"), "{o}");
    // --pid host sees the host's processes; --uts host has the host's name.
    let me = std::process::id();
    let (c, _) = sh(&["--pid", "host"], &format!("test -e /proc/{me}"));
    assert_eq!(c, 0, "--pid host");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let (_, o) = sh(&["--uts", "host"], "hostname");
    assert_eq!(o.trim(), host);
    // --ipc host shares the host's IPC namespace.
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let (_, o) = sh(&["--ipc", "host"], "readlink /proc/self/ns/ipc");
    assert_eq!(o.trim(), host_ipc.to_str().unwrap());
    let (_, o) = sh(&[], "readlink /proc/self/ns/ipc");
    assert_ne!(o.trim(), host_ipc.to_str().unwrap());
    // --pid container:<x> / --ipc container:<x> join another container's namespaces.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "donor",
        "--network",
        "none",
        "--ipc",
        "shareable",
        "busybox:local",
        "sleep",
        "60",
    ]);
    let (c, o) = sh(
        &["--pid", "container:donor", "--ipc", "container:donor"],
        "ps -o comm | grep -c sleep",
    );
    assert_eq!((c, o.trim()), (0, "1"), "{o}");
    d.ok(&["rm", "-f", "donor"]);
    // --cgroupns host shows the container's full cgroup path; private hides it.
    let (_, o) = sh(&["--cgroupns", "host"], "grep memory /proc/self/cgroup");
    assert!(o.contains("/berth/"), "{o}");
    let (_, o) = sh(&["--cgroupns", "private"], "grep memory /proc/self/cgroup");
    assert!(!o.contains("/berth/"), "{o}");
    // Only namespaced sysctls, set inside the container.
    let (c, o) = sh(
        &["--sysctl", "kernel.shmmax=123456"],
        "cat /proc/sys/kernel/shmmax",
    );
    assert_eq!((c, o.trim()), (0, "123456"));
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax")
            .unwrap()
            .trim(),
        "123456"
    );
}

/// The same escapes under Debian's runc (`--runtime runc`, from the daemon's `runtimes`),
/// with the spec berthd built: Berth's default must be at least as strict.
#[test]
fn escapes_fail_runc_runtime() {
    if !can_run() {
        return;
    }
    if !Path::new("/usr/sbin/runc").exists() {
        eprintln!("skipping: no /usr/sbin/runc (apt-get install runc)");
        return;
    }
    escapes(Some("runc"));
}

/// The same escapes with the built-in runtime behind its OCI CLI (`berth-runc`), driven by the
/// shim exactly as runc is: the same bundle runs under both.
#[test]
fn escapes_fail_berth_runc_cli() {
    if !can_run() {
        return;
    }
    escapes(Some("berth-runc"));
}
