//! `exec`: create an exec instance, start it over a hijacked connection (raw mode and resize with a
//! TTY), and exit with the process's exit code.

use berth_api::exec::{ExecConfig, ExecStartConfig};

use super::run::{AttachOpts, parse_detach_keys, parse_env_file, pump};
use super::{CliError, CmdResult, Ctx};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{Client, ClientError, decode, json_body, q};
use crate::tty;

/// `exec`'s grammar.
pub const EXEC: Command = Command {
    path: "exec",
    usage: "[OPTIONS] CONTAINER COMMAND [ARG...]",
    about: "Execute a command in a running container",
    flags: &[
        b(
            "detach",
            Some('d'),
            "Detached mode: run command in the background",
        ),
        v(
            "detach-keys",
            None,
            "Override the key sequence for detaching a container",
        ),
        l("env", Some('e'), "Set environment variables"),
        l("env-file", None, "Read in a file of environment variables"),
        b(
            "interactive",
            Some('i'),
            "Keep STDIN open even if not attached",
        ),
        b(
            "privileged",
            None,
            "Give extended privileges to the command",
        ),
        b("tty", Some('t'), "Allocate a pseudo-TTY"),
        v(
            "user",
            Some('u'),
            "Username or UID (format: \"<name|uid>[:<group|gid>]\")",
        ),
        v(
            "workdir",
            Some('w'),
            "Working directory inside the container",
        ),
    ],
    interspersed: false,
    min_args: 2,
    max_args: None,
};

/// Builds the `POST /containers/{id}/exec` body from the flags, as the docker CLI does.
pub fn exec_config(m: &Matches) -> Result<ExecConfig, CliError> {
    let mut env = Vec::new();
    for f in m.values("env-file") {
        env.extend(parse_env_file(f).map_err(|e| CliError::Msg(e, 1))?);
    }
    for e in m.values("env") {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(val) = std::env::var(e) {
            env.push(format!("{e}={val}"));
        }
    }
    let detach = m.flag("detach");
    let interactive = m.flag("interactive");
    let tty = m.flag("tty");
    Ok(ExecConfig {
        attach_stdin: interactive && !detach,
        attach_stdout: !detach,
        attach_stderr: !detach,
        detach_keys: m.value("detach-keys").unwrap_or("").to_string(),
        tty,
        console_size: if tty {
            tty::size().map(|(h, w)| [h as u32, w as u32])
        } else {
            None
        },
        env,
        cmd: Some(m.args[1..].to_vec()),
        privileged: m.flag("privileged"),
        user: m.value("user").unwrap_or("").to_string(),
        working_dir: m.value("workdir").unwrap_or("").to_string(),
        extra: Default::default(),
    })
}

async fn resize_exec(client: &Client, id: &str) {
    if let Some((h, w)) = tty::size() {
        let _ = client
            .post_empty(&format!("/exec/{id}/resize?h={h}&w={w}"))
            .await;
    }
}

fn spawn_exec_resize(client: &Client, id: &str) {
    let c = client.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        resize_exec(&c, &id).await;
        let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            resize_exec(&c, &id).await;
        }
    });
}

/// `berth exec`.
pub async fn exec(ctx: &Ctx, m: Matches) -> CmdResult {
    let cfg = exec_config(&m)?;
    if let Some(k) = m.value("detach-keys") {
        parse_detach_keys(k).map_err(|e| CliError::Msg(e, 125))?;
    }
    if cfg.tty && cfg.attach_stdin && !tty::stdin_is_tty() {
        eprintln!("the input device is not a TTY");
        return Ok(1);
    }
    let client = ctx.client().await?;
    let container = &m.args[0];
    let resp = client
        .post(&format!("/containers/{}/exec", q(container)), Some(&cfg))
        .await?;
    let created: serde_json::Value = decode(resp).await?;
    let id = created["Id"].as_str().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err(ClientError::Decode("exec create returned no ID".into()).into());
    }
    let start = ExecStartConfig {
        detach: m.flag("detach"),
        tty: cfg.tty,
        console_size: cfg.console_size,
        ..Default::default()
    };
    if start.detach {
        client
            .post(&format!("/exec/{id}/start"), Some(&start))
            .await
            .map(|_| ())?;
        return Ok(0);
    }
    let conn = client
        .hijack_with(
            &format!("/exec/{id}/start"),
            json_body(&start),
            "application/json",
        )
        .await?;
    let o = AttachOpts {
        stdin: cfg.attach_stdin,
        stdout: true,
        stderr: true,
        tty: cfg.tty,
        detach_keys: m.value("detach-keys").map(str::to_string),
        sig_proxy: false,
    };
    let raw = if cfg.tty && cfg.attach_stdin && tty::stdin_is_tty() {
        Some(tty::RawGuard::enable()?)
    } else {
        None
    };
    if cfg.tty && tty::stdout_is_tty() {
        spawn_exec_resize(&client, &id);
    }
    let detached = pump(conn, &o).await?;
    drop(raw);
    if detached {
        return Ok(0);
    }
    let info: serde_json::Value = client.get(&format!("/exec/{id}/json")).await?;
    Ok(info["ExitCode"].as_i64().unwrap_or(0) as i32)
}
