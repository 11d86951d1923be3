//! `berth-runc`: the built-in runtime behind the OCI runtime command line (the subset the shim
//! and conformance tools use), so that one bundle can run under it and under runc and be
//! compared: `[--root DIR] [--log FILE] [--log-format json|text] COMMAND`, with
//! `create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] ID`, `start ID`,
//! `state ID`, `kill ID [SIGNAL]`, `delete [--force] ID`.
//!
//! `create` forks a keeper that creates the container (the init waits before `execve`) and
//! waits on `<root>/<id>/start.sock`; `start` tells it to let the init go, after which the
//! keeper exits and the init is reparented (to the caller's subreaper, as with runc).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use berth_runtime::oci_spec::runtime::Spec;
use berth_runtime::{ContainerStdio, ForkResult};
use serde_json::{Value, json};

type R<T = ()> = Result<T, String>;

struct Global {
    root: PathBuf,
    log: Option<PathBuf>,
    json_log: bool,
}

impl Global {
    fn fail(&self, msg: &str) -> ! {
        if let Some(l) = &self.log {
            if let Ok(mut f) = File::options().create(true).append(true).open(l) {
                let line = if self.json_log {
                    json!({"level": "error", "msg": msg}).to_string()
                } else {
                    format!("level=error msg={msg:?}")
                };
                let _ = writeln!(f, "{line}");
            }
        }
        eprintln!("berth-runc: {msg}");
        std::process::exit(1)
    }

    fn dir(&self, id: &str) -> R<PathBuf> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(format!("invalid container id {id:?}"));
        }
        Ok(self.root.join(id))
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut g = Global {
        root: PathBuf::from("/run/berth-runc"),
        log: None,
        json_log: false,
    };
    // Global options before the command.
    while let Some(a) = args.first().cloned() {
        let (k, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let take = |args: &mut Vec<String>| -> String {
            args.remove(0);
            inline.clone().unwrap_or_else(|| {
                if args.is_empty() {
                    String::new()
                } else {
                    args.remove(0)
                }
            })
        };
        match k.as_str() {
            "--root" => g.root = PathBuf::from(take(&mut args)),
            "--log" => g.log = Some(PathBuf::from(take(&mut args))),
            "--log-format" => g.json_log = take(&mut args) == "json",
            "--debug" | "--systemd-cgroup" => {
                args.remove(0);
            }
            _ => break,
        }
    }
    if args.is_empty() {
        g.fail("usage: berth-runc [--root DIR] create|start|state|kill|delete ID");
    }
    let cmd = args.remove(0);
    let r = match cmd.as_str() {
        "create" => create(&g, args),
        "start" => start(&g, args),
        "state" => state(&g, args),
        "kill" => kill(&g, args),
        "delete" => delete(&g, args),
        other => Err(format!("unknown command {other:?}")),
    };
    if let Err(e) = r {
        g.fail(&e);
    }
}

/// Splits `--flag value` / `--flag=value` / `--switch` options from positional arguments.
/// Parsed options (`name`, `value`) and positional arguments.
type Parsed = (Vec<(String, String)>, Vec<String>);

fn options(args: Vec<String>, with_value: &[&str]) -> R<Parsed> {
    let (mut opts, mut pos) = (Vec::new(), Vec::new());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if let Some(f) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) {
            let (k, v) = match f.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None if with_value.contains(&f) => (
                    f.to_string(),
                    it.next().ok_or_else(|| format!("--{f} needs a value"))?,
                ),
                None => (f.to_string(), String::new()),
            };
            opts.push((k, v));
        } else {
            pos.push(a);
        }
    }
    Ok((opts, pos))
}

fn one_id(pos: &[String]) -> R<&str> {
    match pos {
        [id, ..] => Ok(id),
        [] => Err("a container id is required".into()),
    }
}

