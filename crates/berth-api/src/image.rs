//! Image types: list entries, inspect output, delete results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::de::null_default;

/// One entry of `GET /images/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// `sha256:...`.
    pub id: String,
    /// Parent image ID or "".
    #[serde(default)]
    pub parent_id: String,
    /// `name:tag` references (`[]` when untagged; the CLI shows `<none>`).
    #[serde(default, deserialize_with = "null_default")]
    pub repo_tags: Vec<String>,
    /// `name@sha256:...` references.
    #[serde(default, deserialize_with = "null_default")]
    pub repo_digests: Vec<String>,
    /// Creation time, Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Shared size (-1 when not computed).
    #[serde(default)]
    pub shared_size: i64,
    /// Deprecated: same as Size.
    #[serde(default)]
    pub virtual_size: i64,
    /// Labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// Containers using it (-1 when not computed).
    #[serde(default)]
    pub containers: i64,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    /// `sha256:...`.
    pub id: String,
    /// Tags.
    pub repo_tags: Vec<String>,
    /// Digests.
    pub repo_digests: Vec<String>,
    /// Parent image ID or "".
    pub parent: String,
    /// Comment (import message).
    pub comment: String,
    /// RFC3339Nano creation time.
    pub created: String,
    /// Container the image was committed from ("" otherwise).
    pub container: String,
    /// Docker version that built it.
    pub docker_version: String,
    /// Author.
    pub author: String,
    /// Image configuration (Docker's container `Config` shape).
    pub config: Value,
    /// `amd64`, ...
    pub architecture: String,
    /// Variant, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `linux`.
    pub os: String,
    /// Size in bytes.
    pub size: i64,
    /// Deprecated: same as Size.
    pub virtual_size: i64,
    /// Storage driver data.
    pub graph_driver: Value,
    /// `{"Type":"layers","Layers":[diff ids]}`.
    #[serde(rename = "RootFS")]
    pub root_fs: Value,
    /// `{"LastTagTime": ...}`.
    pub metadata: Value,
}

/// One item of `DELETE /images/{name}`: `{"Untagged": ref}` or `{"Deleted": id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteItem {
    /// The reference removed.
    #[serde(rename = "Untagged", default, skip_serializing_if = "Option::is_none")]
    pub untagged: Option<String>,
    /// The image or layer deleted.
    #[serde(rename = "Deleted", default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}
