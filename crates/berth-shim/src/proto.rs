//! Requests and responses on `shim.sock`, the startup report, and `exit.json`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One JSON request line, the first thing a client sends on a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Stream the container's output (and feed its stdin) on this connection.
    Attach {
        /// Forward what the client writes to the container's stdin.
        #[serde(default)]
        stdin: bool,
        /// Send stdout.
        #[serde(default)]
        stdout: bool,
        /// Send stderr.
        #[serde(default)]
        stderr: bool,
    },
    /// Let the container `execve`.
    Start,
    /// Resize the container's terminal (or an exec's, with `exec_id`).
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
        /// The exec whose terminal to resize.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// Run another process in the running container; the connection then carries its
    /// output (and stdin) like `attach`, and is closed when it has ended.
    Exec {
        /// The caller's name for this exec (for `exec-state` and `resize`).
        id: String,
        /// The process (OCI `process`: args, env, cwd, user, terminal, capabilities, ...).
        process: Box<oci_spec::runtime::Process>,
        /// Forward what the client writes to its stdin (closed when the client shuts down
        /// its write half).
        #[serde(default)]
        stdin: bool,
        /// Send stdout.
        #[serde(default)]
        stdout: bool,
        /// Send stderr.
        #[serde(default)]
        stderr: bool,
    },
    /// Freeze every process of the container (`docker pause`).
    Pause,
    /// Thaw a paused container.
    Resume,
    /// Report resource usage (`{"ok":true,"stats":{...}}`).
    Stats,
    /// Report an exec's pid, status and exit code.
    #[serde(rename = "exec-state")]
    ExecState {
        /// The exec's id.
        id: String,
    },
    /// Send a signal to the container's init (or, with `all`, to every process in it).
    Kill {
        /// Signal number (default 15).
        #[serde(default = "sigterm")]
        signal: i32,
        /// Signal every process in the container's cgroup.
        #[serde(default)]
        all: bool,
    },
    /// Report pid and status.
    State,
    /// Answer once the container has ended.
    Wait,
}

fn sigterm() -> i32 {
    15
}

/// The container's status as the shim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, waiting for `start`.
    Created,
    /// Its process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// It has ended.
    Stopped,
}

/// One JSON response line: `{"ok":true,...}` or `{"error":"..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Success.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ok: bool,
    /// The error message, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The container's init pid (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The container's status (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Exit code (`wait`, `state` once stopped; also on a failed `start`: 127 or 126).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer killed a process of the container (`wait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// Resource usage (`stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<berth_runtime::cgroups::Stats>,
}

impl Response {
    /// `{"ok":true}`.
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    /// `{"error":msg}`.
    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            error: Some(msg.into()),
            ..Default::default()
        }
    }

    /// This response as one `\n`-terminated line.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// The line the shim's first process prints on stdout: `{"pid":N}` or `{"error":"..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartupReport {
    /// The container's init pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Why the container could not be created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `exit.json`, written by the shim when the container ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitFile {
    /// Exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// Whether the OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// When the container ended (RFC 3339, UTC, nanoseconds).
    pub finished_at: String,
}

/// Connects to a shim socket, sends `req` and reads the one-line response. The stream is
/// returned for `attach` (it then carries the container's output).
pub fn call(
    sock: &Path,
    req: &Request,
    timeout: Option<Duration>,
) -> io::Result<(Response, UnixStream)> {
    let (path, _dir) = berth_runtime::unix_socket_path(sock)?;
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(timeout)?;
    let mut line = serde_json::to_string(req).map_err(io::Error::other)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let resp = read_line(&mut s)?;
    let resp: Response = serde_json::from_str(&resp).map_err(io::Error::other)?;
    Ok((resp, s))
}

/// Reads one `\n`-terminated line byte by byte (so nothing after it is consumed).
pub fn read_line(s: &mut impl io::Read) -> io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => out.push(b[0]),
        }
        if out.len() > 1 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
    if out.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response"));
    }
    String::from_utf8(out).map_err(io::Error::other)
}

/// Reads one request line from a buffered connection.
pub fn read_request(r: &mut BufReader<UnixStream>) -> io::Result<Request> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    serde_json::from_str(line.trim_end()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r: Request =
            serde_json::from_str(r#"{"op":"attach","stdin":true,"stdout":true,"stderr":false}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::Attach {
                stdin: true,
                stdout: true,
                stderr: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"kill","signal":9}"#).unwrap();
        assert_eq!(
            r,
            Request::Kill {
                signal: 9,
                all: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"kill"}"#).unwrap();
        assert_eq!(
            r,
            Request::Kill {
                signal: 15,
                all: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"resize","width":80,"height":24}"#).unwrap();
        assert_eq!(
            r,
            Request::Resize {
                width: 80,
                height: 24,
                exec_id: None
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"exec-state","id":"e1"}"#).unwrap();
        assert_eq!(r, Request::ExecState { id: "e1".into() });
        let r: Request = serde_json::from_str(
            r#"{"op":"exec","id":"e1","process":{"args":["ls"],"cwd":"/","user":{"uid":0,"gid":0}},"stdout":true}"#,
        )
        .unwrap();
        match r {
            Request::Exec {
                id,
                process,
                stdout,
                stdin,
                ..
            } => {
                assert_eq!(id, "e1");
                assert_eq!(process.args().as_ref().unwrap()[0], "ls");
                assert!(stdout && !stdin);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            serde_json::to_string(&Request::Start).unwrap(),
            r#"{"op":"start"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Wait).unwrap(),
            r#"{"op":"wait"}"#
        );
    }

    #[test]
    fn responses_serialize() {
        assert_eq!(Response::ok().to_line(), "{\"ok\":true}\n");
        assert_eq!(Response::err("x").to_line(), "{\"error\":\"x\"}\n");
        let r = Response {
            ok: true,
            pid: Some(5),
            status: Some(Status::Stopped),
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ok":true,"pid":5,"status":"stopped","exit_code":0}"#
        );
        let e = ExitFile {
            exit_code: 137,
            oom_killed: false,
            finished_at: "t".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"exit_code":137,"oom_killed":false,"finished_at":"t"}"#
        );
        let s: StartupReport = serde_json::from_str(r#"{"pid":42}"#).unwrap();
        assert_eq!(s.pid, Some(42));
    }
}