fn create(g: &Global, args: Vec<String>) -> R {
    let (opts, pos) = options(args, &["bundle", "b", "pid-file", "console-socket"])?;
    let id = one_id(&pos)?.to_string();
    let get = |k: &[&str]| {
        opts.iter()
            .find(|(o, _)| k.contains(&o.as_str()))
            .map(|(_, v)| v.clone())
    };
    let bundle = PathBuf::from(get(&["bundle", "b"]).unwrap_or_else(|| ".".into()));
    let bundle = std::fs::canonicalize(&bundle).map_err(|e| format!("bundle: {e}"))?;
    let mut spec =
        Spec::load(bundle.join("config.json")).map_err(|e| format!("config.json: {e}"))?;
    if let Some(root) = spec.root().clone() {
        if root.path().is_relative() {
            let mut r = root.clone();
            r.set_path(bundle.join(root.path()));
            spec.set_root(Some(r));
        }
    }
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let console = get(&["console-socket"]);
    if terminal && console.is_none() {
        return Err(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        );
    }
    let dir = g.dir(&id)?;
    if dir.exists() {
        return Err(format!("container with id exists: {id}"));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("state dir: {e}"))?;
    let listener =
        UnixListener::bind_addr(&start_addr(&dir)?).map_err(|e| format!("start socket: {e}"))?;
    std::fs::write(dir.join("created"), "").map_err(|e| e.to_string())?;
    let stdio = if terminal {
        ContainerStdio::Terminal
    } else {
        let dup =
            |f: std::os::fd::BorrowedFd<'_>| f.try_clone_to_owned().map_err(|e| e.to_string());
        ContainerStdio::Fds {
            stdin: dup(std::io::stdin().as_fd())?,
            stdout: dup(std::io::stdout().as_fd())?,
            stderr: dup(std::io::stderr().as_fd())?,
        }
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (mut rd, wr) = (File::from(rd), File::from(wr));
    match berth_runtime::fork().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(rd);
            keeper(&id, &spec, stdio, console, listener, wr)
        }
        ForkResult::Parent { .. } => {}
    }
    drop(wr);
    drop(listener);
    // One line: the init (not yet exec'd) still holds the pipe, so there is no EOF to wait for.
    let mut answer = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut rd), &mut answer);
    let v: Value = serde_json::from_str(&answer).unwrap_or(json!({"error": "the keeper died"}));
    if let Some(e) = v["error"].as_str() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e.to_string());
    }
    let pid = v["pid"].as_i64().unwrap_or(0);
    let cgroups = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| berth_runtime::default_cgroups_path(&id));
    let st = json!({"id": id, "pid": pid, "bundle": bundle, "cgroupsPath": cgroups});
    std::fs::write(dir.join("state.json"), st.to_string()).map_err(|e| e.to_string())?;
    if let Some(p) = get(&["pid-file"]) {
        std::fs::write(p, pid.to_string()).map_err(|e| format!("pid file: {e}"))?;
    }
    Ok(())
}

/// The keeper: creates the container, reports, waits for `start`, then exits.
fn keeper(
    id: &str,
    spec: &Spec,
    stdio: ContainerStdio,
    console: Option<String>,
    listener: UnixListener,
    mut report: impl Write,
) -> ! {
    let _ = berth_runtime::daemonize_setsid();
    let created = berth_runtime::create(id, spec, stdio);
    let mut created = match created {
        Ok(c) => c,
        Err(e) => {
            let _ = report.write_all(json!({"error": e.to_string()}).to_string().as_bytes());
            let _ = report.write_all(b"\n");
            std::process::exit(1);
        }
    };
    if let Some(sock) = console {
        let sent = (|| -> R {
            let m = created.take_pty_master().ok_or("no terminal")?;
            let c = UnixStream::connect(&sock).map_err(|e| format!("console socket: {e}"))?;
            berth_runtime::sys::send_packet(&c, b"console", &[m.as_fd()]).map_err(|e| e.to_string())
        })();
        if let Err(e) = sent {
            let _ = berth_runtime::kill(created.pid(), 9);
            let _ = report.write_all(json!({"error": e}).to_string().as_bytes());
            let _ = report.write_all(b"\n");
            std::process::exit(1);
        }
    }
    let _ = report.write_all(json!({"pid": created.pid()}).to_string().as_bytes());
    let _ = report.write_all(b"\n");
    drop(report);
    // Do not hold the caller's stdio (the container's pipes) while waiting.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let Ok((mut conn, _)) = listener.accept() else {
        std::process::exit(1)
    };
    let reply = match created.start() {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = conn.write_all(reply.as_bytes());
    std::process::exit(0)
}

