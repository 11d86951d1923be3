//! `docker exec`: exec instances, the OCI process they run, and their start through the shim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_api::exec::{ExecConfig, ExecInspect, ProcessConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::container::Ctr;
use crate::container::spec::{read_in_root, resolve_user};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shim;

/// Where an exec is in its life.
#[derive(Debug, Default, Clone)]
pub struct ExecState {
    /// `start` was called.
    pub started: bool,
    /// The process runs.
    pub running: bool,
    /// Exit code once ended.
    pub exit_code: Option<i64>,
    /// Host PID while running.
    pub pid: i64,
}

/// One exec instance.
#[derive(Debug)]
pub struct Exec {
    /// Exec ID.
    pub id: String,
    /// The container.
    pub container_id: String,
    /// What to run.
    pub config: ExecConfig,
    /// State.
    pub state: Mutex<ExecState>,
}

/// All exec instances.
pub type Execs = Mutex<HashMap<String, Arc<Exec>>>;

/// `POST /containers/{id}/exec`.
pub fn create(d: &Arc<Daemon>, c: &Arc<Ctr>, cfg: ExecConfig) -> Result<String> {
    let rec = c.snapshot();
    if rec.state.restarting {
        return Err(Error::Conflict(format!(
            "Container {} is restarting, wait until the container is running",
            rec.id
        )));
    }
    if !rec.state.running {
        return Err(Error::Conflict(format!(
            "Container {} is not running",
            rec.id
        )));
    }
    if cfg.cmd.as_ref().is_none_or(Vec::is_empty) {
        return Err(Error::invalid("No exec command specified"));
    }
    if !cfg.detach_keys.is_empty() {
        crate::container::attach::parse_detach_keys(&cfg.detach_keys)?;
    }
    let id = crate::util::random_hex(32);
    let cmd = cfg.cmd.clone().unwrap_or_default().join(" ");
    d.execs.lock().expect("execs").insert(
        id.clone(),
        Arc::new(Exec {
            id: id.clone(),
            container_id: rec.id.clone(),
            config: cfg,
            state: Mutex::new(ExecState::default()),
        }),
    );
    if let Ok(e) = find(d, &id) {
        persist(d, &e);
    }
    d.events.container(
        &rec,
        &format!("exec_create: {cmd}"),
        &[("execID", id.clone())],
    );
    Ok(id)
}

/// An exec as kept on disk (`<bundle>/execs/<id>.json`), so a restarted daemon still knows the
/// exec instances of the containers it adopts: `exec inspect` keeps answering and the exit code
/// of a process that ran across the restart is learned from the shim.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    container_id: String,
    config: ExecConfig,
    started: bool,
    exit_code: Option<i64>,
}

fn saved_path(d: &Daemon, container_id: &str, id: &str) -> std::path::PathBuf {
    d.paths(container_id)
        .bundle
        .join("execs")
        .join(format!("{id}.json"))
}

/// Writes an exec's record (best effort: the exec works without it, only a daemon restart
/// would forget it).
fn persist(d: &Daemon, e: &Exec) {
    let st = e.state.lock().expect("exec").clone();
    let s = Saved {
        container_id: e.container_id.clone(),
        config: e.config.clone(),
        started: st.started,
        exit_code: st.exit_code,
    };
    let p = saved_path(d, &e.container_id, &e.id);
    let res = std::fs::create_dir_all(p.parent().unwrap_or(&p))
        .and_then(|_| crate::util::write_replace(&p, &serde_json::to_vec(&s).unwrap_or_default()));
    if let Err(err) = res {
        tracing::warn!(exec = %e.id, "saving exec: {err}");
    }
}

/// Asks the shim about a started exec: (running, pid, exit code).
async fn shim_state(d: &Daemon, e: &Exec) -> Option<(bool, i64, Option<i64>)> {
    let sock = d.paths(&e.container_id).shim_sock();
    let v = shim::call(&sock, json!({"op":"exec-state","id":e.id}))
        .await
        .ok()?;
    let running = v.get("status").and_then(Value::as_str) == Some("running");
    Some((
        running,
        v.get("pid").and_then(Value::as_i64).unwrap_or(0),
        v.get("exit_code").and_then(Value::as_i64),
    ))
}

