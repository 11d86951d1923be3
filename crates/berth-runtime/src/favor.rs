//! The kernel's `favordynmods` cgroup option: cheap task migrations, hence fast container starts.
//!
//! Moving a task between cgroups (`cgroup.procs`) takes the kernel's global threadgroup rwsem for
//! writing; by default that waits for an RCU grace period (5–15 ms measured on a v1 host), once
//! per container start. With `favordynmods` the semaphore stays in its slow-reader mode and a
//! migration costs ~0.2 ms, at a small price on fork and exit. The flag lives on the cgroup2 root
//! but the semaphore is global, so it also speeds up v1 hierarchies (hybrid and legacy hosts).
//! It is set by mounting a private cgroup2 instance with the root's current options plus
//! `favordynmods` (a mount in the initial cgroup namespace re-applies the root's flags), which is
//! then detached again: the host's own mounts are left untouched.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::mount::mountinfo;
use crate::{Result, RuntimeError};

/// Flags of the cgroup2 root that a mount re-applies; every one present must be passed again.
const ROOT_FLAGS: &[&str] = &[
    "nsdelegate",
    "memory_localevents",
    "memory_recursiveprot",
    "memory_hugetlb_accounting",
    "pids_localevents",
];

/// The option string for a mount that keeps the root's flags and adds `favordynmods`, or `None`
/// when the root already has it. `current` is the cgroup2 mount's super options (if mounted).
pub(crate) fn favor_options(current: Option<&str>) -> Option<String> {
    let cur: Vec<&str> = current.unwrap_or("").split(',').collect();
    if cur.contains(&"favordynmods") {
        return None;
    }
    let mut opts: Vec<&str> = ROOT_FLAGS
        .iter()
        .copied()
        .filter(|f| cur.contains(f))
        .collect();
    opts.push("favordynmods");
    Some(opts.join(","))
}

/// Turns `favordynmods` on for the host (see the module docs), using `staging` (a directory
/// that is created and removed) as the temporary mount point. Returns whether it changed
/// anything. Must run in the initial cgroup namespace to have an effect.
pub fn favor_dynmods(staging: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read mountinfo", e))?;
    let current = mountinfo(&info)
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.super_options);
    let Some(opts) = favor_options(current.as_deref()) else {
        return Ok(false);
    };
    std::fs::create_dir_all(staging)
        .map_err(|e| RuntimeError::io(format!("create {}", staging.display()), e))?;
    let r = mount(
        Some("cgroup2"),
        staging,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    );
    if r.is_ok() {
        let _ = umount2(staging, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(staging);
    r.map_err(|e| RuntimeError::sys("mount cgroup2 with favordynmods", e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_root_flags() {
        assert_eq!(
            favor_options(Some("rw,nsdelegate,memory_recursiveprot")).as_deref(),
            Some("nsdelegate,memory_recursiveprot,favordynmods")
        );
        assert_eq!(favor_options(Some("rw")).as_deref(), Some("favordynmods"));
        assert_eq!(favor_options(None).as_deref(), Some("favordynmods"));
        assert_eq!(favor_options(Some("rw,favordynmods,nsdelegate")), None);
    }
}
