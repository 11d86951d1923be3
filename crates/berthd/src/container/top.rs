//! `pause`/`unpause` (cgroup freezer), `top` (processes of the container's cgroup) and `stats`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Ctr;
use crate::daemon::Daemon;
use crate::error::{Error, Result};

fn cgroup_path(id: &str) -> String {
    format!("/berth/{id}")
}

async fn freeze_cgroup(id: &str, frozen: bool) -> Result<()> {
    let path = cgroup_path(id);
    tokio::task::spawn_blocking(move || berth_runtime::cgroups::detect(&path).freeze(frozen))
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Error::internal(format!("freezer: {e}")))
}

/// Freezes or thaws through the shim's `pause`/`resume`, so the shim's own state (and its
/// answer to `state` after a daemon restart) says paused; the cgroup directly only when the
/// shim cannot be reached.
async fn freeze(d: &Daemon, id: &str, frozen: bool) -> Result<()> {
    let op = if frozen { "pause" } else { "resume" };
    match crate::shim::call(&d.paths(id).shim_sock(), json!({ "op": op })).await {
        Ok(_) => Ok(()),
        // Already in the wanted state (e.g. a record written before pause went through the shim).
        Err(crate::shim::ShimError::Refused(m))
            if m.contains("already paused") || m.contains("not paused") =>
        {
            Ok(())
        }
        Err(crate::shim::ShimError::Refused(m)) => Err(Error::Conflict(m)),
        Err(e) => {
            tracing::warn!(
                id,
                "shim unreachable for {op} ({e}); using the freezer directly"
            );
            freeze_cgroup(id, frozen).await
        }
    }
}

/// `POST /containers/{id}/pause`.
pub async fn pause(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<()> {
    let _op = c.op.lock().await;
    let rec = c.snapshot();
    if !rec.state.running {
        return Err(Error::Conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    if rec.state.paused {
        return Err(Error::Conflict(format!(
            "Container {} is already paused",
            rec.id
        )));
    }
    freeze(d, &rec.id, true).await?;
    c.update(|r| {
        r.state.paused = true;
        r.state.status = "paused".into();
    });
    d.save(c)?;
    d.events.container(&c.snapshot(), "pause", &[]);
    Ok(())
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<()> {
    let _op = c.op.lock().await;
    let rec = c.snapshot();
    if !rec.state.paused {
        return Err(Error::Conflict(format!(
            "Container {} is not paused",
            rec.id
        )));
    }
    thaw_locked(d, c).await?;
    d.events.container(&c.snapshot(), "unpause", &[]);
    Ok(())
}

/// Thaws a paused container (before signals, which a frozen process would not act on).
pub async fn thaw_if_paused(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<()> {
    if !c.snapshot().state.paused {
        return Ok(());
    }
    let _op = c.op.lock().await;
    if c.snapshot().state.paused {
        thaw_locked(d, c).await?;
    }
    Ok(())
}

async fn thaw_locked(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<()> {
    freeze(d, &c.id, false).await?;
    c.update(|r| {
        r.state.paused = false;
        if r.state.running {
            r.state.status = "running".into();
        }
    });
    d.save(c)
}

fn proc_row(pid: i32, clk: u64, boot: u64) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.to_string();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0")
        .to_string();
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("[{}]", stat.split(['(', ')']).nth(1).unwrap_or("")));
    let cpu = (utime + stime) / clk.max(1);
    let time = format!("{:02}:{:02}:{:02}", cpu / 3600, (cpu / 60) % 60, cpu % 60);
    let started = chrono::DateTime::from_timestamp((boot + start / clk.max(1)) as i64, 0)
        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M").to_string())
        .unwrap_or_default();
    Some(vec![
        uid,
        pid.to_string(),
        ppid,
        "0".into(),
        started,
        "?".into(),
        time,
        cmd,
    ])
}

/// `GET /containers/{id}/top`: the processes in the container's cgroup, in `ps -ef` columns.
pub async fn top(c: &Arc<Ctr>) -> Result<Value> {
    let rec = c.snapshot();
    if !rec.state.running {
        return Err(Error::Conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    let path = cgroup_path(&rec.id);
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<String>>> {
        let mut pids = berth_runtime::cgroups::detect(&path)
            .pids()
            .map_err(|e| Error::internal(format!("listing processes: {e}")))?;
        pids.sort_unstable();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("btime"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0);
        Ok(pids
            .into_iter()
            .filter_map(|p| proc_row(p, 100, boot))
            .collect())
    })
    .await
    .map_err(|e| Error::internal(e.to_string()))??;
    Ok(json!({
        "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "Processes": rows,
    }))
}

fn system_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let l = s.lines().next()?.to_string();
            Some(
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse::<u64>().ok())
                    .sum::<u64>()
                    * 10_000_000,
            )
        })
        .unwrap_or(0)
}

fn host_mem() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

async fn sample(id: &str, running: bool) -> Value {
    let path = cgroup_path(id);
    let st = if running {
        tokio::task::spawn_blocking(move || berth_runtime::cgroups::detect(&path).stats())
            .await
            .unwrap_or_default()
    } else {
        berth_runtime::cgroups::Stats::default()
    };
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let limit = if st.memory_limit == 0 || st.memory_limit >= (1 << 62) {
        host_mem()
    } else {
        st.memory_limit
    };
    json!({
        "read": crate::util::now_rfc3339(),
        "pids_stats": {"current": st.pids_current, "limit": if st.pids_limit == 0 { Value::Null } else { json!(st.pids_limit) }},
        "cpu_stats": {
            "cpu_usage": {"total_usage": st.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system_cpu_ns(),
            "online_cpus": ncpu,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        },
        "memory_stats": {
            "usage": st.memory_usage,
            "limit": limit,
            "stats": {"inactive_file": st.memory_inactive_file}
        },
        "blkio_stats": {
            "io_service_bytes_recursive": st.io_service_bytes,
            "io_serviced_recursive": st.io_serviced,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null
        },
        "networks": {},
    })
}

/// The container's interfaces (but `lo`) from `/proc/<pid>/net/dev`, which shows the network
/// namespace of that process, in the shape of the Engine API's `networks`.
fn net_stats(pid: i64) -> Option<Value> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut out = serde_json::Map::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            json!({"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                   "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11]}),
        );
    }
    Some(Value::Object(out))
}

/// `GET /containers/{id}/stats`: one sample (`stream=false`) or one per second.
pub async fn stats(c: Arc<Ctr>, stream: bool, one_shot: bool, tx: mpsc::Sender<Bytes>) {
    let rec = c.snapshot();
    let name = rec.name.clone();
    let mut pre = json!({"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0});
    let mut pre_read = berth_api::container::ZERO_TIME.to_string();
    if !stream && !one_shot && rec.state.running {
        let s = sample(&c.id, true).await;
        pre = s["cpu_stats"].clone();
        pre_read = s["read"].as_str().unwrap_or("").to_string();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    loop {
        let r = c.snapshot();
        let running = r.state.running;
        let mut s = sample(&c.id, running).await;
        if running && r.host_config.network_mode != "host" {
            if let Some(n) = net_stats(r.state.pid) {
                s["networks"] = n;
            }
        }
        s["precpu_stats"] = pre.clone();
        s["preread"] = json!(pre_read);
        s["name"] = json!(name);
        s["id"] = json!(c.id);
        pre = s["cpu_stats"].clone();
        pre_read = s["read"].as_str().unwrap_or("").to_string();
        let mut line = serde_json::to_vec(&s).unwrap_or_default();
        line.push(b'\n');
        if tx.send(Bytes::from(line)).await.is_err() || !stream || !running {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
