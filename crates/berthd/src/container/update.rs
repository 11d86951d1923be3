//! `POST /containers/{id}/update`: restart policy and resource limits, applied live to the cgroups.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Ctr;
use crate::daemon::Daemon;
use crate::error::{Error, Result};

/// Applies an update body (Docker's `UpdateConfig`: resources and `RestartPolicy`); zero means
/// "unchanged", as in dockerd.
pub async fn update(d: &Arc<Daemon>, c: &Arc<Ctr>, body: Value) -> Result<Vec<String>> {
    let _op = c.op.lock().await;
    let mut rec = c.snapshot();
    let hc = &mut rec.host_config;
    let int = |k: &str| body.get(k).and_then(Value::as_i64).filter(|v| *v != 0);
    if let Some(v) = int("Memory") {
        hc.memory = v;
    }
    if let Some(v) = int("MemorySwap") {
        hc.memory_swap = v;
    }
    if let Some(v) = int("NanoCpus") {
        hc.nano_cpus = v;
    }
    if let Some(v) = int("CpuShares") {
        hc.cpu_shares = v;
    }
    if let Some(v) = int("CpuPeriod") {
        hc.cpu_period = v;
    }
    if let Some(v) = int("CpuQuota") {
        hc.cpu_quota = v;
    }
    if let Some(v) = body
        .get("CpusetCpus")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        hc.cpuset_cpus = v.to_string();
    }
    if let Some(v) = int("PidsLimit") {
        hc.pids_limit = Some(v);
    }
    if let Some(rp) = body.get("RestartPolicy").filter(|v| !v.is_null()) {
        let rp: berth_api::container::RestartPolicy = serde_json::from_value(rp.clone())
            .map_err(|e| Error::invalid(format!("invalid restart policy: {e}")))?;
        if !rp.name.is_empty() {
            match rp.name.as_str() {
                "no" | "always" | "unless-stopped" | "on-failure" => {}
                other => {
                    return Err(Error::invalid(format!("invalid restart policy '{other}'")));
                }
            }
            if hc.auto_remove && rp.name != "no" {
                return Err(Error::invalid(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            hc.restart_policy = rp;
        }
    }
    if rec.state.running {
        let mut res = json!({});
        super::spec::set_resources(&mut res, &rec.host_config);
        let resources: berth_runtime::oci_spec::runtime::LinuxResources =
            serde_json::from_value(res).map_err(|e| Error::internal(format!("resources: {e}")))?;
        let path = format!("/berth/{}", rec.id);
        tokio::task::spawn_blocking(move || {
            berth_runtime::cgroups::detect(&path).apply(&resources)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Error::internal(format!("Cannot update container {}: {e}", c.id)))?;
    }
    let new_hc = rec.host_config.clone();
    c.update(|r| r.host_config = new_hc);
    d.save(c)?;
    d.events.container(&c.snapshot(), "update", &[]);
    Ok(vec![])
}
