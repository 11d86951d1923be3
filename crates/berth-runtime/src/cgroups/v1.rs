//! cgroup v1 (one hierarchy per controller; also joins `name=systemd` and a hybrid host's
//! `unified` cgroup2 mount).

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{
    CgroupManager, Stats, keyed, num, parse_blkio_v1, read, read_pids, relative, rmdir_retry, write,
};
use crate::{Result, RuntimeError};

/// The hierarchies (directory names under the root) that containers join.
pub const HIERARCHIES: [&str; 10] = [
    "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd",
    "unified",
];

#[derive(Debug, Clone)]
struct Hierarchy {
    names: Vec<&'static str>,
    /// The container's directory in this hierarchy.
    dir: PathBuf,
    /// The hierarchy's mount point.
    mount: PathBuf,
}

/// A container's cgroups on a cgroup v1 (or hybrid) host.
#[derive(Debug, Clone)]
pub struct CgroupV1 {
    rel: PathBuf,
    hierarchies: Vec<Hierarchy>,
}

impl CgroupV1 {
    /// The manager for `cgroups_path` with hierarchies mounted at `root/<controller>`.
    pub fn new(root: &Path, cgroups_path: &str) -> Self {
        let rel = relative(cgroups_path);
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for name in HIERARCHIES {
            let p = root.join(name);
            if !p.is_dir() {
                continue;
            }
            let mount = std::fs::canonicalize(&p).unwrap_or(p);
            if let Some(h) = hierarchies.iter_mut().find(|h| h.mount == mount) {
                h.names.push(name);
                continue;
            }
            hierarchies.push(Hierarchy {
                names: vec![name],
                dir: mount.join(&rel),
                mount,
            });
        }
        CgroupV1 { rel, hierarchies }
    }

    fn dir(&self, name: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.names.contains(&name))
            .map(|h| h.dir.as_path())
    }

    fn need(&self, name: &str) -> Result<&Path> {
        self.dir(name)
            .ok_or_else(|| RuntimeError::Cgroup(format!("controller {name} is not mounted")))
    }

    /// Creates the cpuset levels, copying `cpuset.cpus`/`cpuset.mems` from the parent when
    /// empty (a v1 cpuset without them refuses tasks).
    fn create_cpuset(&self, h: &Hierarchy) -> Result<()> {
        let mut parent = h.mount.clone();
        for c in self.rel.components() {
            let cur = parent.join(c);
            mkdir(&cur)?;
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if read(&cur, f).is_none_or(|v| v.trim().is_empty()) {
                    if let Some(v) = read(&parent, f) {
                        write(&cur, f, v.trim())?;
                    }
                }
            }
            parent = cur;
        }
        Ok(())
    }
}

fn mkdir(p: &Path) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RuntimeError::Cgroup(format!("mkdir {}: {e}", p.display()))),
    }
}

