//! User namespaces: the daemon's `userns-remap` (dockerd's name), subordinate id ranges of
//! `/etc/subuid` and `/etc/subgid`, and what a remapped container gets (a user namespace in its
//! spec, id-mapped image layers, an upper dir and volumes owned by the mapped root).
//!
//! `default` uses the system user `berthremap` (created when missing, like dockerd's
//! `dockremap`) with the first free 65536-aligned range of size 65536 appended to both files
//! when it has none; `user[:group]` uses that user's (and group's) existing first ranges.
//! Container uid/gid 0..65536 map to `start..start+65536`; `--userns host` opts out.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The system user `userns-remap: default` uses.
pub const DEFAULT_USER: &str = "berthremap";
/// The size of the range a container gets (uid and gid 0..SIZE inside).
pub const SIZE: u32 = 65536;
/// Ranges allocated for [`DEFAULT_USER`] start at or after this id (login.defs' SUB_UID_MIN).
const MIN_START: u64 = 100_000;

/// The ranges a remapped container's ids map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remap {
    /// Host uid of the container's uid 0.
    pub uid: u32,
    /// Host gid of the container's gid 0.
    pub gid: u32,
}

/// One line of `/etc/subuid` or `/etc/subgid`: `name:start:count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIdRange {
    /// User or group name (or numeric id).
    pub name: String,
    /// First subordinate id.
    pub start: u64,
    /// Number of ids.
    pub count: u64,
}

/// Parses `/etc/subuid`/`/etc/subgid` text; comments, blank and malformed lines are skipped.
pub fn parse_subid(text: &str) -> Vec<SubIdRange> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split(':');
            let name = f.next()?.to_string();
            let start = f.next()?.trim().parse().ok()?;
            let count = f.next()?.trim().parse().ok()?;
            (f.next().is_none() && !name.is_empty() && count > 0).then_some(SubIdRange {
                name,
                start,
                count,
            })
        })
        .collect()
}

/// The first 65536-aligned start at or after 100000 whose `size` ids overlap no range of
/// `used` (of either file).
pub fn allocate(used: &[SubIdRange], size: u64) -> Option<u64> {
    let mut start = MIN_START.div_ceil(u64::from(SIZE)) * u64::from(SIZE);
    while start + size <= u64::from(u32::MAX) {
        let end = start + size;
        match used
            .iter()
            .filter(|r| r.start < end && start < r.start + r.count)
            .map(|r| r.start + r.count)
            .max()
        {
            None => return Some(start),
            Some(next) => start = next.div_ceil(u64::from(SIZE)) * u64::from(SIZE),
        }
    }
    None
}

/// The first range of `names` (a name or its numeric id) with at least [`SIZE`] ids.
fn find(ranges: &[SubIdRange], names: &[String]) -> Option<u32> {
    ranges
        .iter()
        .find(|r| names.contains(&r.name) && r.count >= u64::from(SIZE))
        .and_then(|r| u32::try_from(r.start).ok())
        .filter(|s| s.checked_add(SIZE).is_some())
}

/// Looks `name` up in a passwd/group file: (name, id).
fn lookup(file: &str, name: &str) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        let id: u32 = f[2].parse().ok()?;
        (f[0] == name || f[2] == name).then(|| (f[0].to_string(), id))
    })
}

fn run(cmd: &str, args: &[&str]) -> std::result::Result<(), String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Appends `line` to `path` through a temporary file and a rename (the old content is kept).
fn append_line(path: &str, line: &str) -> std::result::Result<(), String> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    let tmp = format!("{path}.berth-tmp");
    std::fs::write(&tmp, &text).map_err(|e| format!("write {tmp}: {e}"))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| format!("chmod {tmp}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename {tmp}: {e}"))
}

