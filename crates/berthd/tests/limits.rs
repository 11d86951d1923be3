//! Resource limits enforced for real (not only written to a file), through the docker CLI
//! against a private berthd: OOM kill, CPU quota measured from the cgroup's usage, a fork bomb
//! stopped by the pids limit, device access, ulimits, shm size, read-only rootfs.
//!
//! This host has cgroup v1 controllers (hybrid); the v2 file writes are covered by
//! berth-runtime's unit tests.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestDaemon, can_run};

fn full_id(d: &TestDaemon, name: &str) -> String {
    d.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
}

#[test]
fn oom_kill_is_137_with_oomkilled_and_event() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let since = d.ok(&["version", "-f", "{{.Server.Version}}"]);
    assert!(!since.is_empty());
    let start = chrono_now(&d);
    // tail buffers a line that never ends: memory grows until the limit.
    let o = d.docker(&[
        "run",
        "--name",
        "oom",
        "--network",
        "none",
        "-m",
        "32m",
        "--memory-swap",
        "32m",
        "busybox:local",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(o.code, 137, "{}", o.stderr);
    // --until is whole seconds: let the second of the event pass.
    std::thread::sleep(Duration::from_millis(1100));
    let st = d.ok(&[
        "inspect",
        "-f",
        "{{.State.OOMKilled}} {{.State.ExitCode}}",
        "oom",
    ]);
    assert_eq!(st.trim(), "true 137");
    let ev = d.ok(&[
        "events",
        "--since",
        &start,
        "--until",
        &chrono_now(&d),
        "--filter",
        "event=oom",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert!(ev.contains("oom oom"), "events: {ev}");
    // The limit and the swap limit were both written.
    let id = full_id(&d, "oom");
    d.ok(&["rm", "oom"]);
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/berth/{id}")).exists(),
        "cgroup left behind"
    );
    // --oom-kill-disable is accepted and written (the kernel then pauses instead of killing).
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-m",
        "32m",
        "--oom-kill-disable",
        "--memory-reservation",
        "16m",
        "busybox:local",
        "true",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// The daemon's idea of "now" as a unix timestamp string, for `events --since/--until`.
fn chrono_now(_d: &TestDaemon) -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

fn read_u64(p: &str) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn half_a_cpu_is_about_half_a_core() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "spin",
        "--network",
        "none",
        "--cpus",
        "0.5",
        "busybox:local",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let id = full_id(&d, "spin");
    let usage = format!("/sys/fs/cgroup/cpuacct/berth/{id}/cpuacct.usage");
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (read_u64(&usage), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (u1, t1) = (read_u64(&usage), Instant::now());
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!("--cpus 0.5 busy loop used {share:.3} of a core");
    // Other tests share these 2 cores, so the loop may get less than its quota, never more;
    // the throttling counter shows the quota is what held it back.
    assert!((0.15..=0.6).contains(&share), "share {share:.3}");
    let stat = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.stat")).unwrap();
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // On a machine too busy to give the loop its whole quota the kernel never needed to throttle it;
    // whenever it did get close to half a core, the quota must have been what stopped it.
    assert!(
        throttled > 0 || share < 0.45,
        "share {share:.3} without throttling: {stat}"
    );
    assert_eq!(
        read_u64(&format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_quota_us")),
        50_000
    );
    d.ok(&["rm", "-f", "spin"]);
    // Shares, explicit quota/period and cpuset land in their files.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "cfg",
        "--network",
        "none",
        "--cpu-shares",
        "512",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--blkio-weight",
        "300",
        "busybox:local",
        "sleep",
        "30",
    ]);
    let id = full_id(&d, "cfg");
    let f = |c: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{c}/berth/{id}/{file}"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(f("cpu", "cpu.shares"), "512");
    assert_eq!(f("cpu", "cpu.cfs_period_us"), "50000");
    assert_eq!(f("cpu", "cpu.cfs_quota_us"), "25000");
    assert_eq!(f("cpuset", "cpuset.cpus"), "0");
    assert_eq!(f("cpuset", "cpuset.mems"), "0");
    let w = f("blkio", "blkio.weight");
    // Without the CFQ/BFQ scheduler the kernel has no weight file; then nothing is written.
    assert!(w.is_empty() || w == "300", "blkio.weight {w}");
    d.ok(&["rm", "-f", "cfg"]);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    // 100 sleepers from a subshell (a failed fork ends it, not the counting shell); then
    // count with builtins only, as no fork is possible at the limit.
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--pids-limit",
        "20",
        "busybox:local",
        "sh",
        "-c",
        "(for i in $(seq 1 100); do sleep 30 & done); set -- /proc/[0-9]*; echo $#; kill -9 -1",
    ]);
    let visible: u32 = o
        .stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(999);
    assert!(
        visible <= 20,
        "{visible} processes under a limit of 20: {o:?}"
    );
    assert!(o.stderr.contains("can't fork"), "{o:?}");
}

#[test]
fn devices_ulimits_shm_readonly() {
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
    // Device cgroup: a node made inside is not usable; --device gives exactly that device.
    let (c, o) = sh(&[], "mknod /tmp/l b 7 0 && head -c1 /tmp/l");
    assert_ne!(c, 0, "unlisted device readable: {o}");
    assert!(o.contains("Operation not permitted"), "{o}");
    let (c, o) = sh(
        &["--device", "/dev/null:/dev/mynull:rw"],
        "echo x > /dev/mynull && echo ok",
    );
    assert_eq!((c, o.trim()), (0, "ok"));
    let (c, o) = sh(
        &["--device-cgroup-rule", "b 7:0 rwm"],
        "mknod /tmp/l b 7 0 && head -c1 /tmp/l && echo ok",
    );
    assert_eq!((c, o.trim()), (0, "ok"));
    // Ulimits.
    let (c, o) = sh(&["--ulimit", "nofile=100:200"], "ulimit -n; ulimit -Hn");
    assert_eq!(
        (c, o.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["100", "200"])
    );
    // Shm size.
    let (_, o) = sh(&["--shm-size", "8m"], "df -k /dev/shm | tail -1");
    assert!(o.contains("8192"), "{o}");
    // Read-only rootfs, writable tmpfs.
    let (c, o) = sh(
        &["--read-only", "--tmpfs", "/run"],
        "touch /run/ok && ! touch /nope 2>/dev/null && echo ok",
    );
    assert_eq!((c, o.trim()), (0, "ok"));
    // Supplementary groups.
    let (_, o) = sh(&["--group-add", "1234", "--group-add", "nogroup"], "id -G");
    assert_eq!(o.trim(), "0 1234 65534");
    // --cgroup-parent: the container's cgroup lives under it, and goes away with it.
    let parent = format!("/bt-{}", std::process::id());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "cp",
        "--network",
        "none",
        "--cgroup-parent",
        &parent,
        "busybox:local",
        "sleep",
        "30",
    ]);
    let id = full_id(&d, "cp");
    let dir = format!("/sys/fs/cgroup/memory{parent}/{id}");
    assert!(Path::new(&dir).exists(), "{dir}");
    d.ok(&["rm", "-f", "cp"]);
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
    for c in [
        "memory", "cpu", "cpuacct", "pids", "devices", "freezer", "blkio", "cpuset",
    ] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{c}{parent}"));
    }
}
