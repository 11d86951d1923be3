//! Manifest, index and descriptor types of the distribution spec (OCI and Docker schema2).

use berth_image::Digest;
use serde::{Deserialize, Serialize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker schema1 manifests (refused, as dockerd 28 does).
pub const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of a manifest request.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Digest.
    pub digest: Digest,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v8`, `v7`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` (or `arch`); `None` means this machine's (`linux/<go arch>`).
    pub fn parse(s: Option<&str>) -> crate::Result<Platform> {
        let s = s.unwrap_or("").trim();
        if s.is_empty() {
            return Ok(Platform {
                architecture: berth_image::config::go_arch().to_string(),
                os: "linux".into(),
                variant: None,
            });
        }
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => {
                return Err(crate::Error::InvalidArgument(format!(
                    "\"{s}\": unknown operating system or architecture: invalid argument"
                )));
            }
        };
        Ok(Platform {
            architecture: arch.to_lowercase(),
            os: os.to_lowercase(),
            variant,
        })
    }

    /// `linux/amd64` or `linux/arm64/v8`.
    pub fn render(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// True if an index entry for `other` serves this platform.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A manifest or an index.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// 2.
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    /// Media type, when the document says.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// Config (manifests).
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// Layers (manifests).
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Entries (indexes).
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A Docker schema2 manifest as dockerd pushes it (field order and 3-space indent).
#[derive(Debug, Serialize)]
pub(crate) struct Schema2 {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: &'static str,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Schema2 {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser).expect("manifest serializes");
        out
    }
}
