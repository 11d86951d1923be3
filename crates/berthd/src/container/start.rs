//! `POST /containers/{id}/start`: rootfs, hosts files, OCI spec, shim, then `start`.

use std::sync::Arc;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::spec::{SpecInputs, build_spec, hosts_file, resolv_conf};
use super::{Ctr, Record};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shim::{self, ShimError, SpawnArgs};

/// The prefix dockerd puts before a runtime's start error; the docker CLI maps the tail to 126/127.
pub const OCI_PREFIX: &str = "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: ";

/// The exit code Docker records for a failed start message.
pub fn start_error_code(msg: &str) -> i64 {
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else if msg.contains("permission denied") {
        126
    } else {
        128
    }
}

/// Starts a created or exited container.
pub async fn start(d: &Arc<Daemon>, c: &Arc<Ctr>) -> Result<()> {
    start_when(d, c, |_| true).await.map(|_| ())
}

/// Starts the container if `still_wanted` holds once the op lock is taken (a pending restart
/// that a `stop` or `rm -f` cancelled while it waited for the lock must not run). False when
/// it no longer was.
pub async fn start_when(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    still_wanted: impl FnOnce(&Ctr) -> bool + Send,
) -> Result<bool> {
    let _op = c.op.lock().await;
    if !still_wanted(c) {
        return Ok(false);
    }
    let mut ph = crate::util::Phases::new();
    let rec = c.snapshot();
    if rec.state.running {
        return Err(Error::NotModified("container already started".into()));
    }
    if rec.state.status == "removing" || c.events.borrow().removed {
        return Err(Error::Conflict(format!(
            "container {} is marked for removal and cannot be started",
            rec.id
        )));
    }
    let p = d.paths(&c.id);
    // `--network container:<x>`: join that container's network namespace.
    let mut rec = rec;
    if let Some(other) = rec.host_config.network_mode.strip_prefix("container:") {
        let o = d.find(other)?.snapshot();
        if !o.state.running {
            return Err(Error::Conflict(format!(
                "cannot join network of a non running container: {}",
                o.id
            )));
        }
        rec.host_config.extra.insert(
            "BerthNetNsPath".into(),
            serde_json::json!(format!("/proc/{}/ns/net", o.state.pid)),
        );
    }
    // `--ipc container:<x>` / `--pid container:<x>`: join that container's namespace.
    for (mode, key, ns) in [
        (rec.host_config.ipc_mode.clone(), "BerthIpcNsPath", "ipc"),
        (rec.host_config.pid_mode.clone(), "BerthPidNsPath", "pid"),
    ] {
        if let Some(other) = mode.strip_prefix("container:") {
            let o = d.find(other)?.snapshot();
            if !o.state.running {
                return Err(Error::Conflict(format!(
                    "cannot join {ns} of a non running container: {}",
                    o.id
                )));
            }
            rec.host_config.extra.insert(
                key.into(),
                serde_json::json!(format!("/proc/{}/ns/{ns}", o.state.pid)),
            );
        }
    }
    // `--runtime NAME`: the shim drives that OCI runtime (named in the spec's annotations).
    if let Some(rt) = d.settings.runtimes.get(&rec.host_config.runtime) {
        rec.host_config.extra.insert(
            "BerthRuntime".into(),
            serde_json::json!({"path": rt.path, "args": rt.runtime_args}),
        );
    }
    // Endpoints before the spec: it names the namespace they live in.
    let net = match crate::networks::on_start(d, c, &mut rec).await {
        Ok(n) => n,
        Err(e) => return Err(failed_start(d, c, &p, StartFailure::Prepare(e)).await),
    };
    ph.mark("network");
    // Prepare the bundle, the rootfs and the files mounted into the container (blocking work).
    let prep = {
        let rec = rec.clone();
        let p = p.clone();
        let vr = d.settings.data_root.join("volumes");
        let init = rec
            .host_config
            .init
            .unwrap_or(false)
            .then(|| (d.settings.exec_root.clone(), d.shim.clone()));
        tokio::task::spawn_blocking(move || prepare(&rec, &p, &vr, init))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
    };
    let prep = prep.and_then(|()| crate::networks::write_files(&rec, &p, &net));
    if let Err(e) = prep {
        return Err(failed_start(d, c, &p, StartFailure::Prepare(e)).await);
    }
    ph.mark("prepare");
    let log = p.log();
    let exit_file = p.exit_file();
    let args = SpawnArgs {
        id: &c.id,
        bundle: &p.bundle,
        log: &log,
        exit_file: &exit_file,
        stdin: rec.config.open_stdin,
        stdin_once: rec.config.stdin_once,
        extra: super::logcfg::shim_args(&rec),
    };
    let pid = match shim::spawn(&d.shim, &args).await {
        Ok(pid) => pid,
        Err(e) => return Err(failed_start(d, c, &p, StartFailure::Shim(e)).await),
    };
    ph.mark("shim");
    let sock = p.shim_sock();
    // Hand the shim to clients that attached before start, so they see all output.
    let pending = std::mem::take(&mut *c.pending.lock().expect("pending"));
    for pa in pending {
        match shim::attach(&sock, pa.stdin, pa.stdout, pa.stderr).await {
            Ok(s) => {
                let _ = pa.tx.send(s);
            }
            Err(e) => tracing::warn!(id = %c.id, "attach to shim failed: {e}"),
        }
    }
    // The exit watcher's connection is opened before the process can run, so no exit is missed.
    let waiter = open_wait(&sock).await.ok();
    ph.mark("attach");
    if let Err(e) = shim::call(&sock, json!({"op":"start"})).await {
        let _ = shim::call(&sock, json!({"op":"kill","signal":9,"all":true})).await;
        return Err(failed_start(d, c, &p, StartFailure::Shim(e)).await);
    }
    ph.mark("exec");
    c.update(|r| {
        r.state.status = "running".into();
        r.state.running = true;
        r.state.pid = pid;
        r.state.exit_code = 0;
        r.state.error = String::new();
        r.state.oom_killed = false;
        r.state.started_at = crate::util::now_rfc3339();
        r.state.finished_at = berth_api::container::ZERO_TIME.into();
        r.state.health = None;
        r.state.restarting = false;
        r.has_been_manually_stopped = false;
    });
    super::health::monitor(d.clone(), c.clone());
    d.save_state(c)?;
    c.notify(false);
    d.events.container(&c.snapshot(), "start", &[]);
    ph.mark("record");
    ph.log("start", &c.id);
    tracing::info!(id = %c.id, pid, "container started");
    let (d2, c2) = (d.clone(), c.clone());
    tokio::spawn(async move { super::wait::watch_exit(d2, c2, waiter).await });
    Ok(true)
}

