//! Restart policies as dockerd's restart manager runs them: a back-off that starts at 100 ms,
//! doubles at each restart up to one minute, and goes back to 100 ms once a run lasted 10 s;
//! `restarting` state and `RestartCount` between exit and the next start; pending restarts kept
//! in the record, so a daemon restart carries them out (once) instead of losing them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{Ctr, Record};
use crate::daemon::Daemon;
use crate::error::Result;

/// The first delay.
pub const INITIAL: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// One container's back-off, the generation that cancels pending restarts, and whether the
/// policy is suspended until a user's start (a forced removal under way, as dockerd's
/// "exit on next").
#[derive(Debug, Default)]
pub struct Backoff {
    timeout_ms: AtomicU64,
    generation: AtomicU64,
    suspended: AtomicBool,
}

/// The delay after `prev` (zero before the first restart) for a run that lasted `ran`.
pub fn next_delay(prev: Duration, ran: Duration) -> Duration {
    let prev = if ran >= RESET_AFTER {
        Duration::ZERO
    } else {
        prev
    };
    let t = if prev.is_zero() {
        INITIAL
    } else if prev < MAX {
        prev * 2
    } else {
        prev
    };
    t.min(MAX)
}

impl Backoff {
    /// Advances the back-off for a run that lasted `ran` and returns the delay to wait.
    pub fn next(&self, ran: Duration) -> Duration {
        let prev = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let d = next_delay(prev, ran);
        self.timeout_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
        d
    }

    /// Forgets the back-off (a user's start or restart) and cancels pending restarts.
    pub fn reset(&self) {
        self.timeout_ms.store(0, Ordering::Relaxed);
        self.suspended.store(false, Ordering::SeqCst);
        self.cancel();
    }

    /// Cancels pending restarts and schedules none until the next user's start: the next exit
    /// is final (`rm -f`).
    pub fn exit_on_next(&self) {
        self.suspended.store(true, Ordering::SeqCst);
        self.cancel();
    }

