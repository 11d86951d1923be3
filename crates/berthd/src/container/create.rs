//! `POST /containers/create`.

use std::sync::Arc;

use berth_api::container::{Config, CreateRequest, CreateResponse};

use super::merge::{entrypoint_and_args, merge};
use super::{Ctr, LayerPaths, Record};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::names;

/// Creates a container from a create request; returns its ID.
pub async fn create(
    d: &Arc<Daemon>,
    name: Option<&str>,
    req: CreateRequest,
) -> Result<CreateResponse> {
    let CreateRequest {
        mut config,
        mut host_config,
        networking_config,
        ..
    } = req;
    if config.image.is_empty() {
        return Err(Error::invalid("No image specified"));
    }
    let wanted_name = match name {
        Some(n) if !n.is_empty() => Some(names::validate(n)?),
        _ => None,
    };
    let img = d.images.lookup(&config.image).await?;
    let image_config: Config = img.config;
    merge(&mut config, &image_config);
    let Some((path, args)) = entrypoint_and_args(&config) else {
        return Err(Error::invalid("no command specified"));
    };
    if let Some(ss) = config.stop_signal.as_deref() {
        if !ss.is_empty() {
            crate::signal::parse(ss)?;
        }
    }
    let rp = &host_config.restart_policy;
    match rp.name.as_str() {
        "" | "no" => {}
        "always" | "unless-stopped" | "on-failure" => {
            if host_config.auto_remove {
                return Err(Error::invalid(
                    "conflicting options: cannot specify both --restart and --rm",
                ));
            }
        }
        other => {
            return Err(Error::invalid(format!("invalid restart policy '{other}'")));
        }
    }
    if rp.maximum_retry_count < 0 {
        return Err(Error::invalid(
            "invalid restart policy: maximum retry count cannot be negative",
        ));
    }
    if rp.maximum_retry_count > 0 && rp.name != "on-failure" {
        return Err(Error::invalid(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ));
    }
    let mut warnings = Vec::new();
    let publishes = host_config
        .port_bindings
        .values()
        .any(|v| v.as_ref().is_some_and(|b| !b.is_empty()))
        || host_config.publish_all_ports;
    if publishes && host_config.network_mode == "host" {
        warnings.push("Published ports are discarded when using host network mode".to_string());
    }
    let network =
        crate::networks::on_create(d, &config, &mut host_config, networking_config.as_ref())?;
    if host_config.log_config.kind.is_empty() {
        host_config.log_config.kind = "json-file".into();
    }
    super::logcfg::validate(&host_config.log_config)?;
    super::spec::validate_host_config(&host_config)?;
    if !host_config.runtime.is_empty()
        && host_config.runtime != "berth"
        && !d.settings.runtimes.contains_key(&host_config.runtime)
    {
        return Err(Error::invalid(format!(
            "unknown or invalid runtime name: {}",
            host_config.runtime
        )));
    }
    let id = crate::util::random_hex(32);
    if config.hostname.is_empty() {
        config.hostname = id[..12].to_string();
    }
    let mut rec = Record {
        id: id.clone(),
        created: crate::util::now_rfc3339(),
        path,
        args,
        state: Record::created_state(),
        image: img.id.clone(),
        name: String::new(),
        restart_count: 0,
        config,
        host_config,
        layer: LayerPaths::default(),
        has_been_manually_stopped: false,
        network,
    };
    // Reserve the name.
    {
        let mut reg = d.registry.lock().expect("registry");
        let name = match wanted_name {
            Some(n) => {
                if let Some(owner) = reg.name_owner(&n) {
                    return Err(Error::Conflict(format!(
                        "Conflict. The container name \"{n}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
                    )));
                }
                n
            }
            None => {
                let mut i = 0;
                loop {
                    let n = format!("/{}", names::generate(i));
                    if reg.name_owner(&n).is_none() {
                        break n;
                    }
                    i += 1;
                }
            }
        };
        rec.name = name;
        let c = Ctr::new(rec.clone());
        reg.insert(c);
    }
    let res = finish_create(d, &mut rec).await;
    match res {
        Ok(()) => {
            if let Ok(c) = d.find(&id) {
                c.update(|r| *r = rec.clone());
            }
            d.events.container(&rec, "create", &[]);
            tracing::info!(id = %id, name = %rec.name, "container created");
            Ok(CreateResponse { id, warnings })
        }
        Err(e) => {
            d.registry.lock().expect("registry").remove(&id);
            let p = d.paths(&id);
            let _ = std::fs::remove_dir_all(&p.data);
            let _ = std::fs::remove_dir_all(&p.bundle);
            let _ = d.images.remove_layer(&id).await;
            Err(e)
        }
    }
}

async fn finish_create(d: &Arc<Daemon>, rec: &mut Record) -> Result<()> {
    crate::volumes_from::expand(d, rec)?;
    super::spec::user_mounts(rec, &d.settings.data_root.join("volumes"))?;
    super::spec::assign_anonymous_volumes(rec, &d.settings.data_root.join("volumes"))?;
    for cap in rec
        .host_config
        .cap_add
        .iter()
        .chain(&rec.host_config.cap_drop)
    {
        super::spec::capabilities(&[], std::slice::from_ref(cap), &[])?;
    }
    let p = d.paths(&rec.id);
    std::fs::create_dir_all(&p.data).map_err(|e| Error::io("create container dir", e))?;
    rec.layer = d.images.prepare_layer(&rec.id, &rec.image).await?;
    d.save_new(rec)
}
