//! cgroup v2 (unified hierarchy).

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{
    CgroupManager, Stats, keyed, num, parse_io_stat, read, read_pids, relative, rmdir_retry, write,
};
use crate::{Result, RuntimeError};

const CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

/// A container's cgroup on a cgroup v2 host.
#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
    rel: PathBuf,
    dir: PathBuf,
}

impl CgroupV2 {
    /// The manager for `cgroups_path` in the unified hierarchy mounted at `root`.
    pub fn new(root: &Path, cgroups_path: &str) -> Self {
        let rel = relative(cgroups_path);
        CgroupV2 {
            root: root.to_path_buf(),
            dir: root.join(&rel),
            rel,
        }
    }

    /// The container's cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// cgroup v1 `cpu.shares` to v2 `cpu.weight` (the conversion runc and crun use).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262144) - 2) * 9999 / 262142
}

impl CgroupManager for CgroupV2 {
    fn create(&self) -> Result<()> {
        // Enable the controllers at every level above the leaf (a leaf with processes may not
        // delegate).
        let mut cur = self.root.clone();
        for c in self.rel.components() {
            let available = read(&cur, "cgroup.controllers").unwrap_or_default();
            let enable: Vec<String> = available
                .split_whitespace()
                .filter(|c| CONTROLLERS.contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                // Best effort: the root may already delegate, or refuse some controllers.
                let _ = write(&cur, "cgroup.subtree_control", enable.join(" "));
            }
            cur = cur.join(c);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(RuntimeError::Cgroup(format!(
                        "mkdir {}: {e}",
                        cur.display()
                    )));
                }
            }
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        let d = &self.dir;
        let max = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(m) = r.memory() {
            if let Some(l) = m.limit() {
                write(d, "memory.max", max(l))?;
                if let Some(s) = m.swap().filter(|_| d.join("memory.swap.max").exists()) {
                    // v1 swap is memory+swap; v2 swap.max is swap alone.
                    let v = if s < 0 || l < 0 {
                        "max".into()
                    } else {
                        (s - l).max(0).to_string()
                    };
                    write(d, "memory.swap.max", v)?;
                }
            }
            if let Some(s) = m.reservation() {
                write(d, "memory.low", max(s))?;
            }
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(d, "pids.max", v)?;
        }
        if let Some(c) = r.cpu() {
            if let Some(s) = c.shares() {
                write(d, "cpu.weight", shares_to_weight(s).to_string())?;
            }
            if c.quota().is_some() || c.period().is_some() {
                let q = c
                    .quota()
                    .filter(|q| *q > 0)
                    .map_or("max".into(), |q| q.to_string());
                let p = c.period().unwrap_or(100_000);
                write(d, "cpu.max", format!("{q} {p}"))?;
            }
            if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
                write(d, "cpuset.cpus", v)?;
            }
            if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
                write(d, "cpuset.mems", v)?;
            }
        }
        if let Some(b) = r.block_io() {
            if let Some(w) = b.weight() {
                // blkio weight 10..1000 → io.weight 1..10000
                let w = 1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990;
                write(d, "io.weight", format!("default {w}"))?;
            }
            // Throttles: one `io.max` line per device, as runc writes them.
            let lists = [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ];
            for (key, list) in lists {
                for t in list.iter().flatten() {
                    let v = format!("{}:{} {key}={}", t.major(), t.minor(), t.rate());
                    write(d, "io.max", v)?;
                }
            }
        }
        for (k, v) in r.unified().iter().flatten() {
            if k.contains('/') || k.contains("..") {
                return Err(RuntimeError::Cgroup(format!("invalid unified key {k}")));
            }
            write(d, k, v)?;
        }
        if let Some(devs) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            use nix::fcntl::{OFlag, open};
            let prog = super::devices_bpf::program(devs);
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let dir = open(d.as_path(), flags, nix::sys::stat::Mode::empty())
                .map_err(|e| RuntimeError::Cgroup(format!("open {}: {e}", d.display())))?;
            crate::sys::attach_device_filter(&prog, &dir).map_err(|e| {
                RuntimeError::Cgroup(format!("attach device filter to {}: {e}", d.display()))
            })?;
        }
        Ok(())
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        write(&self.dir, "cgroup.procs", pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.dir)
    }

    fn oom_kill_count(&self) -> u64 {
        read(&self.dir, "memory.events")
            .and_then(|t| keyed(&t, "oom_kill"))
            .unwrap_or(0)
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        write(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })
    }

    fn stats(&self) -> Stats {
        let d = &self.dir;
        let (io_service_bytes, io_serviced) =
            parse_io_stat(&read(d, "io.stat").unwrap_or_default());
        Stats {
            cpu_usage_ns: read(d, "cpu.stat")
                .and_then(|t| keyed(&t, "usage_usec"))
                .unwrap_or(0)
                * 1000,
            memory_usage: num(d, "memory.current"),
            memory_limit: num(d, "memory.max"),
            memory_inactive_file: read(d, "memory.stat")
                .and_then(|t| keyed(&t, "inactive_file"))
                .unwrap_or(0),
            pids_current: num(d, "pids.current"),
            pids_limit: num(d, "pids.max"),
            io_service_bytes,
            io_serviced,
        }
    }

    fn delete(&self) -> Result<()> {
        rmdir_retry(&self.dir)
    }

    fn clone_into_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_v2_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        )
        .unwrap();
        assert!(super::super::is_unified(root.path()));
        let cg = CgroupV2::new(root.path(), "/berth/xyz");
        cg.create().unwrap();
        std::fs::write(cg.dir().join("memory.swap.max"), "").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +pids"
        );
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 67108864, "swap": 134217728},
            "pids": {"limit": 0},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
        }))
        .unwrap();
        cg.apply(&r).unwrap();
        cg.add_pid(7).unwrap();
        let rd = |f: &str| std::fs::read_to_string(cg.dir().join(f)).unwrap();
        assert_eq!(rd("memory.max"), "67108864");
        assert_eq!(rd("memory.swap.max"), "67108864");
        assert_eq!(rd("pids.max"), "max");
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("cpu.max"), "50000 100000");
        assert_eq!(rd("cgroup.procs"), "7");
        std::fs::write(
            cg.dir().join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kill_count(), 1);
        std::fs::write(
            cg.dir().join("io.stat"),
            "254:0 rbytes=8192 wbytes=5242880 rios=2 wios=40 dbytes=0 dios=0\n",
        )
        .unwrap();
        let st = cg.stats();
        let v = |e: &[super::super::BlkioEntry]| -> Vec<(String, u64)> {
            e.iter().map(|e| (e.op.clone(), e.value)).collect()
        };
        assert_eq!(
            v(&st.io_service_bytes),
            [("read".into(), 8192), ("write".into(), 5242880)]
        );
        assert_eq!(
            v(&st.io_serviced),
            [("read".into(), 2), ("write".into(), 40)]
        );

        // Reservation, cpuset, block I/O weight and throttles.
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"reservation": 33554432},
            "cpu": {"cpus": "0-1", "mems": "0"},
            "blockIO": {"weight": 1000,
                        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        }))
        .unwrap();
        cg.apply(&r).unwrap();
        assert_eq!(rd("memory.low"), "33554432");
        assert_eq!(rd("cpuset.cpus"), "0-1");
        assert_eq!(rd("cpuset.mems"), "0");
        assert_eq!(rd("io.weight"), "default 10000");
        assert_eq!(rd("io.max"), "8:0 wbps=1048576");
    }
}