/// Resolves the `userns-remap` setting (`default` or `user[:group]`) to its ranges, creating
/// the `berthremap` user and its ranges for `default` when missing.
pub fn resolve(setting: &str) -> std::result::Result<Remap, String> {
    let (user, group) = match setting.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (setting, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(format!("invalid userns-remap {setting:?}"));
    }
    let default = user == "default";
    let user = if default { DEFAULT_USER } else { user };
    if default && lookup("/etc/passwd", user).is_none() {
        run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                user,
            ],
        )?;
    }
    let (uname, uid) =
        lookup("/etc/passwd", user).ok_or_else(|| format!("user {user} does not exist"))?;
    let group = group.unwrap_or(&uname);
    let (gname, gid) =
        lookup("/etc/group", group).ok_or_else(|| format!("group {group} does not exist"))?;
    let read = |p: &str| parse_subid(&std::fs::read_to_string(p).unwrap_or_default());
    let unames = [uname.clone(), uid.to_string()];
    let gnames = [gname.clone(), gid.to_string()];
    if default {
        let (su, sg) = (read("/etc/subuid"), read("/etc/subgid"));
        if find(&su, &unames).is_none() || find(&sg, &gnames).is_none() {
            let mut used = su.clone();
            used.extend(sg.iter().cloned());
            let start = allocate(&used, u64::from(SIZE))
                .ok_or("no free subordinate id range for berthremap")?;
            if find(&su, &unames).is_none() {
                append_line("/etc/subuid", &format!("{uname}:{start}:{SIZE}"))?;
            }
            if find(&sg, &gnames).is_none() {
                append_line("/etc/subgid", &format!("{gname}:{start}:{SIZE}"))?;
            }
        }
    }
    let uid = find(&read("/etc/subuid"), &unames).ok_or_else(|| {
        format!("no subuid range of at least {SIZE} ids for {uname} in /etc/subuid")
    })?;
    let gid = find(&read("/etc/subgid"), &gnames).ok_or_else(|| {
        format!("no subgid range of at least {SIZE} ids for {gname} in /etc/subgid")
    })?;
    Ok(Remap { uid, gid })
}

static REMAP: OnceLock<Option<Remap>> = OnceLock::new();
static USERNS: OnceLock<std::result::Result<std::fs::File, String>> = OnceLock::new();

/// Sets the daemon's remap once at start (`None`: no remapping).
pub fn init(setting: Option<&str>) -> std::result::Result<Option<Remap>, String> {
    let remap = match setting.filter(|s| !s.is_empty()) {
        Some(s) => Some(resolve(s)?),
        None => None,
    };
    let _ = REMAP.set(remap);
    if let Some(r) = remap {
        berth_image::set_remapped_ids(r.uid, r.gid, SIZE);
    }
    Ok(remap)
}

/// The daemon's remap, if `userns-remap` is set.
pub fn remap() -> Option<Remap> {
    REMAP.get().copied().flatten()
}

/// The remap applying to a container (`None` with `--userns host` or without remapping).
pub fn for_host_config(hc: &berth_api::container::HostConfig) -> Option<Remap> {
    let mode = hc
        .extra
        .get("UsernsMode")
        .and_then(Value::as_str)
        .unwrap_or("");
    remap().filter(|_| mode != "host")
}

/// dockerd's checks of modes that cannot work inside a remapped user namespace.
pub fn validate(hc: &berth_api::container::HostConfig) -> Result<()> {
    if for_host_config(hc).is_none() {
        return Ok(());
    }
    if hc.privileged {
        return Err(Error::invalid(
            "privileged mode is incompatible with user namespaces.  You must run the container in the host namespace when running privileged mode",
        ));
    }
    if hc.network_mode == "host" {
        return Err(Error::invalid(
            "cannot share the host's network namespace when user namespaces are enabled",
        ));
    }
    if hc.pid_mode == "host" {
        return Err(Error::invalid(
            "cannot share the host PID namespace when user namespaces are enabled",
        ));
    }
    if hc.ipc_mode == "host" {
        return Err(Error::invalid(
            "cannot share the host's IPC namespace when user namespaces are enabled",
        ));
    }
    Ok(())
}

/// Adds the user namespace and its mappings to a container's spec.
pub fn apply_spec(spec: &mut Value, r: Remap) {
    let linux = &mut spec["linux"];
    if let Some(ns) = linux["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "user");
        ns.push(json!({"type": "user"}));
    }
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": r.uid, "size": SIZE}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": r.gid, "size": SIZE}]);
    // An external runtime cannot mount sysfs for the network namespace it joins (owned by the
    // host's user namespace; the built-in one has its parent make it): it binds the host's
    // /sys read-only instead, as runc does without a network namespace of its own.
    if spec["annotations"].get("io.berth.runtime.path").is_some() {
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for m in mounts.iter_mut().filter(|m| m["type"] == "sysfs") {
                m["type"] = json!("bind");
                m["source"] = json!("/sys");
                m["options"] = json!(["rbind", "nosuid", "noexec", "nodev", "ro"]);
            }
        }
    }
}