/// A pending restart's start, as a boxed future (start and the exit watcher would otherwise
/// recurse): it runs only if the restart is still wanted under the op lock.
pub fn start_boxed(
    d: Arc<Daemon>,
    c: Arc<Ctr>,
    still_wanted: impl FnOnce(&Ctr) -> bool + Send + 'static,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send>> {
    Box::pin(async move { start_when(&d, &c, still_wanted).await })
}

/// Sends `{"op":"wait"}` and leaves the answer for the exit watcher.
pub async fn open_wait(sock: &std::path::Path) -> std::io::Result<UnixStream> {
    let mut s = crate::shim::connect(sock).await?;
    s.write_all(b"{\"op\":\"wait\"}\n").await?;
    Ok(s)
}

/// Why a start failed.
enum StartFailure {
    /// Preparing the rootfs, files or spec failed (the message is passed on as is).
    Prepare(Error),
    /// The shim or the runtime refused.
    Shim(ShimError),
}

/// Records a failed start like dockerd: `Error` and an exit code set, state left as it was,
/// waiters told, auto-remove honoured. Returns the error for the client.
async fn failed_start(
    d: &Arc<Daemon>,
    c: &Arc<Ctr>,
    p: &super::CtrPaths,
    f: StartFailure,
) -> Error {
    let (msg, err) = match f {
        StartFailure::Prepare(e) => {
            let m = e.to_string();
            (m, e)
        }
        StartFailure::Shim(e) => {
            let m = match e {
                ShimError::Refused(m) => format!("{OCI_PREFIX}{m}: unknown"),
                other => format!("{OCI_PREFIX}{other}: unknown"),
            };
            (m.clone(), Error::invalid(m))
        }
    };
    let code = start_error_code(&msg);
    c.update(|r| {
        r.state.error = msg.clone();
        r.state.exit_code = code;
        r.state.running = false;
        r.state.pid = 0;
    });
    crate::networks::on_stop(d, c).await;
    let _ = d.save(c);
    unmount_rootfs(&p.rootfs()).await;
    c.notify(true);
    tracing::info!(id = %c.id, "start failed: {msg}");
    if c.snapshot().host_config.auto_remove {
        let (d2, c2) = (d.clone(), c.clone());
        // The caller holds the op lock; remove once it is released.
        tokio::spawn(async move {
            let _op = c2.op.lock().await;
            let _ = super::delete::remove_locked(&d2, &c2, true).await;
        });
    }
    err
}

