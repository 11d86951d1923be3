//! Driving an external OCI runtime (runc, crun, …) through its command line instead of the
//! built-in runtime: `create` (with `--console-socket` for a terminal), `start`, `delete`.
//!
//! berthd names the runtime in the bundle's spec annotations ([`PATH_ANNOTATION`],
//! [`ARGS_ANNOTATION`]). The container's init is reparented to the shim (a child subreaper)
//! when `runc create` exits, so waiting, signals, exec (setns) and cgroups work as with the
//! built-in runtime.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_runtime::ContainerStdio;
use berth_runtime::oci_spec::runtime::Spec;

/// Spec annotation holding the runtime binary's path.
pub const PATH_ANNOTATION: &str = "io.berth.runtime.path";
/// Spec annotation holding the runtime's extra arguments (a JSON array of strings).
pub const ARGS_ANNOTATION: &str = "io.berth.runtime.args";

/// How long `create` may take before the shim gives up (berthd waits 60 s for the shim).
const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// An external OCI runtime, with its state kept under the bundle.
#[derive(Debug, Clone)]
pub struct Runtime {
    path: PathBuf,
    args: Vec<String>,
    root: PathBuf,
    log: PathBuf,
}

/// A container created by an external runtime, waiting for `start`.
#[derive(Debug)]
pub struct Created {
    rt: Runtime,
    id: String,
    pid: i32,
    master: Option<OwnedFd>,
}

impl Runtime {
    /// The runtime named by `spec`'s annotations, if any.
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Option<Runtime> {
        let a = spec.annotations().as_ref()?;
        let path = a.get(PATH_ANNOTATION)?;
        let args = a
            .get(ARGS_ANNOTATION)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        Some(Runtime {
            path: PathBuf::from(path),
            args,
            root: bundle.join("runtime-state"),
            log: bundle.join("runtime.log"),
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.args(&self.args)
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        c
    }

    /// The last error the runtime logged (its `--log` file), else `fallback`.
    fn last_error(&self, fallback: String) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["level"] == "error" || v["level"] == "fatal")
            .and_then(|v| v["msg"].as_str().map(str::to_string))
            .unwrap_or(fallback)
    }

    /// `create`: sets the container up; its process waits for [`Created::start`]. Runs before
    /// the shim reaps children, so waiting on the runtime's process here is safe.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ContainerStdio,
        terminal: bool,
    ) -> Result<Created, String> {
        std::fs::create_dir_all(&self.root).map_err(|e| format!("runtime root: {e}"))?;
        let pid_file = bundle.join("runtime.pid");
        let mut c = self.cmd();
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        let console = bundle.join("console.sock");
        let listener = if terminal {
            let _ = std::fs::remove_file(&console);
            let l = UnixListener::bind(&console).map_err(|e| format!("console socket: {e}"))?;
            c.arg("--console-socket").arg(&console);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Some(l)
        } else {
            match stdio {
                // The runtime hands its own stdio to the container's process.
                ContainerStdio::Fds {
                    stdin,
                    stdout,
                    stderr,
                } => {
                    c.stdin(Stdio::from(stdin))
                        .stdout(Stdio::from(stdout))
                        .stderr(Stdio::from(stderr));
                }
                ContainerStdio::Terminal => return Err("terminal without a console".into()),
            }
            None
        };
        c.arg(id);
        // Bounded: a runtime that never returns must not hang the shim (and berthd's start).
        let status = c
            .spawn()
            .map_err(|e| format!("exec {}: {e}", self.path.display()))
            .and_then(|mut child| {
                let deadline = std::time::Instant::now() + CREATE_TIMEOUT;
                loop {
                    match child.try_wait() {
                        Ok(Some(st)) => return Ok(st),
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                        Ok(None) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return Err(format!(
                                "{} create did not finish in {:?}",
                                self.path.display(),
                                CREATE_TIMEOUT
                            ));
                        }
                        Err(e) => return Err(format!("wait for {}: {e}", self.path.display())),
                    }
                }
            });
        // Our copies of the container's pipe ends are closed by now (moved into `c`).
        drop(c);
        let status = status?;
        if !status.success() {
            let _ = std::fs::remove_file(&console);
            return Err(self.last_error(format!("{} create failed: {status}", self.path.display())));
        }
        let master = match listener {
            Some(l) => {
                // runc connected and sent the master before it exited: the connection waits
                // in the backlog.
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                let (conn, _) = l.accept().map_err(|e| format!("console socket: {e}"))?;
                conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                let owned = OwnedFd::from(conn);
                let (_, mut fds) = berth_runtime::sys::recv_packet(&owned)
                    .map_err(|e| format!("receive console: {e}"))?;
                let _ = std::fs::remove_file(&console);
                Some(fds.pop().ok_or("the runtime sent no console")?)
            }
            None => None,
        };
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("the runtime wrote no pid file")?;
        Ok(Created {
            rt: self.clone(),
            id: id.to_string(),
            pid,
            master,
        })
    }

    /// `delete --force`: removes the runtime's state (and its cgroups) after the end.
    pub fn delete(&self, id: &str) {
        let _ = self
            .cmd()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Created {
    /// The container's init, in the shim's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The terminal master received over the console socket (once).
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.master.take()
    }

    /// `start`. The shim's reaper may collect the runtime's process, so success is read
    /// from its error output (empty) rather than from its exit status.
    pub fn start(self) -> Result<(), String> {
        let child = self
            .rt
            .cmd()
            .args(["start", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("exec {}: {e}", self.rt.path.display()))?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            let _ = e.read_to_string(&mut err);
        }
        if err.trim().is_empty() {
            Ok(())
        } else {
            Err(self.rt.last_error(err.trim().to_string()))
        }
    }
}
