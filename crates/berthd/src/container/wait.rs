//! Watching containers end (one task per running container) and `POST /containers/{id}/wait`.

use std::sync::Arc;

use serde::Deserialize;
use tokio::net::UnixStream;

use super::Ctr;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shim;

/// `exit.json` as the shim writes it.
#[derive(Debug, Deserialize)]
struct ExitFile {
    exit_code: i64,
    #[serde(default)]
    oom_killed: bool,
    #[serde(default)]
    finished_at: Option<String>,
}

/// How a container ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Exit code.
    pub code: i64,
    /// OOM killed.
    pub oom: bool,
    /// When (RFC3339Nano).
    pub finished_at: String,
    /// A problem to record in `State.Error`.
    pub error: String,
}

fn read_exit_file(d: &Daemon, id: &str) -> Option<Exit> {
    let data = std::fs::read(d.paths(id).exit_file()).ok()?;
    let f: ExitFile = serde_json::from_slice(&data).ok()?;
    Some(Exit {
        code: f.exit_code,
        oom: f.oom_killed,
        finished_at: f.finished_at.unwrap_or_else(crate::util::now_rfc3339),
        error: String::new(),
    })
}

/// Waits on the shim's answer to `wait` (or on exit.json when the shim is gone) and records the exit.
pub async fn watch_exit(d: Arc<Daemon>, c: Arc<Ctr>, conn: Option<UnixStream>) {
    let answer = match conn {
        Some(mut s) => shim::read_answer(&mut s).await.ok(),
        None => None,
    };
    let exit = match answer {
        Some(v) => Exit {
            code: v.get("exit_code").and_then(|x| x.as_i64()).unwrap_or(255),
            oom: v
                .get("oom_killed")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            finished_at: read_exit_file(&d, &c.id)
                .map(|e| e.finished_at)
                .unwrap_or_else(crate::util::now_rfc3339),
            error: String::new(),
        },
        None => exit_without_shim(&d, &c.id).await,
    };
    on_exit(&d, &c, exit).await;
}

async fn exit_without_shim(d: &Daemon, id: &str) -> Exit {
    // The shim writes exit.json before it closes; give a dying shim a moment.
    for _ in 0..20 {
        if let Some(e) = read_exit_file(d, id) {
            return e;
        }
        if shim::call(&d.paths(id).shim_sock(), serde_json::json!({"op":"state"}))
            .await
            .is_ok()
        {
            // Alive after all: wait properly.
            if let Ok(mut s) = super::start::open_wait(&d.paths(id).shim_sock()).await {
                if let Ok(v) = shim::read_answer(&mut s).await {
                    return Exit {
                        code: v.get("exit_code").and_then(|x| x.as_i64()).unwrap_or(255),
                        oom: v
                            .get("oom_killed")
                            .and_then(|x| x.as_bool())
                            .unwrap_or(false),
                        finished_at: crate::util::now_rfc3339(),
                        error: String::new(),
                    };
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Exit {
        code: 255,
        oom: false,
        finished_at: crate::util::now_rfc3339(),
        error: "container's shim exited without recording an exit status".into(),
    }
}

/// Records an exit: state, unmount, waiters, auto-remove.
pub async fn on_exit(d: &Arc<Daemon>, c: &Arc<Ctr>, exit: Exit) {
    let _op = c.op.lock().await;
    if !c.snapshot().state.running {
        return;
    }
    c.update(|r| {
        if let Some(h) = r.state.health.as_mut() {
            h["Status"] = serde_json::json!("unhealthy");
        }
        r.state.status = "exited".into();
        r.state.running = false;
        r.state.paused = false;
        r.state.pid = 0;
        r.state.exit_code = exit.code;
        r.state.oom_killed = exit.oom;
        r.state.finished_at = exit.finished_at.clone();
        r.state.error = exit.error.clone();
    });
    crate::networks::on_stop(d, c).await;
    if let Err(e) = d.save_state(c) {
        tracing::error!(id = %c.id, "saving state: {e}");
    }
    super::start::unmount_rootfs(&d.paths(&c.id).rootfs()).await;
    c.notify(true);
    let snap = c.snapshot();
    if exit.oom {
        d.events.container(&snap, "oom", &[]);
    }
    d.events
        .container(&snap, "die", &[("exitCode", exit.code.to_string())]);
    tracing::info!(id = %c.id, code = exit.code, "container exited");
    let rec = c.snapshot();
    if rec.host_config.auto_remove {
        if let Err(e) = super::delete::remove_locked(d, c, true).await {
            tracing::error!(id = %c.id, "auto-remove: {e}");
        }
    } else {
        super::restart::schedule_after_exit(d, c);
    }
}

/// Whether the restart policy asks for another run after this exit.
pub fn should_restart(rec: &super::Record) -> bool {
    let p = &rec.host_config.restart_policy;
    if rec.has_been_manually_stopped {
        return false;
    }
    match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            rec.state.exit_code != 0
                && (p.maximum_retry_count <= 0 || rec.restart_count < p.maximum_retry_count)
        }
        _ => false,
    }
}

/// After a daemon restart: reconnect to a running container's shim, or record its exit.
pub async fn adopt(d: Arc<Daemon>, c: Arc<Ctr>) {
    let sock = d.paths(&c.id).shim_sock();
    match super::start::open_wait(&sock).await {
        Ok(s) => {
            tracing::info!(id = %c.id, "adopted running container");
            tokio::spawn(watch_exit(d, c, Some(s)));
        }
        Err(_) => {
            let exit = exit_without_shim(&d, &c.id).await;
            on_exit(&d, &c, exit).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Record;

    #[test]
    fn restart_policies() {
        let mut r = Record::default();
        assert!(!should_restart(&r));
        r.host_config.restart_policy.name = "always".into();
        assert!(should_restart(&r));
        r.has_been_manually_stopped = true;
        assert!(!should_restart(&r));
        r.has_been_manually_stopped = false;
        r.host_config.restart_policy.name = "on-failure".into();
        r.host_config.restart_policy.maximum_retry_count = 2;
        assert!(!should_restart(&r));
        r.state.exit_code = 1;
        assert!(should_restart(&r));
        r.restart_count = 2;
        assert!(!should_restart(&r));
    }
}

/// A wait condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `not-running` (the default).
    NotRunning,
    /// `next-exit`.
    NextExit,
    /// `removed`.
    Removed,
}

impl Condition {
    /// Parses the `condition` parameter.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s.unwrap_or("") {
            "" | "not-running" => Ok(Condition::NotRunning),
            "next-exit" => Ok(Condition::NextExit),
            "removed" => Ok(Condition::Removed),
            other => Err(Error::invalid(format!("invalid condition: \"{other}\""))),
        }
    }
}

/// Waits until the condition holds; returns the exit code.
pub async fn wait(c: &Arc<Ctr>, cond: Condition) -> i64 {
    let mut rx = c.events.subscribe();
    let start = *rx.borrow_and_update();
    loop {
        let s = *rx.borrow_and_update();
        let done = match cond {
            Condition::NotRunning => !s.running,
            Condition::NextExit => s.exits > start.exits,
            Condition::Removed => s.removed,
        };
        if done {
            return s.exit_code;
        }
        if rx.changed().await.is_err() {
            return rx.borrow().exit_code;
        }
    }
}
