//! Docker's default OCI runtime spec.

use oci_spec::runtime::Spec;

/// `PATH` Docker gives a container when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's 14 default capabilities.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker masks by default.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only by default.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A spec filled with Docker's defaults (namespaces, capabilities, mounts, masked and read-only
/// paths, device rules, `PATH`). The caller sets `root`, `process.args`, `hostname`,
/// `linux.cgroupsPath` (`/berth/<id>`) and anything container-specific.
pub fn docker_default_spec() -> Spec {
    let dev = |t: &str, major: Option<i64>, minor: Option<i64>, access: &str| serde_json::json!({"allow": true, "type": t, "major": major, "minor": minor, "access": access});
    let devices = vec![
        serde_json::json!({"allow": false, "access": "rwm"}),
        dev("c", None, None, "m"),
        dev("b", None, None, "m"),
        dev("c", Some(1), Some(3), "rwm"),
        dev("c", Some(1), Some(8), "rwm"),
        dev("c", Some(1), Some(7), "rwm"),
        dev("c", Some(5), Some(0), "rwm"),
        dev("c", Some(1), Some(5), "rwm"),
        dev("c", Some(1), Some(9), "rwm"),
        dev("c", Some(5), Some(1), "rwm"),
        dev("c", Some(136), None, "rwm"),
        dev("c", Some(5), Some(2), "rwm"),
        dev("c", Some(10), Some(200), "rwm"),
    ];
    let v = serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [],
            "env": [format!("PATH={DEFAULT_PATH}")],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        ],
        "linux": {
            "resources": {"devices": devices},
            "namespaces": [
                {"type": "mount"}, {"type": "network"}, {"type": "uts"},
                {"type": "pid"}, {"type": "ipc"}, {"type": "cgroup"},
            ],
            "maskedPaths": DEFAULT_MASKED_PATHS,
            "readonlyPaths": DEFAULT_READONLY_PATHS,
        },
    });
    serde_json::from_value(v).expect("the built-in default spec is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceType;

    #[test]
    fn defaults_match_docker() {
        let s = docker_default_spec();
        let p = s.process().as_ref().unwrap();
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert_eq!(caps.effective().as_ref().unwrap().len(), 14);
        assert_eq!(caps.permitted().as_ref().unwrap().len(), 14);
        assert!(caps.inheritable().is_none());
        assert!(caps.ambient().is_none());
        assert!(p.rlimits().is_none());
        assert!(s.hostname().is_none());
        assert_eq!(p.env().as_ref().unwrap()[0], format!("PATH={DEFAULT_PATH}"));
        let l = s.linux().as_ref().unwrap();
        let ns: Vec<_> = l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup,
        ] {
            assert!(ns.contains(&t), "{t:?}");
        }
        assert_eq!(ns.len(), 6);
        assert_eq!(l.masked_paths().as_ref().unwrap().len(), 11);
        assert_eq!(l.readonly_paths().as_ref().unwrap().len(), 5);
        let devs = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert!(!devs[0].allow());
        assert_eq!(devs[0].to_string(), "a *:* rwm");
        assert_eq!(devs[1].to_string(), "c *:* m");
        assert_eq!(devs[3].to_string(), "c 1:3 rwm");
        let mounts = s.mounts().as_ref().unwrap();
        assert_eq!(mounts.len(), 7);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("youki"));
    }
}
