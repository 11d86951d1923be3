//! Health checks (`HEALTHCHECK` / `--health-*`): a probe run through the shim's `exec` at each
//! interval while the container runs; `State.Health` and `health_status` events as Docker keeps them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::Ctr;
use crate::daemon::Daemon;
use crate::shim;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
const MAX_OUTPUT: usize = 4096;
const MAX_LOG: usize = 5;

/// A parsed health check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The probe's argv.
    pub argv: Vec<String>,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Grace period after start in which failures do not count.
    pub start_period: Duration,
    /// Time between probes during the start period.
    pub start_interval: Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: i64,
}

fn dur(v: &Value, default: Duration) -> Duration {
    match v.as_i64() {
        Some(ns) if ns > 0 => Duration::from_nanos(ns as u64),
        _ => default,
    }
}

/// Parses `Config.Healthcheck`; `None` when absent, empty or `NONE`.
pub fn parse(hc: Option<&Value>) -> Option<Check> {
    let hc = hc?;
    let test: Vec<String> = hc["Test"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let argv = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        _ => return None,
    };
    if argv.is_empty() {
        return None;
    }
    Some(Check {
        argv,
        interval: dur(&hc["Interval"], DEFAULT_INTERVAL),
        timeout: dur(&hc["Timeout"], DEFAULT_TIMEOUT),
        start_period: dur(&hc["StartPeriod"], Duration::ZERO),
        start_interval: dur(&hc["StartInterval"], DEFAULT_START_INTERVAL),
        retries: hc["Retries"]
            .as_i64()
            .filter(|r| *r > 0)
            .unwrap_or(DEFAULT_RETRIES),
    })
}

/// Runs one probe; returns its exit code (-1 on timeout or failure to run) and output.
async fn probe(d: &Daemon, c: &Ctr, check: &Check) -> (i64, String) {
    let p = d.paths(&c.id);
    let spec: Option<Value> = std::fs::read(p.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(spec) = spec else {
        return (-1, "cannot read the container's runtime spec".into());
    };
    let mut proc = spec["process"].clone();
    proc["args"] = json!(check.argv);
    proc["terminal"] = json!(false);
    if let Some(o) = proc.as_object_mut() {
        o.remove("consoleSize");
    }
    let id = format!("health-{}", crate::util::random_hex(8));
    let req = json!({"op":"exec","id":id,"process":proc,"stdin":false,"stdout":true,"stderr":true});
    let sock = p.shim_sock();
    let run = async {
        let (_, mut conn) = match shim::request(&sock, &req).await {
            Ok(x) => x,
            Err(e) => return (-1, e.to_string()),
        };
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if raw.len() < 64 * 1024 {
                raw.extend_from_slice(&buf[..n]);
            }
        }
        let mut dm = berth_api::stdcopy::Demuxer::default();
        dm.feed(&raw);
        let mut out = Vec::new();
        while let Ok(Some((_, data))) = dm.next_frame() {
            out.extend_from_slice(&data);
        }
        out.truncate(MAX_OUTPUT);
        let code = match shim::call(&sock, json!({"op":"exec-state","id":id})).await {
            Ok(v) => v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1),
            Err(_) => -1,
        };
        (code, String::from_utf8_lossy(&out).into_owned())
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok(r) => r,
        Err(_) => (
            -1,
            format!(
                "Health check exceeded timeout ({}s)",
                check.timeout.as_secs_f64()
            ),
        ),
    }
}

/// The health part of `docker ps`'s status: ` (healthy)`, ` (health: starting)`, ` (unhealthy)`.
pub fn status_suffix(health: Option<&Value>) -> String {
    match health.and_then(|h| h["Status"].as_str()) {
        Some("starting") => " (health: starting)".into(),
        Some(s) if !s.is_empty() && s != "none" => format!(" ({s})"),
        _ => String::new(),
    }
}

/// Starts the health monitor of a container that just started (no-op without a check).
pub fn monitor(d: Arc<Daemon>, c: Arc<Ctr>) {
    let rec = c.snapshot();
    let Some(check) = parse(rec.config.healthcheck.as_ref()) else {
        return;
    };
    c.update(|r| {
        r.state.health = Some(json!({"Status": "starting", "FailingStreak": 0, "Log": []}));
    });
    let started = std::time::Instant::now();
    let exits = c.events.borrow().exits;
    tokio::spawn(async move {
        let mut rx = c.events.subscribe();
        loop {
            let in_start = started.elapsed() < check.start_period;
            let wait = if in_start {
                check.start_interval
            } else {
                check.interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = rx.changed() => {
                    if r.is_err() { return; }
                    let s = *rx.borrow_and_update();
                    if s.exits != exits || !s.running || s.removed { return; }
                    continue;
                }
            }
            {
                let s = *c.events.borrow();
                if s.exits != exits || !s.running || s.removed {
                    return;
                }
            }
            if c.snapshot().state.paused {
                continue;
            }
            let start = crate::util::now_rfc3339();
            let (code, output) = probe(&d, &c, &check).await;
            let end = crate::util::now_rfc3339();
            let in_start = started.elapsed() < check.start_period;
            let changed = c.update(|r| {
                let h = r.state.health.get_or_insert_with(
                    || json!({"Status": "starting", "FailingStreak": 0, "Log": []}),
                );
                let old = h["Status"].as_str().unwrap_or("").to_string();
                let mut streak = h["FailingStreak"].as_i64().unwrap_or(0);
                if code == 0 {
                    streak = 0;
                    h["Status"] = json!("healthy");
                } else if !in_start || old != "starting" {
                    streak += 1;
                    if streak >= check.retries {
                        h["Status"] = json!("unhealthy");
                    }
                }
                h["FailingStreak"] = json!(streak);
                if let Some(log) = h["Log"].as_array_mut() {
                    log.push(
                        json!({"Start": start, "End": end, "ExitCode": code, "Output": output}),
                    );
                    let extra = log.len().saturating_sub(MAX_LOG);
                    log.drain(..extra);
                } else {
                    h["Log"] =
                        json!([{"Start": start, "End": end, "ExitCode": code, "Output": output}]);
                }
                let new = h["Status"].as_str().unwrap_or("").to_string();
                (old != new).then_some(new)
            });
            let _ = d.save(&c);
            if let Some(status) = changed {
                d.events
                    .container(&c.snapshot(), &format!("health_status: {status}"), &[]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let v = json!({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 1_000_000_000i64, "Retries": 2});
        let c = parse(Some(&v)).unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.retries, 2);
        let v = json!({"Test": ["CMD", "true"]});
        assert_eq!(parse(Some(&v)).unwrap().argv, ["true"]);
        assert!(parse(Some(&json!({"Test": ["NONE"]}))).is_none());
        assert!(parse(None).is_none());
        assert_eq!(
            status_suffix(Some(&json!({"Status": "healthy"}))),
            " (healthy)"
        );
        assert_eq!(
            status_suffix(Some(&json!({"Status": "starting"}))),
            " (health: starting)"
        );
        assert_eq!(status_suffix(None), "");
    }
}
