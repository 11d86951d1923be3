//! Mount helpers: option parsing for spec mounts, and overlay/unmount helpers for the daemon.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::{Result, RuntimeError};

/// Mount options split into flags, propagation changes and filesystem data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation flags to apply after mounting (each its own mount call).
    pub propagation: Vec<MsFlags>,
    /// Remaining options, comma-joined as the filesystem's data.
    pub data: String,
}

/// Parses mount(8)-style options (`ro`, `nosuid`, `rbind`, `mode=755`, ...).
pub fn parse_options(opts: &[String]) -> MountOptions {
    let mut m = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: String::new(),
    };
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let mut f = match o.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if o.starts_with('r') {
                    f |= MsFlags::MS_REC;
                }
                m.propagation.push(f);
                continue;
            }
            other => {
                data.push(other);
                continue;
            }
        };
        m.flags |= set;
        m.flags &= !clear;
    }
    m.data = data.join(",");
    m
}

/// Mounts `source` on `target` as mount(8) would with `-t fstype -o options` (a local volume's
/// `type`/`device`/`o`): `bind`/`rbind` binds, with the other flags applied by a remount.
pub fn mount_fs(source: &str, target: &Path, fstype: &str, options: &str) -> Result<()> {
    let opts: Vec<String> = options
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    let m = parse_options(&opts);
    let what = || {
        format!(
            "mount {source}:{}, flags: {:#x}, data: {}",
            target.display(),
            m.flags.bits(),
            m.data
        )
    };
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    if m.flags.contains(MsFlags::MS_BIND) {
        let rec = m.flags & MsFlags::MS_REC;
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys(what(), e))?;
        let rest = m.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            let r = nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            );
            if let Err(e) = r {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
                return Err(RuntimeError::sys(what(), e));
            }
        }
    } else {
        nix::mount::mount(Some(source), target, Some(fstype), m.flags, data)
            .map_err(|e| RuntimeError::sys(what(), e))?;
    }
    for p in &m.propagation {
        nix::mount::mount(None::<&str>, target, None::<&str>, *p, None::<&str>)
            .map_err(|e| RuntimeError::sys(format!("propagation of {}", target.display()), e))?;
    }
    Ok(())
}

/// The propagation of a spec's `rootfsPropagation` (rprivate when unset or unknown). The init gives
/// it to `/` of the container's mount namespace before mounting anything, and again after
/// pivot_root: a bind asking for slave or shared propagation needs its source to stay a slave or a
/// peer of the host's mount, which a private `/` would cut.
pub fn root_propagation(rootfs_propagation: Option<&str>) -> MsFlags {
    match rootfs_propagation {
        Some("shared") => MsFlags::MS_SHARED,
        Some("rshared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
        Some("slave") => MsFlags::MS_SLAVE,
        Some("rslave") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some("private") => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
    }
}

/// Makes the mount holding `path` private (not recursively), so that what is mounted on or under
/// it does not propagate to the host; needed (and pivot_root requires it) under a shared `/`.
pub fn make_mount_private(path: &Path) -> Result<()> {
    let (mp, _) = source_mount(path)?;
    nix::mount::mount(
        None::<&str>,
        Path::new(&mp),
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("make {mp} private"), e))
}

/// The mount point holding `path` (after symlinks), with that mount's propagation fields of
/// mountinfo (`shared:N`, `master:N`; empty for a private mount).
pub fn source_mount(path: &Path) -> Result<(String, String)> {
    let path = std::fs::canonicalize(path)
        .map_err(|e| RuntimeError::io(format!("resolve {}", path.display()), e))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read mountinfo", e))?;
    mountinfo(&info)
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        // The last of the longest: a mount over another hides it.
        .max_by_key(|m| m.mount_point.len())
        .map(|m| (m.mount_point, m.optional))
        .ok_or_else(|| RuntimeError::InvalidSpec(format!("no mount holds {}", path.display())))
}

/// Mounts an overlay filesystem at `target`; `lowers` are given topmost first.
pub fn mount_overlay(target: &Path, lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "overlay needs a lower dir".into(),
        ));
    }
    let lower: Vec<String> = lowers
        .iter()
        .map(|p| escape_overlay(&p.to_string_lossy()))
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape_overlay(&upper.to_string_lossy()),
        escape_overlay(&work.to_string_lossy())
    );
    // mount(2) takes at most one page of options: many layers need the new mount API.
    if data.len() >= 4000 {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| RuntimeError::InvalidSpec(format!("NUL in {}", p.display())))
        };
        let lowers = lowers.iter().map(|p| c(p)).collect::<Result<Vec<_>>>()?;
        return crate::sys::mount_overlay_fsconfig(&c(target)?, &lowers, &c(upper)?, &c(work)?)
            .map_err(|e| {
                RuntimeError::sys(
                    format!(
                        "mount overlay ({} layers) on {}",
                        lowers.len(),
                        target.display()
                    ),
                    e,
                )
            });
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| RuntimeError::sys(format!("mount overlay on {}", target.display()), e))
}