/// The keeper's socket: in the abstract namespace (state paths under a bundle can exceed
/// `sun_path`), named after the state directory.
fn start_addr(dir: &Path) -> R<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    // FNV-1a of the path: short and stable.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    std::os::unix::net::SocketAddr::from_abstract_name(format!("berth-runc/{h:016x}"))
        .map_err(|e| e.to_string())
}

fn start(g: &Global, args: Vec<String>) -> R {
    let (_, pos) = options(args, &[])?;
    let dir = g.dir(one_id(&pos)?)?;
    let mut c = UnixStream::connect_addr(&start_addr(&dir)?)
        .map_err(|_| "cannot start a container that is not created".to_string())?;
    let _ = std::fs::remove_file(dir.join("created"));
    // The connection itself is the signal: the keeper starts the init on accept.
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    if reply == "ok" { Ok(()) } else { Err(reply) }
}

fn load(g: &Global, id: &str) -> R<Value> {
    let text = std::fs::read_to_string(g.dir(id)?.join("state.json"))
        .map_err(|_| format!("container does not exist: {id}"))?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn status(dir: &Path, pid: i32) -> &'static str {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|s| s.trim_start().starts_with('Z'));
    if pid <= 0 || stat.is_empty() || zombie {
        "stopped"
    } else if dir.join("created").exists() {
        "created"
    } else {
        "running"
    }
}

fn state(g: &Global, args: Vec<String>) -> R {
    let (_, pos) = options(args, &[])?;
    let id = one_id(&pos)?;
    let st = load(g, id)?;
    let pid = st["pid"].as_i64().unwrap_or(0) as i32;
    let out = json!({
        "ociVersion": "1.0.2", "id": id, "status": status(&g.dir(id)?, pid),
        "pid": pid, "bundle": st["bundle"],
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

fn signal(s: &str) -> R<i32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG");
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "WINCH" => 28,
        _ => return Err(format!("unknown signal {s:?}")),
    };
    Ok(n)
}

fn kill(g: &Global, args: Vec<String>) -> R {
    let (_, pos) = options(args, &[])?;
    let id = one_id(&pos)?;
    let sig = signal(pos.get(1).map_or("TERM", String::as_str))?;
    let pid = load(g, id)?["pid"].as_i64().unwrap_or(0) as i32;
    if status(&g.dir(id)?, pid) == "stopped" {
        return Err("container not running".into());
    }
    berth_runtime::kill(pid, sig).map_err(|e| format!("kill: {e}"))
}

fn delete(g: &Global, args: Vec<String>) -> R {
    let (opts, pos) = options(args, &[])?;
    let force = opts.iter().any(|(k, _)| k == "force" || k == "f");
    let id = one_id(&pos)?;
    let dir = g.dir(id)?;
    let st = load(g, id)?;
    let pid = st["pid"].as_i64().unwrap_or(0) as i32;
    if status(&dir, pid) != "stopped" {
        if !force {
            return Err(format!("cannot delete container {id} that is not stopped"));
        }
        let _ = berth_runtime::kill(pid, 9);
    }
    if let Some(cg) = st["cgroupsPath"].as_str() {
        let _ = berth_runtime::delete_cgroups(cg);
    }
    std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
}
