//! `HostConfig.VolumesFrom`: another container's volumes and binds, resolved into binds at create.

use std::sync::Arc;

use serde_json::Value;

use crate::container::Record;
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// Adds the mounts of every `container[:ro|:rw]` in `VolumesFrom` to `rec`'s binds (a mode given
/// overrides theirs; without one each keeps its own, as dockerd does). Tmpfs mounts are not shared.
pub fn expand(d: &Arc<Daemon>, rec: &mut Record) -> Result<()> {
    let Some(Value::Array(from)) = rec.host_config.extra.get("VolumesFrom").cloned() else {
        return Ok(());
    };
    let vr = d.settings.data_root.join("volumes");
    for f in from.iter().filter_map(Value::as_str) {
        let (name, mode) = match f.rsplit_once(':') {
            Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m)),
            Some((_, m)) => {
                return Err(Error::invalid(format!("invalid mode: {m}")));
            }
            None => (f, None),
        };
        let other = d.find(name)?.snapshot();
        if other.id == rec.id {
            continue;
        }
        for m in crate::container::spec::user_mounts(&other, &vr)? {
            if m.kind == "tmpfs" {
                continue;
            }
            let ro = match mode {
                Some(m) => m == "ro",
                None => m.options.iter().any(|o| o == "ro"),
            };
            let src = m.volume.clone().unwrap_or(m.source.clone());
            let dst = &m.destination;
            let taken = rec
                .host_config
                .binds
                .iter()
                .any(|b| b.split(':').nth(1) == Some(dst.as_str()));
            if !taken {
                let suffix = if ro { ":ro" } else { "" };
                rec.host_config.binds.push(format!("{src}:{dst}{suffix}"));
            }
        }
    }
    Ok(())
}
