//! Resolving paths inside a container's root without escaping it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

/// Resolves `unsafe_path` as if `root` were `/`: symlinks are followed but clamped to `root`
/// (an absolute link target starts again at `root`, `..` never climbs above it). Components
/// that do not exist are appended as they are. The result always lies under `root`.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = components(unsafe_path);
    let mut current = PathBuf::new();
    let mut links = 0;
    let mut missing = false;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        if missing {
            current = candidate;
            continue;
        }
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    queue.insert(i, c);
                }
            }
            Ok(_) => current = candidate,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = true;
                current = candidate;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(root.join(current))
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("rel")).unwrap();
        symlink("/nonexistent/x", root.join("dangling")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/abs/hosts")).unwrap(),
            root.join("etc/hosts")
        );
        assert_eq!(
            secure_join(root, Path::new("/rel")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/dangling/y")).unwrap(),
            root.join("nonexistent/x/y")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("/loop")).is_err());
    }
}