/// A user namespace with the remap's mappings, for id-mapped mounts: made once by a helper
/// process (`unshare --user`) that is killed once its namespace is held open.
fn userns_file(r: Remap) -> std::result::Result<&'static std::fs::File, String> {
    USERNS
        .get_or_init(|| {
            let mut child = std::process::Command::new("unshare")
                .args(["--user", "--", "sleep", "60"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("unshare: {e}"))?;
            let pid = child.id();
            let result = (|| {
                let own = std::fs::read_link("/proc/self/ns/user").map_err(|e| e.to_string())?;
                let path = format!("/proc/{pid}/ns/user");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while std::fs::read_link(&path).map_err(|e| e.to_string())? == own {
                    if std::time::Instant::now() > deadline {
                        return Err("unshare --user did not unshare".to_string());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                std::fs::write(
                    format!("/proc/{pid}/uid_map"),
                    format!("0 {} {SIZE}\n", r.uid),
                )
                .map_err(|e| format!("write uid_map: {e}"))?;
                std::fs::write(
                    format!("/proc/{pid}/gid_map"),
                    format!("0 {} {SIZE}\n", r.gid),
                )
                .map_err(|e| format!("write gid_map: {e}"))?;
                std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))
            })();
            let _ = child.kill();
            let _ = child.wait();
            result
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Mounts a container's rootfs: for a remapped container the image layers are id-mapped (the
/// store's root-owned layers show as the container's root and stay shared with unmapped
/// containers) and the upper dir is owned by the mapped root; otherwise a plain overlay.
pub fn mount_rootfs(
    rec: &crate::container::Record,
    rootfs: &Path,
    staging: &Path,
) -> std::result::Result<(), String> {
    let l = &rec.layer;
    let Some(r) = for_host_config(&rec.host_config) else {
        return berth_runtime::mount_overlay(rootfs, &l.lowers, &l.upper, &l.work)
            .map_err(|e| e.to_string());
    };
    chown_if_root(&l.upper, r)?;
    let idmapped = userns_file(r).and_then(|ns| {
        berth_runtime::mount_overlay_idmapped(rootfs, &l.lowers, &l.upper, &l.work, ns, staging)
            .map_err(|e| e.to_string())
    });
    let Err(e) = idmapped else {
        return Ok(());
    };
    // No id-mapped mounts (kernel < 5.19, a filesystem without them): chowned copies of the
    // layers, made on first use and kept per range beside the store's layers.
    tracing::warn!("id-mapped image layers failed ({e}): using chowned copies");
    let mut lowers = Vec::new();
    for lower in &l.lowers {
        lowers.push(shifted_copy(lower, r)?);
    }
    berth_runtime::mount_overlay(rootfs, &lowers, &l.upper, &l.work).map_err(|e| e.to_string())
}

/// The copy of layer dir `lower` (`<store>/layers/<chain>/diff`) with every owner shifted by
/// the remap, at `<store>/layers-remapped/<uid>.<gid>/<chain>/diff` (made once).
fn shifted_copy(lower: &Path, r: Remap) -> std::result::Result<std::path::PathBuf, String> {
    let chain = lower.parent().ok_or("layer dir without parent")?;
    let store = chain
        .parent()
        .and_then(Path::parent)
        .ok_or("layer dir outside a store")?;
    let name = chain.file_name().ok_or("layer dir without name")?;
    let dir = store
        .join("layers-remapped")
        .join(format!("{}.{}", r.uid, r.gid))
        .join(name);
    let out = dir.join("diff");
    if out.is_dir() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!("diff.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_shifted(lower, &tmp, r)?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(out)
}

/// `cp -a` (modes, times, xattrs such as overlay whiteout marks, hard links, device nodes)
/// of `src` to `dst`, then every owner shifted into the remap's range (modes restored after the
/// chown, which clears set-id bits).
fn copy_shifted(src: &Path, dst: &Path, r: Remap) -> std::result::Result<(), String> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cp -a {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut stack = vec![dst.to_path_buf()];
    let mut seen = std::collections::HashSet::new();
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if md.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))? {
                stack.push(e.map_err(|e| e.to_string())?.path());
            }
        }
        // Hard links share an inode: shift it once.
        if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
            continue;
        }
        let (uid, gid) = (
            md.uid().checked_add(r.uid).filter(|_| md.uid() < SIZE),
            md.gid().checked_add(r.gid).filter(|_| md.gid() < SIZE),
        );
        std::os::unix::fs::lchown(&p, uid, gid)
            .map_err(|e| format!("chown {}: {e}", p.display()))?;
        if !md.file_type().is_symlink() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Chowns `dir` (only the directory itself) to the mapped root when the host's root owns it.
fn chown_if_root(dir: &Path, r: Remap) -> std::result::Result<(), String> {
    let md = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if md.uid() == 0 && md.gid() == 0 {
        std::os::unix::fs::chown(dir, Some(r.uid), Some(r.gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// For a remapped container: `files` (its hostname, hosts, resolv.conf) and named volumes'
/// `_data` dirs still owned by the host's root are given to the mapped root, so the
/// container's root can write them (dockerd keeps remapped volumes in a separate
/// `<data-root>/<uid>.<gid>/` tree; Berth chowns the volume's top directory instead).
pub fn prepare_files(rec: &crate::container::Record, volumes_root: &Path, files: &[&Path]) {
    let Some(r) = for_host_config(&rec.host_config) else {
        return;
    };
    for f in files {
        if let Err(e) = std::os::unix::fs::chown(f, Some(r.uid), Some(r.gid)) {
            tracing::warn!("chown {} for remapped root: {e}", f.display());
        }
    }
    if let Ok(mounts) = crate::container::spec::user_mounts(rec, volumes_root) {
        for m in mounts.iter().filter(|m| m.volume.is_some()) {
            if let Err(e) = chown_if_root(Path::new(&m.source), r) {
                tracing::warn!("volume for remapped root: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subid_files() {
        let r = parse_subid(
            "# comment\nalice:100000:65536\n\nbob:165536:65536\nbad\nx:1:0\n1000:231072:65536\n",
        );
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            SubIdRange {
                name: "alice".into(),
                start: 100000,
                count: 65536
            }
        );
        assert_eq!(r[2].name, "1000");
        assert_eq!(find(&r, &["bob".into()]), Some(165536));
        assert_eq!(find(&r, &["carol".into(), "1000".into()]), Some(231072));
        assert_eq!(find(&r, &["nobody".into()]), None);
        // Too small a range is not used.
        assert_eq!(find(&parse_subid("a:100000:1000\n"), &["a".into()]), None);
    }

    #[test]
    fn shifted_copy_keeps_modes_links_and_shifts_owners() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let base = std::path::PathBuf::from(format!("/tmp/berth-shift-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let _gone = Gone(base.clone());
        let src = base.join("store/layers/abc/diff");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/su"), b"x").unwrap();
        std::fs::set_permissions(src.join("bin/su"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::hard_link(src.join("bin/su"), src.join("bin/su2")).unwrap();
        std::os::unix::fs::symlink("su", src.join("bin/link")).unwrap();
        std::fs::write(src.join("owned"), b"y").unwrap();
        std::os::unix::fs::chown(src.join("owned"), Some(1000), Some(100)).unwrap();
        let r = Remap {
            uid: 200_000,
            gid: 300_000,
        };
        let out = shifted_copy(&src, r).unwrap();
        assert_eq!(
            out,
            base.join("store/layers-remapped/200000.300000/abc/diff")
        );
        let md = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap();
        assert_eq!((md("bin/su").uid(), md("bin/su").gid()), (200_000, 300_000));
        assert_eq!(md("bin/su").mode() & 0o7777, 0o4755);
        assert_eq!(md("bin/su").ino(), md("bin/su2").ino());
        assert!(md("bin/link").file_type().is_symlink());
        assert_eq!(md("bin/link").uid(), 200_000);
        assert_eq!((md("owned").uid(), md("owned").gid()), (201_000, 300_100));
        assert_eq!(md("").uid(), 200_000);
        // The store's layer is untouched; a second use reuses the copy.
        assert_eq!(std::fs::metadata(src.join("bin/su")).unwrap().uid(), 0);
        assert_eq!(shifted_copy(&src, r).unwrap(), out);
    }

    #[test]
    fn allocates_first_free_aligned_range() {
        assert_eq!(allocate(&[], 65536), Some(131072));
        let used = parse_subid("alice:100000:65536\nbob:165536:65536\n");
        // 131072.. overlaps alice and bob; bob ends at 231072 -> next aligned 262144.
        assert_eq!(allocate(&used, 65536), Some(262144));
        let used = parse_subid("a:131072:65536\nb:262144:65536\n");
        assert_eq!(allocate(&used, 65536), Some(196608));
        let used = parse_subid("a:0:4294960000\n");
        assert_eq!(allocate(&used, 65536), None);
    }
}
