//! `berthd`: flags, config file, logging, then the API server.
#![forbid(unsafe_code)]

use std::sync::Arc;

use anyhow::{Context, anyhow};
use berthd::config::{DEFAULT_CONFIG_FILE, Flags, merge, parse_host};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let file = match &flags.config_file {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => std::fs::read_to_string(DEFAULT_CONFIG_FILE)
            .ok()
            .map(|t| (DEFAULT_CONFIG_FILE.to_string(), t)),
    };
    let settings = merge(&flags, file.as_ref().map(|(n, t)| (n.as_str(), t.as_str())))
        .map_err(|e| anyhow!(e))?;
    let filter = if settings.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTHD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(settings))
}

async fn run(settings: berthd::Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.exec_root)
        .with_context(|| format!("creating {}", settings.exec_root.display()))?;
    std::fs::create_dir_all(&settings.data_root)
        .with_context(|| format!("creating {}", settings.data_root.display()))?;
    let mut listeners = Vec::new();
    for h in &settings.hosts {
        let path = parse_host(h).map_err(|e| anyhow!(e))?;
        listeners.push((path.clone(), berthd::bind_socket(&path)?));
    }
    let pidfile = settings.pidfile.clone();
    if let Some(dir) = pidfile.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pidfile.display()))?;
    if let Some(r) =
        berthd::userns::init(settings.userns_remap.as_deref()).map_err(|e| anyhow!(e))?
    {
        tracing::info!(uid = r.uid, gid = r.gid, "user namespace remapping enabled");
    }
    if settings.cgroup_favor_dynmods {
        // A cgroup migration per container start otherwise waits an RCU grace period.
        match berth_runtime::favor_dynmods(&settings.exec_root.join("cgroup2-favor")) {
            Ok(true) => tracing::info!("cgroup favordynmods enabled for fast container starts"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot enable cgroup favordynmods: {e}"),
        }
    }
    let d = berthd::Daemon::open(settings)?;
    d.restore().await?;
    berthd::build::init(&d).await?;
    tracing::info!(shim = %d.shim.display(), "berthd {} ready", env!("CARGO_PKG_VERSION"));
    let mut paths = Vec::new();
    for (path, l) in listeners {
        tracing::info!("API listen on {}", path.display());
        paths.push(path);
        tokio::spawn(berthd::serve(Arc::clone(&d), l));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; containers keep running");
    berthd::networks::on_shutdown(&d).await;
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(&pidfile);
    Ok(())
}