/// [`mount_overlay`] with each lower dir id-mapped through the user namespace `userns` (a
/// `/proc/<pid>/ns/user` descriptor): the store's root-owned layers show as owned by the
/// namespace's root, and stay shared with unmapped containers. The mapped copies are attached
/// under `staging` (created, emptied and removed again) only while the overlay is mounted.
pub fn mount_overlay_idmapped(
    target: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    userns: impl std::os::fd::AsFd,
    staging: &Path,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| RuntimeError::InvalidSpec(format!("NUL in {}", p.display())))
    };
    std::fs::create_dir_all(staging)
        .map_err(|e| RuntimeError::io(format!("create {}", staging.display()), e))?;
    let mut staged: Vec<PathBuf> = Vec::new();
    let cleanup = |staged: &[PathBuf]| {
        for p in staged {
            let _ = nix::mount::umount2(p, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(p);
        }
        let _ = std::fs::remove_dir(staging);
    };
    let mut result = Ok(());
    for (i, lower) in lowers.iter().enumerate() {
        let dst = staging.join(i.to_string());
        let step = (|| {
            std::fs::create_dir_all(&dst)
                .map_err(|e| RuntimeError::io(format!("create {}", dst.display()), e))?;
            let tree = crate::sys::open_tree_idmapped(&c(lower)?, userns.as_fd()).map_err(|e| {
                RuntimeError::sys(format!("id-mapped mount of {}", lower.display()), e)
            })?;
            crate::sys::move_mount_to(&tree, &c(&dst)?)
                .map_err(|e| RuntimeError::sys(format!("move mount to {}", dst.display()), e))
        })();
        staged.push(dst);
        if let Err(e) = step {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = mount_overlay(target, &staged, upper, work);
    }
    cleanup(&staged);
    result
}

fn escape_overlay(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Lazily unmounts `target` (`MNT_DETACH`).
pub fn unmount(target: &Path) -> Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH)
        .map_err(|e| RuntimeError::sys(format!("unmount {}", target.display()), e))
}

/// Whether `path` is a mount point (per `/proc/self/mountinfo`).
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    let path = std::fs::canonicalize(path)
        .map_err(|e| RuntimeError::io(format!("resolve {}", path.display()), e))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read mountinfo", e))?;
    Ok(mountinfo(&info)
        .iter()
        .any(|m| Path::new(&m.mount_point) == path))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    pub mount_point: String,
    /// Optional fields: propagation (`shared:N`, `master:N`, ...), space-separated.
    pub optional: String,
    pub fstype: String,
    pub super_options: String,
}

pub(crate) fn mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount_point = unescape_octal(left.split(' ').nth(4)?);
            let optional = left.split(' ').skip(6).collect::<Vec<_>>().join(" ");
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let _source = r.next()?;
            let super_options = r.next().unwrap_or("").to_string();
            Some(MountInfo {
                mount_point,
                optional,
                fstype,
                super_options,
            })
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_docker_dev_options() {
        let m = parse_options(&s(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(m.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(m.data, "mode=755,size=65536k");
        let m = parse_options(&s(&["rbind", "ro", "rprivate"]));
        assert_eq!(
            m.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(m.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }

    #[test]
    fn parses_mountinfo() {
        let t = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n\
                 31 25 0:27 / /a\\040b rw - tmpfs tmpfs rw\n";
        let m = mountinfo(t);
        assert_eq!(m[0].mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(m[0].fstype, "cgroup");
        assert_eq!(m[0].super_options, "rw,memory");
        assert_eq!(m[1].mount_point, "/a b");
        assert_eq!(m[0].optional, "shared:10");
        assert_eq!(m[1].optional, "");
    }

    #[test]
    fn root_is_a_mountpoint() {
        assert!(is_mountpoint(Path::new("/")).unwrap());
        assert_eq!(source_mount(Path::new("/")).unwrap().0, "/");
    }

    #[test]
    fn overlay_with_many_layers() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let long = d.path().join("x".repeat(100));
        let mut lowers = Vec::new();
        for i in 0..60 {
            let l = long.join(format!("layer-{i:03}-{}", "y".repeat(40)));
            std::fs::create_dir_all(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(l.join("top"), i.to_string()).unwrap();
            lowers.push(l);
        }
        let (upper, work, target) = (d.path().join("u"), d.path().join("w"), d.path().join("m"));
        for p in [&upper, &work, &target] {
            std::fs::create_dir_all(p).unwrap();
        }
        mount_overlay(&target, &lowers, &upper, &work).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("top")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(target.join("f59")).unwrap(), "59");
        unmount(&target).unwrap();
    }

    #[test]
    fn overlay_mount_and_unmount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| {
            let x = d.path().join(n);
            std::fs::create_dir_all(&x).unwrap();
            x
        };
        let (top, bottom, upper, work, target) =
            (p("top"), p("bottom"), p("upper"), p("work"), p("merged"));
        std::fs::write(top.join("f"), "top").unwrap();
        std::fs::write(bottom.join("f"), "bottom").unwrap();
        std::fs::write(bottom.join("g"), "g").unwrap();
        assert!(!is_mountpoint(&target).unwrap());
        mount_overlay(&target, &[top, bottom], &upper, &work).unwrap();
        assert!(is_mountpoint(&target).unwrap());
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "top");
        assert_eq!(std::fs::read_to_string(target.join("g")).unwrap(), "g");
        std::fs::write(target.join("new"), "x").unwrap();
        unmount(&target).unwrap();
        assert!(!is_mountpoint(&target).unwrap());
        assert!(upper.join("new").exists());
    }
}
