//! JSON progress messages, as dockerd streams them for pull, push, import, load and build.

use serde::{Deserialize, Serialize};

/// Progress numbers of one layer or step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgressDetail {
    /// Bytes done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    /// Bytes in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// The error part of a failed stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Numeric code, rarely set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The message.
    #[serde(default)]
    pub message: String,
}

/// One JSON line of a progress stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JsonMessage {
    /// Build output text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Status text ("Pulling fs layer", "Download complete", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Structured progress.
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    /// Pre-rendered progress bar (deprecated, still sent by dockerd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The layer or step id the line is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Failure: the stream ends after this.
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    /// Failure message (deprecated duplicate of errorDetail.message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Auxiliary data (e.g. the built image ID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

impl JsonMessage {
    /// A status line.
    pub fn status(s: impl Into<String>) -> Self {
        Self {
            status: Some(s.into()),
            ..Default::default()
        }
    }

    /// An error line.
    pub fn error(msg: impl Into<String>) -> Self {
        let m = msg.into();
        Self {
            error_detail: Some(ErrorDetail {
                code: None,
                message: m.clone(),
            }),
            error: Some(m),
            ..Default::default()
        }
    }

    /// Serializes as one line ending in `\r\n`, the way dockerd writes progress streams.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push_str("\r\n");
        s
    }
}
