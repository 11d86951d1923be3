//! `DELETE /containers/{id}`.

use std::sync::Arc;
use std::time::Duration;

use super::Ctr;
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// Removes a container; a running one only with `force` (killed first).
pub async fn remove(d: &Arc<Daemon>, c: &Arc<Ctr>, force: bool, volumes: bool) -> Result<()> {
    let running_err = |name: &str| {
        Error::Conflict(format!(
            "cannot remove container \"{name}\": container is running: stop the container before removing or force remove"
        ))
    };
    if force {
        // From here no exit is followed by a restart by policy (dockerd's "exit on next").
        c.restart.exit_on_next();
    }
    if c.snapshot().state.restarting {
        if !force {
            return Err(Error::Conflict(format!(
                "cannot remove container \"{}\": container is restarting: stop the container before removing or force remove",
                c.snapshot().name
            )));
        }
        super::restart::cancel(d, c).await;
    }
    // A start may be under way (it holds the op lock): kill and look again, a few times.
    for _ in 0..5 {
        let rec = c.snapshot();
        if rec.state.running {
            if !force {
                return Err(running_err(&rec.name));
            }
            match super::stop::kill_and_wait(d, c, 9, Duration::from_secs(10)).await {
                // It ended by itself between the look and the kill: look again.
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            // An exit just now may have queued a restart by policy; removal ends it.
            super::restart::cancel(d, c).await;
        }
        let _op = c.op.lock().await;
        if c.events.borrow().removed {
            return Ok(());
        }
        if !c.snapshot().state.running {
            return remove_locked(d, c, volumes).await;
        }
    }
    Err(running_err(&c.snapshot().name))
}

/// Removes a stopped container's mounts, layer, files and record (and with `volumes` its
/// anonymous volumes); the caller holds the op lock.
pub async fn remove_locked(d: &Arc<Daemon>, c: &Arc<Ctr>, volumes: bool) -> Result<()> {
    if c.events.borrow().removed {
        return Ok(());
    }
    c.update(|r| r.state.status = "removing".into());
    let mut ph = crate::util::Phases::new();
    let p = d.paths(&c.id);
    crate::networks::on_stop(d, c).await;
    ph.mark("network");
    super::start::unmount_rootfs(&p.rootfs()).await;
    ph.mark("unmount");
    d.images.remove_layer(&c.id).await?;
    ph.mark("layer");
    // The container's directories are renamed into the trash (so that neither this daemon nor
    // the next one sees them again) and deleted after the removal is reported: a `run --rm`
    // client waits for the removal.
    let mut doomed = Vec::new();
    for (dir, trash) in [(&p.bundle, d.trash_exec()), (&p.data, d.trash_data())] {
        let to = trash.join(&c.id);
        match std::fs::rename(dir, &to) {
            Ok(()) => doomed.push(to),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => doomed.push(dir.clone()),
        }
    }
    ph.mark("files");
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || {
        let _ = berth_runtime::delete_cgroups(&format!("/berth/{id}"));
        for dir in doomed {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("remove {}: {e}", dir.display());
                }
            }
        }
    });
    ph.log("remove", &c.id);
    d.registry.lock().expect("registry").remove(&c.id);
    d.execs
        .lock()
        .expect("execs")
        .retain(|_, e| e.container_id != c.id);
    c.events.send_modify(|s| s.removed = true);
    d.events.container(&c.snapshot(), "destroy", &[]);
    if volumes {
        let anon: Vec<String> = c
            .snapshot()
            .host_config
            .extra
            .get(super::spec::ANON_KEY)
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.values()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for name in anon {
            if let Err(e) = crate::volumes::remove(d, &name, true) {
                tracing::warn!("removing anonymous volume {name}: {e}");
            }
        }
    }
    tracing::info!(id = %c.id, "container removed");
    Ok(())
}