/// Unmounts a container's rootfs if mounted.
pub async fn unmount_rootfs(rootfs: &std::path::Path) {
    let rootfs = rootfs.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        if berth_runtime::is_mountpoint(&rootfs).unwrap_or(false) {
            if let Err(e) = berth_runtime::unmount(&rootfs) {
                tracing::warn!("unmount {}: {e}", rootfs.display());
            }
        }
    })
    .await;
}

/// `init`: (exec root, shim binary) when the container runs with `--init`.
fn prepare(
    rec: &Record,
    p: &super::CtrPaths,
    volumes_root: &std::path::Path,
    init: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<()> {
    let io = |what: &str, e| Error::io(what.to_string(), e);
    std::fs::create_dir_all(&p.data).map_err(|e| io("create container dir", e))?;
    let rootfs = p.rootfs();
    std::fs::create_dir_all(&rootfs).map_err(|e| io("create bundle", e))?;
    let _ = std::fs::remove_file(p.shim_sock());
    let _ = std::fs::remove_file(p.exit_file());
    if !berth_runtime::is_mountpoint(&rootfs).unwrap_or(false) {
        crate::userns::mount_rootfs(rec, &rootfs, &p.bundle.join("lowers"))
            .map_err(|e| Error::internal(format!("mount rootfs: {e}")))?;
    }
    let volumes_root = volumes_root.to_path_buf();
    let hostname_path = p.data.join("hostname");
    let hosts_path = p.data.join("hosts");
    let resolv_path = p.data.join("resolv.conf");
    let hc = &rec.host_config;
    std::fs::write(&hostname_path, format!("{}\n", rec.config.hostname))
        .map_err(|e| io("write hostname", e))?;
    std::fs::write(
        &hosts_path,
        hosts_file(&rec.config.hostname, &hc.extra_hosts),
    )
    .map_err(|e| io("write hosts", e))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(
        &resolv_path,
        resolv_conf(&host_resolv, &hc.dns, &hc.dns_search, &hc.dns_options),
    )
    .map_err(|e| io("write resolv.conf", e))?;
    let mut spec = build_spec(
        rec,
        &SpecInputs {
            rootfs: &rootfs,
            hostname_path: &hostname_path,
            hosts_path: &hosts_path,
            resolv_path: &resolv_path,
            volumes_root: &volumes_root,
        },
    )?;
    crate::userns::prepare_files(
        rec,
        &volumes_root,
        &[&hostname_path, &hosts_path, &resolv_path],
    );
    if let Some((exec_root, shim)) = init {
        let dir = super::init::prepare_dir(&exec_root, &shim)?;
        super::init::apply(&mut spec, &dir);
    }
    let data = serde_json::to_vec_pretty(&spec).map_err(|e| Error::internal(e.to_string()))?;
    crate::util::write_replace(&p.bundle.join("config.json"), &data)
        .map_err(|e| io("write config.json", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            start_error_code("exec: \"nosuch\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_error_code("exec: \"/etc\": permission denied"), 126);
        assert_eq!(start_error_code("other"), 128);
    }
}