/// After a daemon restart: loads the exec instances of an adopted container.
pub async fn restore(d: &Arc<Daemon>, container_id: &str) {
    let dir = d.paths(container_id).bundle.join("execs");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for ent in rd.flatten() {
        let Some(id) = ent
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .map(str::to_string)
        else {
            continue;
        };
        let Some(s) = std::fs::read(ent.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
        else {
            continue;
        };
        let e = Arc::new(Exec {
            id: id.clone(),
            container_id: s.container_id,
            config: s.config,
            state: Mutex::new(ExecState {
                started: s.started,
                running: false,
                exit_code: s.exit_code,
                pid: 0,
            }),
        });
        if s.started && s.exit_code.is_none() {
            match shim_state(d, &e).await {
                Some((true, pid, _)) => set_state(&e, |st| {
                    st.running = true;
                    st.pid = pid;
                }),
                Some((false, _, code)) => set_state(&e, |st| st.exit_code = code),
                None => {}
            }
        }
        d.execs.lock().expect("execs").insert(id, e);
    }
}

/// Brings a running exec's state up to date from the shim (for one restored after a daemon
/// restart, no session is there to record its end).
pub async fn refresh(d: &Daemon, e: &Exec) {
    if !e.state.lock().expect("exec").running {
        return;
    }
    if let Some((false, _, code)) = shim_state(d, e).await {
        set_state(e, |st| {
            st.running = false;
            st.pid = 0;
            st.exit_code = code.or(st.exit_code);
        });
        persist(d, e);
    }
}

/// Finds an exec.
pub fn find(d: &Daemon, id: &str) -> Result<Arc<Exec>> {
    d.execs
        .lock()
        .expect("execs")
        .get(id)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("No such exec instance: {id}")))
}

/// `GET /exec/{id}/json`.
pub fn inspect(e: &Exec) -> ExecInspect {
    let st = e.state.lock().expect("exec").clone();
    let mut args = e.config.cmd.clone().unwrap_or_default();
    let entry = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    ExecInspect {
        can_remove: false,
        container_id: e.container_id.clone(),
        detach_keys: e.config.detach_keys.clone(),
        exit_code: st.exit_code,
        id: e.id.clone(),
        open_stdin: e.config.attach_stdin,
        open_stderr: e.config.attach_stderr,
        open_stdout: e.config.attach_stdout,
        process_config: ProcessConfig {
            privileged: e.config.privileged,
            user: e.config.user.clone(),
            tty: e.config.tty,
            entrypoint: entry,
            arguments: args,
        },
        running: st.running,
        pid: st.pid,
    }
}

