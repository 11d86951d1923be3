//! The built-in `hello-world` image: a tiny static `/hello` (compiled by build.rs) in a deterministic layer.

use crate::config::{ContainerConfig, History, ImageConfig, RootFs, go_arch};
use crate::digest::DiffId;

/// The `/hello` binary.
pub(crate) const HELLO_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello"));

/// Fixed creation time, so the image ID is the same in every store.
const CREATED: &str = "2026-01-01T00:00:00Z";
/// Fixed mtime of `/hello` (the same instant).
const MTIME: u64 = 1_767_225_600;

/// The layer tar: one file `hello`, mode 0755, owned by root, fixed mtime.
pub(crate) fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("hello").expect("static path");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(HELLO_BINARY.len() as u64);
    h.set_cksum();
    b.append(&h, HELLO_BINARY).expect("in-memory tar");
    b.into_inner().expect("in-memory tar")
}

/// The image config, given the layer's diff ID.
pub(crate) fn config(diff_id: DiffId) -> ImageConfig {
    ImageConfig {
        architecture: go_arch().to_string(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cmd: Some(vec!["/hello".into()]),
            ..Default::default()
        }),
        created: Some(CREATED.into()),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        history: vec![
            History {
                created: Some(CREATED.into()),
                created_by: Some("COPY hello / # berth built-in".into()),
                ..Default::default()
            },
            History {
                created: Some(CREATED.into()),
                created_by: Some("CMD [\"/hello\"]".into()),
                empty_layer: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}
