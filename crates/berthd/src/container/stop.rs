//! `kill`, `stop`, `restart` and `resize`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::Ctr;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shim::{self, ShimError};

fn not_running(id: &str) -> Error {
    Error::Conflict(format!("Container {id} is not running"))
}

/// Sends a signal to a running container's process (`POST /kill`).
pub async fn kill(d: &Arc<Daemon>, c: &Arc<Ctr>, signal: i32) -> Result<()> {
    if !c.snapshot().state.running {
        // Between two runs of a restart policy: the kill ends the restart loop.
        if super::restart::cancel(d, c).await {
            d.events
                .container(&c.snapshot(), "kill", &[("signal", signal.to_string())]);
            return Ok(());
        }
        return Err(not_running(&c.id));
    }
    if signal == 9 || signal == 15 {
        c.update(|r| r.has_been_manually_stopped = true);
    }
    if signal == 9 || signal == 15 {
        super::top::thaw_if_paused(d, c).await?;
    }
    match shim::call(
        &d.paths(&c.id).shim_sock(),
        json!({"op":"kill","signal":signal,"all":false}),
    )
    .await
    {
        Ok(_) => {
            d.events
                .container(&c.snapshot(), "kill", &[("signal", signal.to_string())]);
            Ok(())
        }
        Err(ShimError::Connect { .. }) => Err(not_running(&c.id)),
        // The process ended between our look and the signal: its exit is being recorded, and
        // the signal's purpose is met (a restart policy may already run it again; callers that
        // need it stopped look again).
        Err(ShimError::Refused(m)) if m.contains("ESRCH") || m.contains("not running") => {
            wait_stopped(c, Duration::from_secs(5)).await;
            Ok(())
        }
        // A shim that breaks the connection off (EPIPE, EOF) is exiting with its process: as
        // above, wait a little for the exit to be recorded before calling it a failure.
        Err(e) => {
            if matches!(e, ShimError::Protocol(_)) {
                wait_stopped(c, Duration::from_secs(2)).await;
            }
            if c.snapshot().state.running {
                Err(Error::internal(format!(
                    "Cannot kill container: {}: {e}",
                    c.id
                )))
            } else {
                Err(not_running(&c.id))
            }
        }
    }
}

/// Waits until the container is not running, at most `timeout`; true when it stopped.
pub async fn wait_stopped(c: &Arc<Ctr>, timeout: Duration) -> bool {
    let mut rx = c.events.subscribe();
    let fut = async {
        loop {
            if !rx.borrow_and_update().running {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.is_ok()
}

/// Kills with `signal` and waits for the exit to be recorded.
pub async fn kill_and_wait(d: &Arc<Daemon>, c: &Arc<Ctr>, signal: i32, t: Duration) -> Result<()> {
    match kill(d, c, signal).await {
        Ok(()) => {}
        Err(Error::Conflict(_)) if !c.snapshot().state.running => return Ok(()),
        // The shim is gone but the exit is not recorded yet: wait for it below.
        Err(Error::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    if wait_stopped(c, t).await {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "container {} did not exit after signal {signal}",
            c.id
        )))
    }
}

/// Stops a container: its stop signal, then SIGKILL after the timeout (`POST /stop`).
pub async fn stop(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    timeout: Option<i64>,
    signal: Option<&str>,
) -> Result<()> {
    let rec = c.snapshot();
    if !rec.state.running {
        if super::restart::cancel(d, c).await {
            d.events.container(&c.snapshot(), "stop", &[]);
            return Ok(());
        }
        return Err(Error::NotModified("container already stopped".into()));
    }
    let sig = match signal.filter(|s| !s.is_empty()) {
        Some(s) => crate::signal::parse(s)?,
        None => match rec.config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => crate::signal::parse(s)?,
            None => 15,
        },
    };
    let t = timeout.or(rec.config.stop_timeout).unwrap_or(10);
    c.update(|r| r.has_been_manually_stopped = true);
    super::top::thaw_if_paused(d, c).await?;
    if t != 0 {
        match kill(d, c, sig).await {
            Ok(()) => {}
            Err(Error::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        let wait = if t < 0 {
            Duration::from_secs(u64::MAX / 4)
        } else {
            Duration::from_secs(t as u64)
        };
        if wait_stopped(c, wait).await {
            d.events.container(&c.snapshot(), "stop", &[]);
            return Ok(());
        }
        tracing::info!(id = %c.id, "container did not stop after {t}s, killing it");
    }
    kill_and_wait(d, c, 9, Duration::from_secs(30)).await?;
    d.events.container(&c.snapshot(), "stop", &[]);
    Ok(())
}

/// Restarts a container (`POST /restart`).
pub async fn restart(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    timeout: Option<i64>,
    signal: Option<&str>,
) -> Result<()> {
    match stop(d, c, timeout, signal).await {
        Ok(()) | Err(Error::NotModified(_)) => {}
        Err(e) => return Err(e),
    }
    super::restart::user_start(d, c).await?;
    d.events.container(&c.snapshot(), "restart", &[]);
    Ok(())
}

/// Resizes the TTY (`POST /resize`).
pub async fn resize(d: &Arc<Daemon>, c: &Arc<Ctr>, h: i64, w: i64) -> Result<()> {
    if !c.snapshot().state.running {
        return Err(not_running(&c.id));
    }
    shim::call(
        &d.paths(&c.id).shim_sock(),
        json!({"op":"resize","width":w,"height":h}),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::internal(format!("resize: {e}")))
}
