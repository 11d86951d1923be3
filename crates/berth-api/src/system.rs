//! `/version` and `/info`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A component entry of `/version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// The platform name in `/version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    /// Name.
    pub name: String,
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// Platform.
    pub platform: Platform,
    /// Components.
    pub components: Vec<Component>,
    /// Engine version.
    pub version: String,
    /// Highest API version.
    pub api_version: String,
    /// Lowest API version.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// Source commit.
    pub git_commit: String,
    /// Docker prints this; berth puts its Rust version.
    pub go_version: String,
    /// `linux`.
    pub os: String,
    /// `amd64`, ...
    pub arch: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Build time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_time: Option<String>,
}

/// `GET /info` (the fields clients read; the rest default to zero values).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    /// Daemon ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Containers in all.
    pub containers: i64,
    /// Running containers.
    pub containers_running: i64,
    /// Paused containers.
    pub containers_paused: i64,
    /// Stopped containers.
    pub containers_stopped: i64,
    /// Images.
    pub images: i64,
    /// Storage driver.
    pub driver: String,
    /// Storage driver status pairs.
    pub driver_status: Vec<[String; 2]>,
    /// Plugins by kind.
    pub plugins: Value,
    /// Memory limits supported.
    pub memory_limit: bool,
    /// Swap limits supported.
    pub swap_limit: bool,
    /// CPU CFS period supported.
    pub cpu_cfs_period: bool,
    /// CPU CFS quota supported.
    pub cpu_cfs_quota: bool,
    /// CPU shares supported.
    #[serde(rename = "CPUShares")]
    pub cpu_shares: bool,
    /// Cpuset supported.
    #[serde(rename = "CPUSet")]
    pub cpu_set: bool,
    /// PID limits supported.
    pub pids_limit: bool,
    /// IPv4 forwarding on.
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    /// Debug mode.
    pub debug: bool,
    /// Open file descriptors of the daemon.
    pub n_fd: i64,
    /// Goroutines (berth: threads).
    pub n_goroutines: i64,
    /// Current time, RFC3339Nano.
    pub system_time: String,
    /// Default log driver.
    pub logging_driver: String,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    /// Event listeners.
    pub n_events_listener: i64,
    /// Kernel release.
    pub kernel_version: String,
    /// OS name.
    pub operating_system: String,
    /// OS version.
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    /// `linux`.
    #[serde(rename = "OSType")]
    pub os_type: String,
    /// `x86_64`, ...
    pub architecture: String,
    /// Default registry.
    pub index_server_address: String,
    /// Registry configuration.
    pub registry_config: Value,
    /// CPUs.
    #[serde(rename = "NCPU")]
    pub ncpu: i64,
    /// Memory in bytes.
    pub mem_total: i64,
    /// Data root.
    pub docker_root_dir: String,
    /// Host name.
    pub name: String,
    /// Daemon labels.
    pub labels: Vec<String>,
    /// Experimental features on.
    pub experimental_build: bool,
    /// Engine version.
    pub server_version: String,
    /// Runtimes by name.
    pub runtimes: Value,
    /// Default runtime.
    pub default_runtime: String,
    /// Swarm state.
    pub swarm: Value,
    /// Live restore enabled (berth: containers always survive daemon restarts).
    pub live_restore_enabled: bool,
    /// `default` isolation.
    pub isolation: String,
    /// Init binary.
    pub init_binary: String,
    /// Security options (`name=seccomp,profile=builtin`, ...).
    pub security_options: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
}
