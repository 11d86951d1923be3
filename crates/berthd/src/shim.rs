//! Client side of the shim protocol (docs/INTERNALS.md): spawning `berth-shim` and talking to `shim.sock`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A shim failure, with the shim's message.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The shim could not be reached (gone, or never started).
    #[error("cannot reach shim at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shim answered `{"error": ...}`.
    #[error("{0}")]
    Refused(String),
    /// The shim broke the protocol or the connection.
    #[error("shim protocol error: {0}")]
    Protocol(String),
}

/// Where the shim binary is: beside the current executable, else on `PATH`.
pub fn find_shim() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("berth-shim");
            if p.is_file() {
                return p;
            }
            // Test binaries live in target/debug/deps; the shim in target/debug.
            if let Some(up) = dir.parent() {
                let p = up.join("berth-shim");
                if p.is_file() {
                    return p;
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("berth-shim");
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("berth-shim")
}

/// Arguments of one shim start.
#[derive(Debug)]
pub struct SpawnArgs<'a> {
    /// Container ID.
    pub id: &'a str,
    /// Bundle directory.
    pub bundle: &'a Path,
    /// json-file log.
    pub log: &'a Path,
    /// exit.json.
    pub exit_file: &'a Path,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Further arguments (logging: rotation, attributes, `--no-log`).
    pub extra: Vec<String>,
}

/// Starts a shim and returns the PID of the container's process, or the shim's error message.
pub async fn spawn(shim: &Path, a: &SpawnArgs<'_>) -> Result<i64, ShimError> {
    let mut cmd = tokio::process::Command::new(shim);
    cmd.arg("--id")
        .arg(a.id)
        .arg("--bundle")
        .arg(a.bundle)
        .arg("--log")
        .arg(a.log)
        .arg("--exit-file")
        .arg(a.exit_file);
    if a.stdin {
        cmd.arg("--stdin");
    }
    if a.stdin_once {
        cmd.arg("--stdin-once");
    }
    cmd.args(&a.extra);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let child = cmd
        .spawn()
        .map_err(|e| ShimError::Protocol(format!("cannot start {}: {e}", shim.display())))?;
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| ShimError::Protocol("shim did not report in 60 s".into()))?
        .map_err(|e| ShimError::Protocol(format!("waiting for shim: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    #[derive(Deserialize)]
    struct Reply {
        pid: Option<i64>,
        error: Option<String>,
    }
    match serde_json::from_str::<Reply>(line) {
        Ok(Reply { pid: Some(pid), .. }) => Ok(pid),
        Ok(Reply { error: Some(e), .. }) => Err(ShimError::Refused(e)),
        _ => Err(ShimError::Protocol(format!(
            "unexpected shim output {:?} (stderr: {})",
            line,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// Connects to a shim socket (also one whose path is longer than a socket address holds).
pub async fn connect(sock: &Path) -> std::io::Result<UnixStream> {
    let (path, _dir) = berth_runtime::unix_socket_path(sock)?;
    UnixStream::connect(path).await
}

/// Opens a connection and sends one request; returns the answer and the connection (for
/// `attach` and `wait`, which carry on).
pub async fn request(sock: &Path, req: &Value) -> Result<(Value, UnixStream), ShimError> {
    let stream = connect(sock).await.map_err(|source| ShimError::Connect {
        path: sock.to_path_buf(),
        source,
    })?;
    send(stream, req).await
}

/// Sends a request on an open connection and reads the answer line.
pub async fn send(mut stream: UnixStream, req: &Value) -> Result<(Value, UnixStream), ShimError> {
    let mut line = serde_json::to_vec(req).map_err(|e| ShimError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .map_err(|e| ShimError::Protocol(format!("write: {e}")))?;
    let ans = read_answer(&mut stream).await?;
    Ok((ans, stream))
}

/// Reads one answer line byte by byte (so no container output is swallowed into a buffer).
pub async fn read_answer(rd: &mut UnixStream) -> Result<Value, ShimError> {
    let mut buf = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = rd
            .read(&mut b)
            .await
            .map_err(|e| ShimError::Protocol(format!("read: {e}")))?;
        if n == 0 {
            return Err(ShimError::Protocol("shim closed the connection".into()));
        }
        if b[0] == b'\n' {
            break;
        }
        buf.push(b[0]);
        if buf.len() > 1 << 20 {
            return Err(ShimError::Protocol("answer line too long".into()));
        }
    }
    let v: Value = serde_json::from_slice(&buf)
        .map_err(|e| ShimError::Protocol(format!("bad answer: {e}")))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(ShimError::Refused(e.to_string()));
    }
    Ok(v)
}

/// A one-shot request whose connection is not needed afterwards.
pub async fn call(sock: &Path, req: Value) -> Result<Value, ShimError> {
    Ok(request(sock, &req).await?.0)
}

/// Opens an attach connection; the returned stream carries output after the answer line.
pub async fn attach(
    sock: &Path,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<UnixStream, ShimError> {
    let req = serde_json::json!({"op":"attach","stdin":stdin,"stdout":stdout,"stderr":stderr});
    Ok(request(sock, &req).await?.1)
}