/// The OCI process of an exec: the container's process, with the exec's command, env, cwd, user
/// and terminal.
pub fn process(d: &Daemon, e: &Exec, console: Option<[u32; 2]>) -> Result<Value> {
    let p = d.paths(&e.container_id);
    let spec: Value = std::fs::read(p.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Error::internal("the container's runtime spec is unreadable"))?;
    let mut proc = spec["process"].clone();
    let cfg = &e.config;
    proc["args"] = json!(cfg.cmd.clone().unwrap_or_default());
    let mut env: Vec<String> = proc["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for x in &cfg.env {
        let key = x.split('=').next().unwrap_or("");
        env.retain(|y| y.split('=').next() != Some(key));
        env.push(x.clone());
    }
    if cfg.tty && !env.iter().any(|x| x.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    proc["env"] = json!(env);
    if !cfg.working_dir.is_empty() {
        proc["cwd"] = json!(cfg.working_dir);
    }
    if !cfg.user.is_empty() {
        let rootfs = p.rootfs();
        let u = resolve_user(
            &cfg.user,
            read_in_root(&rootfs, "/etc/passwd").as_deref(),
            read_in_root(&rootfs, "/etc/group").as_deref(),
        )?;
        let mut user = json!({"uid": u.uid, "gid": u.gid});
        if !u.additional_gids.is_empty() {
            user["additionalGids"] = json!(u.additional_gids);
        }
        proc["user"] = user;
    }
    proc["terminal"] = json!(cfg.tty);
    match console.or(cfg.console_size) {
        Some([h, w]) if cfg.tty && h > 0 && w > 0 => {
            proc["consoleSize"] = json!({"height": h, "width": w});
        }
        _ => {
            if let Some(o) = proc.as_object_mut() {
                o.remove("consoleSize");
            }
        }
    }
    if cfg.privileged {
        let all = crate::container::spec::capabilities(&[], &["ALL".into()], &[])?;
        proc["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    }
    Ok(proc)
}

fn set_state(e: &Exec, f: impl FnOnce(&mut ExecState)) {
    f(&mut e.state.lock().expect("exec"));
}

/// Marks an exec started; a second start is a conflict.
pub fn begin(e: &Exec) -> Result<()> {
    let mut st = e.state.lock().expect("exec");
    if st.started {
        return Err(Error::Conflict(format!(
            "Error: Exec command {} is already running",
            e.id
        )));
    }
    st.started = true;
    Ok(())
}

async fn record_exit(d: &Daemon, e: &Exec) {
    let sock = d.paths(&e.container_id).shim_sock();
    let code = match shim::call(&sock, json!({"op":"exec-state","id":e.id})).await {
        Ok(v) => v.get("exit_code").and_then(Value::as_i64),
        Err(_) => None,
    };
    set_state(e, |s| {
        s.running = false;
        s.pid = 0;
        s.exit_code = Some(code.unwrap_or(137));
    });
    persist(d, e);
    if let Ok(c) = d.find(&e.container_id) {
        d.events.container(
            &c.snapshot(),
            "exec_die",
            &[
                ("execID", e.id.clone()),
                ("exitCode", code.unwrap_or(137).to_string()),
            ],
        );
    }
}

/// Runs an exec: starts it in the shim, then (unless `detach`) splices it with `client`.
/// Start errors are written to the client, as dockerd does after a hijack.
pub async fn run<C>(
    d: Arc<Daemon>,
    e: Arc<Exec>,
    detach: bool,
    console: Option<[u32; 2]>,
    mut client: Option<C>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &e.config;
    let attach = !detach;
    let proc = match process(&d, &e, console) {
        Ok(p) => p,
        Err(err) => {
            fail(&e, &mut client, &err.to_string(), 126).await;
            return;
        }
    };
    let req = json!({
        "op": "exec", "id": e.id, "process": proc,
        "stdin": attach && cfg.attach_stdin,
        "stdout": attach && cfg.attach_stdout,
        "stderr": attach && cfg.attach_stderr,
    });
    let sock = d.paths(&e.container_id).shim_sock();
    let (ans, conn) = match shim::request(&sock, &req).await {
        Ok(x) => x,
        Err(shim::ShimError::Refused(m)) => {
            let msg = format!(
                "OCI runtime exec failed: exec failed: unable to start container process: {m}: unknown"
            );
            let code = crate::container::start::start_error_code(&msg);
            fail(&e, &mut client, &msg, code).await;
            return;
        }
        Err(other) => {
            fail(&e, &mut client, &other.to_string(), 126).await;
            return;
        }
    };
    let pid = ans.get("pid").and_then(Value::as_i64).unwrap_or(0);
    set_state(&e, |s| {
        s.running = true;
        s.pid = pid;
    });
    persist(&d, &e);
    if let Ok(c) = d.find(&e.container_id) {
        let cmd = cfg.cmd.clone().unwrap_or_default().join(" ");
        d.events.container(
            &c.snapshot(),
            &format!("exec_start: {cmd}"),
            &[("execID", e.id.clone())],
        );
    }
    match client {
        Some(client) => {
            let keys = if cfg.detach_keys.is_empty() {
                crate::container::attach::DEFAULT_DETACH.to_vec()
            } else {
                crate::container::attach::parse_detach_keys(&cfg.detach_keys).unwrap_or_default()
            };
            let (d2, e2) = (d.clone(), e.clone());
            let finish: crate::container::attach::Finish =
                Box::pin(async move { record_exit(&d2, &e2).await });
            crate::container::attach::splice(client, conn, cfg.attach_stdin, keys, Some(finish))
                .await;
            if e.state.lock().expect("exec").running {
                // Detached by the client: learn the exit code once it ends.
                tokio::spawn(async move { poll_exit(&d, &e).await });
            }
        }
        None => {
            let mut conn = conn;
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut conn, &mut sink).await;
            record_exit(&d, &e).await;
        }
    }
}

async fn poll_exit(d: &Daemon, e: &Exec) {
    let sock = d.paths(&e.container_id).shim_sock();
    loop {
        match shim::call(&sock, json!({"op":"exec-state","id":e.id})).await {
            Ok(v) if v.get("status").and_then(Value::as_str) != Some("stopped") => {}
            _ => return record_exit(d, e).await,
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn fail<C: AsyncWrite + Unpin>(e: &Exec, client: &mut Option<C>, msg: &str, code: i64) {
    set_state(e, |s| {
        s.running = false;
        s.exit_code = Some(code);
    });
    if let Some(c) = client.as_mut() {
        // Written as stdout, framed unless the exec has a TTY (as dockerd does).
        let text = format!("{msg}\r\n");
        let data = if e.config.tty {
            bytes::Bytes::from(text)
        } else {
            berth_api::stdcopy::encode(berth_api::stdcopy::StreamType::Stdout, text.as_bytes())
        };
        let _ = c.write_all(&data).await;
        let _ = c.shutdown().await;
    }
}

/// `POST /exec/{id}/resize`.
pub async fn resize(d: &Daemon, e: &Exec, h: i64, w: i64) -> Result<()> {
    shim::call(
        &d.paths(&e.container_id).shim_sock(),
        json!({"op":"resize","width":w,"height":h,"exec_id":e.id}),
    )
    .await
    .map(|_| ())
    .map_err(|err| Error::internal(format!("resize: {err}")))
}
