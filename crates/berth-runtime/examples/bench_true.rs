//! Measures create + start + exit of `/bin/true` in a busybox rootfs on overlay, with memory
//! and pids limits, as in DESIGN.md's comparison. Run as root:
//! `cargo run --release -p berth-runtime --example bench_true [N] [CGROUP_ROOT]`
//! (CGROUP_ROOT e.g. /sys/fs/cgroup/unified to try cgroup v2's CLONE_INTO_CGROUP on a hybrid host).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_runtime::{ContainerStdio, ExitStatus};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let cgroup_root = std::env::args().nth(2).map(PathBuf::from);
    let base = PathBuf::from(format!("/tmp/berth-bench-{}", std::process::id()));
    let lower = base.join("lower");
    std::fs::create_dir_all(lower.join("bin")).unwrap();
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).expect("needs /bin/busybox");
    std::os::unix::fs::symlink("busybox", lower.join("bin/true")).unwrap();

    let mut times = Vec::new();
    for i in 0..n {
        let dir = base.join(format!("c{i}"));
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for p in [&upper, &work, &merged] {
            std::fs::create_dir_all(p).unwrap();
        }
        let id = format!("bench-{}-{i}", std::process::id());
        let mut spec = berth_runtime::spec::docker_default_spec();
        let v = serde_json::json!({
            "root": {"path": merged},
            "hostname": "bench",
            "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": ["PATH=/bin"]},
        });
        let extra: berth_runtime::oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        spec.set_root(extra.root().clone());
        spec.set_hostname(extra.hostname().clone());
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(vec!["/bin/true".into()]));
        spec.set_process(Some(p));
        let mut l = spec.linux().clone().unwrap();
        l.set_cgroups_path(Some(PathBuf::from(format!("/berth/{id}"))));
        let mut r = l.resources().clone().unwrap();
        r.set_memory(Some(
            serde_json::from_value(serde_json::json!({"limit": 64 << 20})).unwrap(),
        ));
        r.set_pids(Some(
            serde_json::from_value(serde_json::json!({"limit": 64})).unwrap(),
        ));
        if cgroup_root.is_some() {
            // The hybrid host's unified mount holds no memory/pids controller.
            r.set_memory(None);
            r.set_pids(None);
        }
        l.set_resources(Some(r));
        spec.set_linux(Some(l));

        let null = || -> OwnedFd {
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap()
                .into()
        };
        let t0 = Instant::now();
        berth_runtime::mount_overlay(&merged, std::slice::from_ref(&lower), &upper, &work).unwrap();
        let created = berth_runtime::create_in(
            &id,
            &spec,
            ContainerStdio::Fds {
                stdin: null(),
                stdout: null(),
                stderr: null(),
            },
            cgroup_root.as_deref(),
        )
        .unwrap();
        let pid = created.pid();
        let started = created.start().unwrap();
        let ws = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let t1 = Instant::now();
        assert_eq!(ExitStatus::from_wait(ws).unwrap().1.code, 0);
        started.cgroup().delete().unwrap();
        berth_runtime::unmount(&merged).unwrap();
        let t2 = Instant::now();
        times.push((t1 - t0, t2 - t1));
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&base);
    let mut run: Vec<Duration> = times.iter().map(|t| t.0).collect();
    let mut cleanup: Vec<Duration> = times.iter().map(|t| t.1).collect();
    run.sort();
    cleanup.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    println!(
        "{n} runs: overlay+create+start+exit median {:?} (p10 {:?}, p90 {:?}); cgroup delete+unmount median {:?}",
        pct(&run, 50),
        pct(&run, 10),
        pct(&run, 90),
        pct(&cleanup, 50)
    );
}
