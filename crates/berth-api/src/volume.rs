//! Volume types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de::null_default;

/// A volume (`GET /volumes/{name}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// RFC3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// `local`.
    pub driver: String,
    /// Labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// Host path of the data.
    pub mountpoint: String,
    /// Name.
    pub name: String,
    /// Driver options.
    #[serde(default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
    /// `local`.
    pub scope: String,
}

/// `POST /volumes/create` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCreateRequest {
    /// Name (generated when empty).
    #[serde(default)]
    pub name: String,
    /// Driver (`local` or empty).
    #[serde(default)]
    pub driver: String,
    /// Driver options.
    #[serde(default, deserialize_with = "null_default")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// Fields berth does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /volumes` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeList {
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Warnings (null when none).
    pub warnings: Option<Vec<String>>,
}
