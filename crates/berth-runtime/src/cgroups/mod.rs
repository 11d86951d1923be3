//! Cgroups v1 (including hybrid hosts) and v2 behind one trait, chosen by detection.

pub mod devices_bpf;
mod v1;
mod v2;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

pub use v1::CgroupV1;
pub use v2::CgroupV2;

use crate::{Result, RuntimeError};

/// Where cgroup hierarchies are mounted on a normal host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Resource usage of a container's cgroup (what `docker stats` shows). Absent values are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, in bytes (page cache included).
    pub memory_usage: u64,
    /// Memory limit, in bytes (0: none).
    pub memory_limit: u64,
    /// Inactive file cache, in bytes (Docker subtracts it from the usage it shows).
    pub memory_inactive_file: u64,
    /// Number of tasks.
    pub pids_current: u64,
    /// Task limit (0: none).
    pub pids_limit: u64,
}

pub(crate) fn num(dir: &Path, file: &str) -> u64 {
    read(dir, file)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A container's cgroup in every hierarchy the runtime uses.
pub trait CgroupManager: Debug + Send + Sync {
    /// Creates the container's cgroup directories.
    fn create(&self) -> Result<()>;
    /// Writes the resource limits that are set in `resources`.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Moves process `pid` into the container's cgroups.
    fn add_pid(&self, pid: i32) -> Result<()>;
    /// The processes in the container's cgroup.
    fn pids(&self) -> Result<Vec<i32>>;
    /// How many times the kernel's OOM killer killed a process in the cgroup.
    fn oom_kill_count(&self) -> u64;
    /// Freezes (`true`) or thaws (`false`) every process in the cgroup.
    fn freeze(&self, frozen: bool) -> Result<()>;
    /// Removes the container's cgroup directories (retrying briefly while busy).
    fn delete(&self) -> Result<()>;
    /// Current resource usage.
    fn stats(&self) -> Stats;
    /// On a pure cgroup v2 host: the container's directory, which a child can be cloned
    /// straight into (`CLONE_INTO_CGROUP`) instead of being moved afterwards.
    fn clone_into_dir(&self) -> Option<&Path> {
        None
    }
}

/// Whether the host runs the cgroup v2 unified hierarchy at `root`.
pub fn is_unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// The manager for `cgroups_path` (e.g. `/berth/<id>`) on this host, detected under `root`.
pub fn detect_at(root: &Path, cgroups_path: &str) -> Box<dyn CgroupManager> {
    if is_unified(root) {
        Box::new(CgroupV2::new(root, cgroups_path))
    } else {
        Box::new(CgroupV1::new(root, cgroups_path))
    }
}

/// The manager for `cgroups_path` on this host (under `/sys/fs/cgroup`).
pub fn detect(cgroups_path: &str) -> Box<dyn CgroupManager> {
    detect_at(Path::new(DEFAULT_ROOT), cgroups_path)
}

/// Removes the cgroups at `cgroups_path` (e.g. `/berth/<id>`) in every hierarchy.
pub fn delete_cgroups(cgroups_path: &str) -> Result<()> {
    detect(cgroups_path).delete()
}

pub(crate) fn relative(cgroups_path: &str) -> PathBuf {
    PathBuf::from(cgroups_path.trim_start_matches('/'))
}

pub(crate) fn write(dir: &Path, file: &str, value: impl AsRef<str>) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value.as_ref()).map_err(|e| {
        RuntimeError::Cgroup(format!(
            "write {:?} to {}: {e}",
            value.as_ref(),
            p.display()
        ))
    })
}

pub(crate) fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

pub(crate) fn read_pids(dir: &Path) -> Result<Vec<i32>> {
    let s = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map_err(|e| RuntimeError::Cgroup(format!("read {}: {e}", dir.display())))?;
    Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Value of `key N` in a flat-keyed file such as `memory.events` or `memory.oom_control`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub(crate) fn rmdir_retry(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(RuntimeError::Cgroup(format!(
                    "remove {}: {e}",
                    dir.display()
                )));
            }
        }
    }
}
