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

/// One device's count of one kind of block I/O, as the Engine API's `BlkioStatEntry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlkioEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total` (v1) or `read`, `write` (v2).
    pub op: String,
    /// Bytes or operations.
    pub value: u64,
}

/// Resource usage of a container's cgroup (what `docker stats` shows). Absent values are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Bytes transferred per device and direction (`io_service_bytes_recursive`).
    #[serde(default)]
    pub io_service_bytes: Vec<BlkioEntry>,
    /// I/O operations per device and direction (`io_serviced_recursive`).
    #[serde(default)]
    pub io_serviced: Vec<BlkioEntry>,
}

/// Entries of a v1 blkio file (`8:0 Read 4096` lines; the closing `Total N` has no device).
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Bytes and operations from v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0
/// dios=0` lines), with dockerd's `read`/`write` ops.
pub(crate) fn parse_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let kv: Vec<(&str, u64)> = f
            .filter_map(|x| x.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| *v);
        let entry = |op: &str, value| BlkioEntry {
            major,
            minor,
            op: op.into(),
            value,
        };
        bytes.push(entry("read", get("rbytes")));
        bytes.push(entry("write", get("wbytes")));
        ios.push(entry("read", get("rios")));
        ios.push(entry("write", get("wios")));
    }
    (bytes, ios)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: &[BlkioEntry]) -> String {
        let e: Vec<String> = v
            .iter()
            .map(|e| format!("{}:{} {} {}", e.major, e.minor, e.op, e.value))
            .collect();
        e.join(", ")
    }

    #[test]
    fn parses_blkio_v1() {
        let text = "254:0 Read 4096\n254:0 Write 5242880\n254:0 Sync 5242880\n\
                    254:0 Async 4096\n254:0 Discard 0\n254:0 Total 5246976\nTotal 5246976\n";
        assert_eq!(
            flat(&parse_blkio_v1(text)),
            "254:0 Read 4096, 254:0 Write 5242880, 254:0 Sync 5242880, 254:0 Async 4096, \
             254:0 Discard 0, 254:0 Total 5246976"
        );
        assert!(parse_blkio_v1("Total 0\n").is_empty());
    }

    #[test]
    fn parses_io_stat() {
        let text = "8:0 rbytes=1048576 wbytes=5242880 rios=16 wios=40 dbytes=0 dios=0\n\
                    253:0 rbytes=0 wbytes=4096 rios=0 wios=1 dbytes=0 dios=0\n";
        let (bytes, ios) = parse_io_stat(text);
        assert_eq!(
            flat(&bytes),
            "8:0 read 1048576, 8:0 write 5242880, 253:0 read 0, 253:0 write 4096"
        );
        assert_eq!(
            flat(&ios),
            "8:0 read 16, 8:0 write 40, 253:0 read 0, 253:0 write 1"
        );
        assert_eq!(parse_io_stat(""), (vec![], vec![]));
    }
}
