//! `/_ping`, `/version` and `/info`.

use std::sync::Arc;

use berth_api::system::{Component, Info, Platform, Version};
use berth_api::version::{CURRENT, MINIMUM};
use serde_json::json;

use crate::daemon::Daemon;

/// The engine version berthd reports.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `GET /version`.
pub fn version() -> Version {
    let kv = kernel();
    Version {
        platform: Platform {
            name: "Berth Engine".into(),
        },
        components: vec![Component {
            name: "Engine".into(),
            version: ENGINE_VERSION.into(),
            details: Some(json!({
                "ApiVersion": CURRENT.to_string(),
                "Arch": go_arch(),
                "BuildTime": "",
                "Experimental": "false",
                "GitCommit": "",
                "GoVersion": "rust",
                "KernelVersion": kv,
                "MinAPIVersion": MINIMUM.to_string(),
                "Os": "linux",
            })),
        }],
        version: ENGINE_VERSION.into(),
        api_version: CURRENT.to_string(),
        min_api_version: MINIMUM.to_string(),
        git_commit: String::new(),
        go_version: "rust".into(),
        os: "linux".into(),
        arch: go_arch().into(),
        kernel_version: kv,
        build_time: None,
    }
}

/// Reads `KEY=value` from os-release text.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// `1` or `2`, by whether the unified hierarchy is mounted at /sys/fs/cgroup.
pub fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

/// `GET /info`.
pub async fn info(d: &Arc<Daemon>) -> Info {
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    let all = d.all();
    for c in &all {
        let r = c.snapshot();
        if r.state.paused {
            paused += 1;
        } else if r.state.running {
            running += 1;
        } else {
            stopped += 1;
        }
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let nfd = std::fs::read_dir("/proc/self/fd")
        .map(|r| r.count() as i64)
        .unwrap_or(0);
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|r| r.count() as i64)
        .unwrap_or(0);
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    Info {
        id: d.id.clone(),
        containers: all.len() as i64,
        containers_running: running,
        containers_paused: paused,
        containers_stopped: stopped,
        images: d.images.count().await,
        driver: "overlay2".into(),
        driver_status: vec![
            ["Backing Filesystem".into(), "extfs".into()],
            ["Supports d_type".into(), "true".into()],
        ],
        plugins: json!({
            "Volume": ["local"], "Network": ["none"], "Authorization": null,
            "Log": ["json-file"]
        }),
        memory_limit: true,
        swap_limit: false,
        cpu_cfs_period: true,
        cpu_cfs_quota: true,
        cpu_shares: true,
        cpu_set: true,
        pids_limit: true,
        ipv4_forwarding: false,
        debug: d.settings.debug,
        n_fd: nfd,
        n_goroutines: threads,
        system_time: crate::util::now_rfc3339(),
        logging_driver: "json-file".into(),
        cgroup_driver: "cgroupfs".into(),
        cgroup_version: cgroup_version().into(),
        n_events_listener: 0,
        kernel_version: kernel(),
        operating_system: os_release_value(&os, "PRETTY_NAME").unwrap_or_else(|| "Linux".into()),
        os_version: os_release_value(&os, "VERSION_ID").unwrap_or_default(),
        os_type: "linux".into(),
        architecture: std::env::consts::ARCH.into(),
        index_server_address: "https://index.docker.io/v1/".into(),
        registry_config: json!({
            "AllowNondistributableArtifactsCIDRs": null,
            "AllowNondistributableArtifactsHostnames": null,
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {},
            "Mirrors": null
        }),
        ncpu: std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1),
        mem_total: mem_total(),
        docker_root_dir: d.settings.data_root.display().to_string(),
        name: hostname,
        labels: vec![],
        experimental_build: false,
        server_version: ENGINE_VERSION.into(),
        runtimes: json!({"berth": {"path": d.shim.display().to_string()}}),
        default_runtime: "berth".into(),
        swarm: json!({
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null
        }),
        live_restore_enabled: true,
        isolation: String::new(),
        init_binary: String::new(),
        security_options: std::iter::once("name=seccomp,profile=builtin".to_string())
            .chain(crate::userns::remap().map(|_| "name=userns".to_string()))
            .collect(),
        warnings: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            os_release_value(t, "PRETTY_NAME").unwrap(),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_release_value(t, "VERSION_ID").unwrap(), "12");
        assert!(os_release_value(t, "X").is_none());
    }
}
