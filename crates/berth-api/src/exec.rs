//! Exec types: create request, start request, inspect output.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de::{null_default, opt_str_or_vec};

/// `POST /containers/{id}/exec` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    /// Attach stdin.
    #[serde(default)]
    pub attach_stdin: bool,
    /// Attach stdout.
    #[serde(default)]
    pub attach_stdout: bool,
    /// Attach stderr.
    #[serde(default)]
    pub attach_stderr: bool,
    /// Detach key sequence.
    #[serde(default)]
    pub detach_keys: String,
    /// Allocate a TTY.
    #[serde(default)]
    pub tty: bool,
    /// Initial TTY size `[height, width]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u32; 2]>,
    /// Extra environment.
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    /// The command.
    #[serde(default, deserialize_with = "opt_str_or_vec")]
    pub cmd: Option<Vec<String>>,
    /// All capabilities.
    #[serde(default)]
    pub privileged: bool,
    /// User.
    #[serde(default)]
    pub user: String,
    /// Working directory.
    #[serde(default)]
    pub working_dir: String,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /exec/{id}/start` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExecStartConfig {
    /// Run in the background.
    #[serde(default)]
    pub detach: bool,
    /// TTY.
    #[serde(default)]
    pub tty: bool,
    /// Initial TTY size `[height, width]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u32; 2]>,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `ProcessConfig` in exec inspect output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessConfig {
    /// All capabilities.
    pub privileged: bool,
    /// User.
    pub user: String,
    /// TTY.
    pub tty: bool,
    /// The executable.
    pub entrypoint: String,
    /// Its arguments.
    pub arguments: Vec<String>,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExecInspect {
    /// Whether stdout/stderr streams can be attached (always true).
    pub can_remove: bool,
    /// Container ID.
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// Detach keys.
    pub detach_keys: String,
    /// Exit code (null while running or never started).
    pub exit_code: Option<i64>,
    /// Exec ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Stdin attached.
    pub open_stdin: bool,
    /// Stderr attached.
    pub open_stderr: bool,
    /// Stdout attached.
    pub open_stdout: bool,
    /// The process.
    pub process_config: ProcessConfig,
    /// Running.
    pub running: bool,
    /// Host PID (0 when not running).
    pub pid: i64,
}
