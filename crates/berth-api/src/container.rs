//! Container types: the create request, list entries, inspect output and wait result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de::{null_default, opt_str_or_vec};

/// Empty JSON object, as Docker uses for set-like maps (`ExposedPorts`, `Volumes`).
pub type EmptyObject = Map<String, Value>;

/// A container's configuration (`Config` in create requests and inspect output).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    /// Container host name.
    #[serde(default)]
    pub hostname: String,
    /// Domain name.
    #[serde(default)]
    pub domainname: String,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: String,
    /// Attach stdin when started by `run`.
    #[serde(default)]
    pub attach_stdin: bool,
    /// Attach stdout.
    #[serde(default)]
    pub attach_stdout: bool,
    /// Attach stderr.
    #[serde(default)]
    pub attach_stderr: bool,
    /// Exposed ports, `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    /// Allocate a TTY.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open.
    #[serde(default)]
    pub open_stdin: bool,
    /// Close stdin after the first attached client detaches.
    #[serde(default)]
    pub stdin_once: bool,
    /// Environment, `KEY=value`.
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    /// Command.
    #[serde(default, deserialize_with = "opt_str_or_vec")]
    pub cmd: Option<Vec<String>>,
    /// Health check configuration (kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Value>,
    /// Windows-only quirk, kept for round trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Image name as the user gave it.
    #[serde(default)]
    pub image: String,
    /// Anonymous volumes, `"/data": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, EmptyObject>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: String,
    /// Entrypoint.
    #[serde(default, deserialize_with = "opt_str_or_vec")]
    pub entrypoint: Option<Vec<String>>,
    /// Disable networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_disabled: Option<bool>,
    /// ONBUILD triggers.
    #[serde(default, deserialize_with = "null_default")]
    pub on_build: Vec<String>,
    /// Labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// Signal that stops the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// Shell for the shell form of RUN/CMD/ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Restart policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// `""`, `no`, `always`, `unless-stopped`, `on-failure`.
    #[serde(default)]
    pub name: String,
    /// Retries for `on-failure`.
    #[serde(default)]
    pub maximum_retry_count: i64,
}

/// Log driver configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    /// Driver name (`json-file`, `none`, ...).
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// Driver options.
    #[serde(rename = "Config", default, deserialize_with = "null_default")]
    pub config: BTreeMap<String, String>,
}

/// A host port binding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// Host IP ("" for all).
    #[serde(default)]
    pub host_ip: String,
    /// Host port ("" for a random one).
    #[serde(default)]
    pub host_port: String,
}

/// Host-side configuration of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `-v` bind and volume specs.
    #[serde(default, deserialize_with = "null_default")]
    pub binds: Vec<String>,
    /// Where the container ID file goes (client side only, kept).
    #[serde(rename = "ContainerIDFile", default)]
    pub container_id_file: String,
    /// Log configuration.
    #[serde(default)]
    pub log_config: LogConfig,
    /// `default`, `bridge`, `host`, `none`, `container:<id>` or a network name.
    #[serde(default)]
    pub network_mode: String,
    /// `"80/tcp": [{"HostIp": "", "HostPort": "8080"}]`.
    #[serde(default, deserialize_with = "null_default")]
    pub port_bindings: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// Restart policy.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Remove the container when it ends (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Capabilities to add.
    #[serde(default, deserialize_with = "null_default")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    #[serde(default, deserialize_with = "null_default")]
    pub cap_drop: Vec<String>,
    /// DNS servers.
    #[serde(default, deserialize_with = "null_default")]
    pub dns: Vec<String>,
    /// DNS options.
    #[serde(default, deserialize_with = "null_default")]
    pub dns_options: Vec<String>,
    /// DNS search domains.
    #[serde(default, deserialize_with = "null_default")]
    pub dns_search: Vec<String>,
    /// `host:ip` entries for /etc/hosts.
    #[serde(default, deserialize_with = "null_default")]
    pub extra_hosts: Vec<String>,
    /// IPC namespace mode.
    #[serde(default)]
    pub ipc_mode: String,
    /// PID namespace mode.
    #[serde(default)]
    pub pid_mode: String,
    /// Give all privileges.
    #[serde(default)]
    pub privileged: bool,
    /// Publish all exposed ports.
    #[serde(default)]
    pub publish_all_ports: bool,
    /// Mount the rootfs read-only.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Security options (`seccomp=...`, `no-new-privileges`).
    #[serde(default, deserialize_with = "null_default")]
    pub security_opt: Vec<String>,
    /// UTS namespace mode.
    #[serde(rename = "UTSMode", default)]
    pub uts_mode: String,
    /// /dev/shm size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// Runtime name.
    #[serde(default)]
    pub runtime: String,
    /// Run an init as PID 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Memory limit in bytes (0 = none).
    #[serde(default)]
    pub memory: i64,
    /// Memory+swap limit (-1 = unlimited).
    #[serde(default)]
    pub memory_swap: i64,
    /// CPU quota in units of 1e-9 CPUs.
    #[serde(default)]
    pub nano_cpus: i64,
    /// Relative CPU weight.
    #[serde(default)]
    pub cpu_shares: i64,
    /// CFS period (µs).
    #[serde(default)]
    pub cpu_period: i64,
    /// CFS quota (µs).
    #[serde(default)]
    pub cpu_quota: i64,
    /// Allowed CPUs.
    #[serde(default)]
    pub cpuset_cpus: String,
    /// PID limit (0 or -1 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Initial TTY size `[height, width]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u32; 2]>,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /containers/create` body: the container `Config` with `HostConfig` and `NetworkingConfig` beside it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CreateRequest {
    /// The container configuration (flattened into the body, as Docker does).
    #[serde(flatten)]
    pub config: Config,
    /// Host configuration.
    #[serde(rename = "HostConfig", default)]
    pub host_config: HostConfig,
    /// Network endpoints to connect at creation.
    #[serde(
        rename = "NetworkingConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub networking_config: Option<Value>,
}

