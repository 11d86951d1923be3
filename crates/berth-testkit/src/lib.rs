//! Test fixtures shared by the workspace's integration tests.
//!
//! The busybox root filesystems are made from the host's static busybox (`busybox-static`).
//! Applet links come from the host binary's `--list`: running the freshly copied binary (as
//! `chroot <root> busybox --install` would) races with any other thread of the test process
//! that forks while the copy's write descriptor is open, and fails with ETXTBSY.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Who the rootfs's /etc/passwd and /etc/group know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Users {
    /// root and nobody.
    Basic,
    /// root, app (1000, home /home/app owned by it) and nobody; groups root, app, staff (50),
    /// nogroup: what the build corpus expects.
    Corpus,
}

/// The host's static busybox, installed with apt-get when missing; None if that fails.
pub fn busybox() -> Option<PathBuf> {
    static BUSYBOX: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUSYBOX
        .get_or_init(|| {
            let find = || {
                ["/bin/busybox", "/usr/bin/busybox"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            };
            if let Some(p) = find() {
                return Some(p);
            }
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "busybox-static"])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install() {
                let _ = Command::new("apt-get").args(["update", "-qq"]).status();
                install();
            }
            find()
        })
        .clone()
}

/// Fills `root` with a busybox rootfs: /bin/busybox, a link per applet, the usual empty
/// directories and the users of `users`. Panics without busybox.
pub fn busybox_rootfs(root: &Path, users: Users) {
    let bb = busybox().expect("busybox-static is needed (apt-get install busybox-static)");
    for d in [
        "bin", "etc", "tmp", "root", "proc", "sys", "dev", "usr/bin", "usr/sbin", "sbin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    let list = Command::new(&bb).arg("--list").output().unwrap();
    assert!(list.status.success(), "busybox --list failed");
    for app in String::from_utf8_lossy(&list.stdout).lines() {
        if app != "busybox" && !app.is_empty() {
            let link = root.join("bin").join(app);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link).unwrap();
            }
        }
    }
    let (passwd, group) = match users {
        Users::Basic => (
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            "root:x:0:\nnogroup:x:65534:\n",
        ),
        Users::Corpus => (
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            "root:x:0:\napp:x:1000:\nstaff:x:50:\nnogroup:x:65534:\n",
        ),
    };
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();
    if users == Users::Corpus {
        std::fs::create_dir_all(root.join("home/app")).unwrap();
        std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    }
}

/// Makes `<dir>/<name>` from a busybox rootfs built in `<dir>/<name>.root`; its path.
pub fn busybox_tar(dir: &Path, name: &str, users: Users) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    let _ = std::fs::remove_dir_all(&root);
    busybox_rootfs(&root, users);
    let tar = dir.join(name);
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the busybox rootfs failed");
    tar
}