    fn suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// Cancels pending restarts.
    pub fn cancel(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

fn run_time(rec: &Record) -> Duration {
    match (
        crate::util::parse_time(&rec.state.started_at),
        crate::util::parse_time(&rec.state.finished_at),
    ) {
        (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// After an exit has been recorded (op lock held): if the policy wants another run, marks the
/// container `restarting`, counts the restart and schedules it. True when scheduled.
pub fn schedule_after_exit(d: &Arc<Daemon>, c: &Arc<Ctr>) -> bool {
    let rec = c.snapshot();
    if c.restart.suspended() || !super::wait::should_restart(&rec) {
        return false;
    }
    let delay = c.restart.next(run_time(&rec));
    c.update(|r| {
        r.restart_count += 1;
        r.state.restarting = true;
        r.state.status = "restarting".into();
    });
    if let Err(e) = d.save(c) {
        tracing::error!(id = %c.id, "saving state: {e}");
    }
    spawn_pending(d.clone(), c.clone(), delay);
    true
}

/// Starts the container after `delay` unless the restart was cancelled meanwhile.
fn spawn_pending(d: Arc<Daemon>, c: Arc<Ctr>, delay: Duration) {
    let generation = c.restart.generation();
    tracing::info!(id = %c.id, "restarting in {delay:?}");
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        // Checked again under the op lock: a cancel may come while the start waits for it.
        let wanted = move |c: &Ctr| {
            let r = c.snapshot();
            c.restart.generation() == generation
                && !c.restart.suspended()
                && !c.events.borrow().removed
                && r.state.restarting
                && !r.state.running
        };
        if !wanted(&c) {
            return;
        }
        if let Err(e) = super::start::start_boxed(d.clone(), c.clone(), wanted).await {
            tracing::warn!(id = %c.id, "restart failed: {e}");
            c.update(|r| {
                r.state.restarting = false;
                if !r.state.running {
                    r.state.status = "exited".into();
                }
            });
            let _ = d.save(&c);
            c.notify(false);
        }
    });
}

/// `stop`/`kill` of a restarting container: the pending restart is cancelled and the container
/// stays exited. True when there was one.
pub async fn cancel(d: &Arc<Daemon>, c: &Arc<Ctr>) -> bool {
    let _op = c.op.lock().await;
    if !c.snapshot().state.restarting {
        return false;
    }
    c.restart.cancel();
    c.update(|r| {
        r.state.restarting = false;
        r.state.status = "exited".into();
        r.has_been_manually_stopped = true;
    });
    let _ = d.save(c);
    c.notify(false);
    true
}

/// A start asked by a user (`start`, `restart`): as dockerd, it resets the restart manager
/// (`RestartCount` 0, back-off from 100 ms) and cancels a pending restart.
pub async fn user_start(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<()> {
    c.restart.reset();
    let was = c.update(|r| {
        let was = r.restart_count;
        if !r.state.running {
            r.restart_count = 0;
        }
        was
    });
    let res = super::start::start(d, c).await;
    if res.is_err() {
        c.update(|r| {
            if !r.state.running && r.restart_count == 0 {
                r.restart_count = was;
            }
        });
    }
    res
}

/// Whether a stopped container comes back when the daemon starts (dockerd's restore): `always`
/// even after a manual stop, `unless-stopped` unless stopped by the user, `on-failure` after a
/// failure within its retries. Containers never started stay created.
pub fn wants_start_at_boot(r: &Record) -> bool {
    if r.state.running || crate::util::parse_time(&r.state.started_at).is_none() {
        return false;
    }
    let p = &r.host_config.restart_policy;
    match p.name.as_str() {
        "always" => true,
        "unless-stopped" => !r.has_been_manually_stopped,
        "on-failure" => {
            !r.has_been_manually_stopped
                && r.state.exit_code != 0
                && (p.maximum_retry_count <= 0 || r.restart_count < p.maximum_retry_count)
        }
        _ => false,
    }
}

/// At daemon start, once running containers are adopted: carries out restarts that were
/// pending when the daemon stopped and starts the containers whose policy asks for it.
pub fn on_daemon_start(d: &Arc<Daemon>, all: &[Arc<Ctr>]) {
    for c in all {
        let r = c.snapshot();
        if r.state.running || c.events.borrow().removed {
            continue;
        }
        if r.state.restarting {
            spawn_pending(d.clone(), c.clone(), Duration::ZERO);
        } else if wants_start_at_boot(&r) {
            c.update(|r| {
                r.state.restarting = true;
                r.state.status = "restarting".into();
            });
            spawn_pending(d.clone(), c.clone(), Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::default();
        let short = Duration::from_millis(50);
        let ms: Vec<u128> = (0..4).map(|_| b.next(short).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800]);
        assert_eq!(b.next(Duration::from_secs(10)).as_millis(), 100);
        assert_eq!(next_delay(Duration::from_secs(40), short), MAX);
        assert_eq!(next_delay(MAX, short), MAX);
        b.reset();
        assert_eq!(b.next(short).as_millis(), 100);
    }

    #[test]
    fn boot_policy() {
        let mut r = Record::default();
        r.state.started_at = "2024-01-01T00:00:00Z".into();
        r.host_config.restart_policy.name = "always".into();
        assert!(wants_start_at_boot(&r));
        r.has_been_manually_stopped = true;
        assert!(wants_start_at_boot(&r));
        r.host_config.restart_policy.name = "unless-stopped".into();
        assert!(!wants_start_at_boot(&r));
        r.has_been_manually_stopped = false;
        assert!(wants_start_at_boot(&r));
        r.host_config.restart_policy.name = "on-failure".into();
        assert!(!wants_start_at_boot(&r));
        r.state.exit_code = 3;
        assert!(wants_start_at_boot(&r));
        r.state.started_at = berth_api::container::ZERO_TIME.into();
        assert!(!wants_start_at_boot(&r));
    }
}
