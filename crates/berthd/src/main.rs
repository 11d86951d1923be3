//! `berthd`: flags, config file, logging, then the API server.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use berthd::config::{DEFAULT_CONFIG_FILE, Flags, merge, parse_host};
use clap::Parser;

/// How often the idle check runs; memory is given back after two quiet periods in a row.
const IDLE_CHECK: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    // Two arenas: one per tokio worker. glibc would make up to 16 on 2 cores (one per thread
    // that ever contended, blocking-pool threads included) and keep each one's freed pages.
    berth_runtime::sys::malloc_tune(2);
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
        // Blocking-pool threads (file I/O) exit after 2 s unused rather than 10 s.
        .thread_keep_alive(Duration::from_secs(2))
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
    tokio::spawn(release_when_idle());
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

/// Gives memory back once the daemon has gone quiet after work: the allocator's free pages and
/// the code pages only touched while serving (MADV_PAGEOUT: they are read back from the binary
/// when a request needs them; see `berth_runtime::sys::release_file_pages`).
async fn release_when_idle() {
    let mut last = cpu_ticks();
    let (mut quiet, mut released) = (0, false);
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        let now = cpu_ticks();
        if now != last {
            (quiet, released) = (0, false);
        } else {
            quiet += 1;
        }
        if quiet >= 2 && !released {
            berth_runtime::sys::malloc_trim();
            berth_runtime::sys::release_file_pages();
            released = true;
            tracing::debug!("idle: memory released");
        }
        // Our own work here must not count as activity.
        last = cpu_ticks();
    }
}

/// CPU time used by the whole process so far, in clock ticks (utime + stime of /proc/self/stat).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    tick(11) + tick(12)
}