impl CgroupManager for CgroupV1 {
    fn create(&self) -> Result<()> {
        for h in &self.hierarchies {
            if h.names.contains(&"cpuset") {
                self.create_cpuset(h)?;
            } else {
                std::fs::create_dir_all(&h.dir)
                    .map_err(|e| RuntimeError::Cgroup(format!("mkdir {}: {e}", h.dir.display())))?;
            }
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            let d = self.need("memory")?;
            if let Some(l) = m.limit() {
                write(d, "memory.limit_in_bytes", l.to_string())?;
            }
            // Without swap accounting the file is absent: ignored, as dockerd does (with a warning).
            if let Some(s) = m
                .swap()
                .filter(|_| d.join("memory.memsw.limit_in_bytes").exists())
            {
                write(d, "memory.memsw.limit_in_bytes", s.to_string())?;
            }
            if let Some(s) = m.reservation() {
                write(d, "memory.soft_limit_in_bytes", s.to_string())?;
            }
            if let Some(s) = m.swappiness().filter(|s| *s <= 100) {
                write(d, "memory.swappiness", s.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(d, "memory.oom_control", "1")?;
            }
        }
        if let Some(p) = r.pids() {
            let d = self.need("pids")?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_string()
            };
            write(d, "pids.max", v)?;
        }
        if let Some(c) = r.cpu() {
            if c.shares().is_some() || c.period().is_some() || c.quota().is_some() {
                let d = self.need("cpu")?;
                if let Some(s) = c.shares() {
                    write(d, "cpu.shares", s.to_string())?;
                }
                if let Some(p) = c.period() {
                    write(d, "cpu.cfs_period_us", p.to_string())?;
                }
                if let Some(q) = c.quota() {
                    write(d, "cpu.cfs_quota_us", q.to_string())?;
                }
            }
            if c.cpus().is_some() || c.mems().is_some() {
                let d = self.need("cpuset")?;
                if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
                    write(d, "cpuset.cpus", v)?;
                }
                if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
                    write(d, "cpuset.mems", v)?;
                }
            }
        }
        if let Some(devs) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            let d = self.need("devices")?;
            for rule in devs {
                let mut rule = rule.clone();
                if rule.access().as_deref().unwrap_or("").is_empty() {
                    rule.set_access(Some("rwm".into()));
                }
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(d, file, rule.to_string())?;
            }
        }
        if let Some(b) = r.block_io() {
            let d = || self.need("blkio");
            if let Some(w) = b.weight() {
                // Only with a proportional scheduler (CFQ, or BFQ's own file); without one the
                // weight is discarded, as dockerd does.
                let dir = d()?;
                if let Some(f) = ["blkio.weight", "blkio.bfq.weight"]
                    .into_iter()
                    .find(|f| dir.join(f).exists())
                {
                    write(dir, f, w.to_string())?;
                }
            }
            if let Some(w) = b.leaf_weight() {
                write(d()?, "blkio.leaf_weight", w.to_string())?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                    write(d()?, "blkio.weight_device", v)?;
                }
            }
            let throttles = [
                (
                    "blkio.throttle.read_bps_device",
                    b.throttle_read_bps_device(),
                ),
                (
                    "blkio.throttle.write_bps_device",
                    b.throttle_write_bps_device(),
                ),
                (
                    "blkio.throttle.read_iops_device",
                    b.throttle_read_iops_device(),
                ),
                (
                    "blkio.throttle.write_iops_device",
                    b.throttle_write_iops_device(),
                ),
            ];
            for (file, list) in throttles {
                for t in list.iter().flatten() {
                    let v = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                    write(d()?, file, v)?;
                }
            }
        }
        Ok(())
    }

    fn add_pid(&self, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        for h in &self.hierarchies {
            write(&h.dir, "cgroup.procs", &pid)?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let d = self
            .dir("pids")
            .or_else(|| self.dir("memory"))
            .or_else(|| self.hierarchies.first().map(|h| h.dir.as_path()))
            .ok_or_else(|| RuntimeError::Cgroup("no cgroup hierarchy".into()))?;
        read_pids(d)
    }

    fn oom_kill_count(&self) -> u64 {
        self.dir("memory")
            .and_then(|d| read(d, "memory.oom_control"))
            .and_then(|t| keyed(&t, "oom_kill"))
            .unwrap_or(0)
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let d = self.need("freezer")?;
        write(d, "freezer.state", if frozen { "FROZEN" } else { "THAWED" })
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        if let Some(d) = self.dir("cpuacct") {
            s.cpu_usage_ns = num(d, "cpuacct.usage");
        }
        if let Some(d) = self.dir("memory") {
            s.memory_usage = num(d, "memory.usage_in_bytes");
            let limit = num(d, "memory.limit_in_bytes");
            // "No limit" reads as a huge page-aligned number.
            s.memory_limit = if limit >= 1 << 62 { 0 } else { limit };
            s.memory_inactive_file = read(d, "memory.stat")
                .and_then(|t| keyed(&t, "total_inactive_file"))
                .unwrap_or(0);
        }
        if let Some(d) = self.dir("pids") {
            s.pids_current = num(d, "pids.current");
            s.pids_limit = num(d, "pids.max");
        }
        if let Some(d) = self.dir("blkio") {
            // containerd's order: CFQ's files where the scheduler keeps them, else the
            // throttle layer's, which every kernel with blkio has.
            let first = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| {
                        read(d, n)
                            .map(|t| parse_blkio_v1(&t))
                            .filter(|e| !e.is_empty())
                    })
                    .unwrap_or_default()
            };
            s.io_service_bytes = first(&[
                "blkio.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ]);
            s.io_serviced = first(&[
                "blkio.io_serviced_recursive",
                "blkio.throttle.io_serviced_recursive",
                "blkio.throttle.io_serviced",
            ]);
        }
        s
    }

    fn delete(&self) -> Result<()> {
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = rmdir_retry(&h.dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxResources;

    fn fake_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for h in HIERARCHIES {
            if h == "cpuacct" {
                continue;
            }
            std::fs::create_dir(d.path().join(h)).unwrap();
        }
        // cpuacct co-mounted with cpu, as on many distributions.
        std::os::unix::fs::symlink("cpu", d.path().join("cpuacct")).unwrap();
        std::fs::write(d.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(d.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        d
    }

    #[test]
    fn writes_v1_files() {
        let root = fake_root();
        let cg = CgroupV1::new(root.path(), "/berth/abc");
        assert_eq!(cg.hierarchies.len(), 9);
        cg.create().unwrap();
        let leaf = |h: &str| root.path().join(h).join("berth/abc");
        std::fs::write(leaf("memory").join("memory.memsw.limit_in_bytes"), "").unwrap();
        // The weight file only exists with a proportional I/O scheduler.
        std::fs::write(leaf("blkio").join("blkio.weight"), "").unwrap();
        assert_eq!(
            std::fs::read_to_string(leaf("cpuset").join("cpuset.cpus")).unwrap(),
            "0-1"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("cpuset/berth/cpuset.mems")).unwrap(),
            "0"
        );
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 67108864, "swap": 134217728},
            "pids": {"limit": 100},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
            "blockIO": {"weight": 300},
        }))
        .unwrap();
        cg.apply(&r).unwrap();
        cg.add_pid(4242).unwrap();
        let rd = |h: &str, f: &str| std::fs::read_to_string(leaf(h).join(f)).unwrap();
        assert_eq!(rd("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(rd("memory", "memory.memsw.limit_in_bytes"), "134217728");
        assert_eq!(rd("pids", "pids.max"), "100");
        assert_eq!(rd("cpu", "cpu.shares"), "512");
        assert_eq!(rd("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(rd("cpu", "cpu.cfs_period_us"), "100000");
        // The fake files are plain files, so the last write wins: the allow rule.
        assert_eq!(rd("devices", "devices.deny"), "a *:* rwm");
        assert_eq!(rd("devices", "devices.allow"), "c 1:3 rwm");
        assert_eq!(rd("blkio", "blkio.weight"), "300");
        for h in [
            "memory", "pids", "cpu", "cpuset", "devices", "freezer", "blkio", "systemd", "unified",
        ] {
            assert_eq!(rd(h, "cgroup.procs"), "4242", "{h}");
        }
        assert_eq!(cg.pids().unwrap(), vec![4242]);
        std::fs::write(
            leaf("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kill_count(), 2);
        std::fs::write(leaf("cpuacct").join("cpuacct.usage"), "12345\n").unwrap();
        std::fs::write(leaf("memory").join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(
            leaf("memory").join("memory.stat"),
            "cache 0\ntotal_inactive_file 1024\n",
        )
        .unwrap();
        std::fs::write(leaf("pids").join("pids.current"), "3\n").unwrap();
        let st = cg.stats();
        assert_eq!(st.cpu_usage_ns, 12345);
        assert_eq!(st.memory_usage, 4096);
        assert_eq!(st.memory_limit, 67108864);
        assert_eq!(st.memory_inactive_file, 1024);
        assert_eq!((st.pids_current, st.pids_limit), (3, 100));
        assert!(st.io_service_bytes.is_empty());
        // Block I/O from the throttle layer when CFQ's files are absent.
        std::fs::write(
            leaf("blkio").join("blkio.throttle.io_service_bytes_recursive"),
            "254:0 Read 0\n254:0 Write 5242880\n254:0 Total 5242880\nTotal 5242880\n",
        )
        .unwrap();
        std::fs::write(
            leaf("blkio").join("blkio.throttle.io_serviced"),
            "254:0 Read 0\n254:0 Write 40\n254:0 Total 40\nTotal 40\n",
        )
        .unwrap();
        let st = cg.stats();
        let w = |v: &[super::super::BlkioEntry]| {
            v.iter()
                .find(|e| e.op == "Write")
                .map(|e| (e.major, e.minor, e.value))
        };
        assert_eq!(w(&st.io_service_bytes), Some((254, 0, 5242880)));
        assert_eq!(w(&st.io_serviced), Some((254, 0, 40)));
        assert_eq!(st.io_service_bytes.len(), 3);
    }
}
