//! Writing COPY/ADD sources into a mounted rootfs: destinations resolved inside the rootfs (its
//! symlinks followed as if it were `/`), missing parent directories created `0755`, files owned by
//! `0:0` or `--chown`, `--chmod` applied, modes and mtimes kept.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::context::{BuildContext, Selected, resolve_in_root};
use crate::error::{BuildError, Result};

fn ioe(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let c = format!("{what} {}", p.display());
    move |e| BuildError::io(c, e)
}

/// Creates `path` (absolute, inside `root`) and its missing parents; new directories get `0755` and
/// `owner`. Returns the host path.
pub fn mkdir_all_in_root(root: &Path, path: &str, owner: (u32, u32)) -> Result<PathBuf> {
    let mut cur = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        cur.push('/');
        cur.push_str(comp);
        let host = resolve_in_root(root, &cur, true).map_err(ioe("resolve", Path::new(&cur)))?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BuildError::Context(format!("mkdir {cur}: not a directory")));
            }
            Err(_) => {
                fs::create_dir(&host).map_err(ioe("create", &host))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                    .map_err(ioe("chmod", &host))?;
                std::os::unix::fs::lchown(&host, Some(owner.0), Some(owner.1))
                    .map_err(ioe("chown", &host))?;
            }
        }
    }
    resolve_in_root(root, path, true).map_err(ioe("resolve", Path::new(path)))
}

/// Copies one entry (file, symlink or directory itself, not its children) to `dst`.
fn copy_entry(
    src: &Path,
    meta: &fs::Metadata,
    dst: &Path,
    owner: (u32, u32),
    chmod: Option<u32>,
) -> Result<()> {
    let ft = meta.file_type();
    let existing = fs::symlink_metadata(dst).ok();
    if ft.is_dir() {
        match existing {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                fs::remove_file(dst).map_err(ioe("remove", dst))?;
                fs::create_dir(dst).map_err(ioe("create", dst))?;
            }
            None => fs::create_dir(dst).map_err(ioe("create", dst))?,
        }
        let mode = chmod.unwrap_or(meta.mode() & 0o7777);
        fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(ioe("chmod", dst))?;
        std::os::unix::fs::lchown(dst, Some(owner.0), Some(owner.1)).map_err(ioe("chown", dst))?;
        return Ok(());
    }
    if let Some(m) = existing {
        if m.is_dir() {
            return Err(BuildError::Context(format!(
                "cannot overwrite directory {:?} with non-directory",
                dst.display().to_string()
            )));
        }
        fs::remove_file(dst).map_err(ioe("remove", dst))?;
    }
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(ioe("readlink", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(ioe("symlink", dst))?;
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(ioe("copy to", dst))?;
        let mode = chmod.unwrap_or(meta.mode() & 0o7777);
        fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(ioe("chmod", dst))?;
        if let Ok(t) = meta.modified()
            && let Ok(f) = fs::File::options().write(true).open(dst)
        {
            let _ = f.set_modified(t);
        }
    } else {
        // Devices, sockets, FIFOs are not copied (as dockerd's context tar never carries them).
        return Ok(());
    }
    std::os::unix::fs::lchown(dst, Some(owner.0), Some(owner.1)).map_err(ioe("chown", dst))?;
    Ok(())
}

/// Copies a selection into the rootfs: a directory's contents into `dest` (a directory), a file to
/// `dest` itself (the caller has decided whether that is `dir/name`).
pub fn copy_selection(
    ctx: &BuildContext,
    sel: &Selected,
    root: &Path,
    dest: &str,
    owner: (u32, u32),
    chmod: Option<u32>,
) -> Result<()> {
    if sel.is_dir {
        mkdir_all_in_root(root, dest, owner)?;
        for (rel, path, meta) in ctx.entries(sel)? {
            if rel.is_empty() {
                continue;
            }
            // Each entry's parent is resolved inside the rootfs: a symlink in the image (say
            // `/app/sub -> /tmp`) leads to the rootfs' /tmp, never the host's. Parents hidden by
            // .dockerignore (a re-included file in an excluded dir) are created.
            let (parent_rel, name) = match rel.rsplit_once('/') {
                Some((p, n)) => (format!("{dest}/{p}"), n),
                None => (dest.to_string(), rel.as_str()),
            };
            let parent = mkdir_all_in_root(root, &parent_rel, owner)?;
            copy_entry(&path, &meta, &parent.join(name), owner, chmod)?;
        }
        return Ok(());
    }
    let (parent, name) = match dest.trim_end_matches('/').rsplit_once('/') {
        Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
        None => ("/", dest),
    };
    let dir = mkdir_all_in_root(root, parent, owner)?;
    let meta = fs::metadata(&sel.path).map_err(ioe("stat", &sel.path))?;
    copy_entry(&sel.path, &meta, &dir.join(name), owner, chmod)
}

fn lookup(file: &Path, name: &str, field: usize) -> Option<u32> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(field)?.parse().ok())?
    })
}

/// Resolves `--chown=user[:group]` with the rootfs' `/etc/passwd` and `/etc/group` (numeric IDs
/// need neither). A lone user takes the group of the same name or number, else the user's primary
/// group.
pub fn resolve_chown(root: &Path, spec: &str) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = resolve_in_root(root, "/etc/passwd", true).unwrap_or_default();
    let group = resolve_in_root(root, "/etc/group", true).unwrap_or_default();
    let fail = |what: &str, n: &str| {
        BuildError::Context(format!(
            "unable to convert uid/gid chown string to host mapping: can't find {what} for {n}"
        ))
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup(&passwd, u, 2).ok_or_else(|| fail("uid for user", u))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(&group, g, 2).ok_or_else(|| fail("gid for group", g))?,
        },
        None => match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(&group, u, 2)
                .or_else(|| lookup(&passwd, u, 3))
                .ok_or_else(|| fail("gid for group", u))?,
        },
    };
    Ok((uid, gid))
}

/// Whether a file is a tar archive ADD should extract (plain, gzip).
pub fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut buf).unwrap_or(0);
    if n >= 2 && buf[..2] == [0x1f, 0x8b] {
        return true;
    }
    n >= 262 && &buf[257..262] == b"ustar"
}