/// `POST /containers/create` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    /// The new container's full ID.
    pub id: String,
    /// Warnings (never null).
    #[serde(default, deserialize_with = "null_default")]
    pub warnings: Vec<String>,
}

/// A published or exposed port in list output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Port {
    /// Host IP.
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Container port.
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    /// Host port.
    #[serde(
        rename = "PublicPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_port: Option<u16>,
    /// `tcp`, `udp`, `sctp`.
    #[serde(rename = "Type")]
    pub kind: String,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// Full ID.
    pub id: String,
    /// Names, each with a leading `/`.
    #[serde(default, deserialize_with = "null_default")]
    pub names: Vec<String>,
    /// Image as the user named it.
    #[serde(default)]
    pub image: String,
    /// Image ID.
    #[serde(rename = "ImageID", default)]
    pub image_id: String,
    /// The command line, joined.
    #[serde(default)]
    pub command: String,
    /// Creation time, Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Ports.
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<Port>,
    /// Labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    #[serde(default)]
    pub state: String,
    /// Human status, `Up 2 minutes`, `Exited (0) 3 seconds ago`.
    #[serde(default)]
    pub status: String,
    /// `{"NetworkMode": "..."}`.
    #[serde(default)]
    pub host_config: Value,
    /// `{"Networks": {...}}`.
    #[serde(default)]
    pub network_settings: Value,
    /// Mount points.
    #[serde(default, deserialize_with = "null_default")]
    pub mounts: Vec<Value>,
    /// Size of the writable layer, with `size=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<i64>,
    /// Size of the whole rootfs, with `size=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<i64>,
}

/// `State` in inspect output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    pub status: String,
    /// Running (also true while paused).
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// Restarting.
    pub restarting: bool,
    /// Killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Dead.
    pub dead: bool,
    /// Host PID of the container's PID 1 (0 when not running).
    pub pid: i64,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Start error, if any.
    pub error: String,
    /// RFC3339Nano, `0001-01-01T00:00:00Z` when never.
    pub started_at: String,
    /// RFC3339Nano, `0001-01-01T00:00:00Z` when never.
    pub finished_at: String,
    /// Health, when a health check is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Value>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// Full ID.
    pub id: String,
    /// RFC3339Nano creation time.
    pub created: String,
    /// The executable.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// State.
    pub state: State,
    /// Image ID (`sha256:...`).
    pub image: String,
    /// Host path of resolv.conf.
    pub resolv_conf_path: String,
    /// Host path of hostname.
    pub hostname_path: String,
    /// Host path of hosts.
    pub hosts_path: String,
    /// Host path of the json-file log.
    pub log_path: String,
    /// Name with a leading `/`.
    pub name: String,
    /// Restarts done by the restart policy.
    pub restart_count: i64,
    /// Storage driver.
    pub driver: String,
    /// `linux`.
    pub platform: String,
    /// SELinux mount label.
    pub mount_label: String,
    /// SELinux process label.
    pub process_label: String,
    /// AppArmor profile.
    pub app_armor_profile: String,
    /// Running exec IDs.
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    /// Host configuration.
    pub host_config: HostConfig,
    /// Storage driver data.
    pub graph_driver: Value,
    /// Mount points.
    pub mounts: Vec<Value>,
    /// Configuration.
    pub config: Config,
    /// Network settings.
    pub network_settings: Value,
}

/// The error part of a wait response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct WaitError {
    /// Message.
    pub message: String,
}

/// `POST /containers/{id}/wait` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    /// Exit code.
    pub status_code: i64,
    /// Set when waiting failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WaitError>,
}

/// Time zero as Docker prints it for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_from_docker_cli() {
        let body = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":true,"AttachStdout":true,
            "AttachStderr":true,"Tty":true,"OpenStdin":true,"StdinOnce":true,"Env":null,"Cmd":["sh"],
            "Image":"busybox:local","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},
            "HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},
            "NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},
            "AutoRemove":true,"ConsoleSize":[24,80],"CapAdd":null,"Mounts":[]},
            "NetworkingConfig":{"EndpointsConfig":{}},"MacAddress":"x"}"#;
        let r: CreateRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.config.cmd, Some(vec!["sh".into()]));
        assert!(r.config.tty && r.host_config.auto_remove);
        assert_eq!(r.host_config.console_size, Some([24, 80]));
        assert_eq!(
            r.host_config.extra.get("Mounts"),
            Some(&Value::Array(vec![]))
        );
        assert_eq!(
            r.config.extra.get("MacAddress"),
            Some(&Value::String("x".into()))
        );
        // Round trip keeps unknown fields.
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["MacAddress"], "x");
        assert_eq!(back["HostConfig"]["ContainerIDFile"], "");
    }

    #[test]
    fn cmd_as_string() {
        let c: Config = serde_json::from_str(r#"{"Cmd":"echo hi"}"#).unwrap();
        assert_eq!(c.cmd, Some(vec!["echo hi".into()]));
    }
}
