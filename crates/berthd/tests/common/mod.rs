//! A private berthd per test, driven with the real docker CLI; cleaned up by a Drop guard.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Output of one command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command with a deadline; kills it when the deadline passes.
pub fn run_with_timeout(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn command");
    if let Some(data) = stdin {
        let mut si = child.stdin.take().unwrap();
        si.write_all(data).unwrap();
    }
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let st = child.wait().unwrap();
            eprintln!("command timed out after {limit:?}: {cmd:?}");
            break st;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

/// Whether the integration tier can run here (root, docker CLI).
pub fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return false;
    }
    if !Path::new(docker_bin()).exists() {
        eprintln!("skipping: no docker CLI at {}", docker_bin());
        return false;
    }
    ensure_shim();
    true
}

/// The docker CLI: `/usr/local/bin/docker`, else the first `docker` on `PATH`.
pub fn docker_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let preferred = Path::new("/usr/local/bin/docker");
        if preferred.exists() {
            return preferred.display().to_string();
        }
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("docker"))
                    .find(|d| d.is_file())
            })
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| preferred.display().to_string())
    })
}

fn berthd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berthd"))
}

/// Builds berth-shim next to berthd when it is missing.
fn ensure_shim() {
    let shim = berthd_bin().with_file_name("berth-shim");
    if shim.exists() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-p", "berth-shim"])
        .status()
        .expect("cargo build -p berth-shim");
    assert!(st.success(), "building berth-shim failed");
}

/// A private daemon: own data-root, exec-root and short socket path.
#[derive(Debug)]
pub struct TestDaemon {
    pub dir: PathBuf,
    pub sock: PathBuf,
    /// The exec-root's name under `dir`.
    exec: String,
    child: Option<Child>,
}

impl TestDaemon {
    pub fn start() -> TestDaemon {
        Self::start_with_exec_root("exec")
    }

    /// A daemon whose exec-root is `dir/<exec>` (a long name makes socket paths overflow).
    pub fn start_with_exec_root(exec: &str) -> TestDaemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/bt-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("docker-config")).unwrap();
        let sock = PathBuf::from(format!("/tmp/bt-{}-{n}.sock", std::process::id()));
        let mut d = TestDaemon {
            dir,
            sock,
            exec: exec.to_string(),
            child: None,
        };
        d.spawn();
        d
    }

    /// Starts (or restarts) berthd on the same roots.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("berthd.log"))
            .unwrap();
        let child = Command::new(berthd_bin())
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join(&self.exec))
            .arg("--config-file")
            .arg(self.config_file())
            .arg("--debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(r) = self.raw("GET", "/_ping", None) {
                if r.status == 200 {
                    return;
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!("berthd did not come up; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config_file(&self) -> PathBuf {
        let p = self.dir.join("daemon.json");
        if !p.exists() {
            std::fs::write(&p, "{}").unwrap();
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("berthd.log")).unwrap_or_default()
    }

    /// Stops berthd with SIGTERM, waiting up to 5 s (containers keep running).
    pub fn terminate(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills berthd with SIGKILL (containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Out {
        self.docker_in(args, None)
    }

    /// Runs the docker CLI with stdin data.
    pub fn docker_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut cmd = Command::new(docker_bin());
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .env_remove("DOCKER_CONTEXT");
        run_with_timeout(cmd, stdin, Duration::from_secs(60))
    }

    /// Runs the berth CLI (built next to berthd when missing) against this daemon.
    pub fn berth(&self, args: &[&str]) -> Out {
        let p = berthd_bin().with_file_name("berth");
        if !p.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo).args(["build", "-p", "berth"]).status();
            assert!(st.expect("cargo build -p berth").success());
        }
        let mut c = Command::new(p);
        c.args(args)
            .env("BERTH_HOST", format!("unix://{}", self.sock.display()));
        run_with_timeout(c, None, Duration::from_secs(60))
    }

    /// Runs docker and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert_eq!(
            o.code,
            0,
            "docker {args:?} failed: {}{}\nberthd log tail:\n{}",
            o.stdout,
            o.stderr,
            tail(&self.log(), 30)
        );
        o.stdout
    }

    /// One raw HTTP/1.1 request over the socket.
    pub fn raw(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<RawResp> {
        let mut s = UnixStream::connect(&self.sock)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // The server may answer (and close) before reading a body it refuses.
        let _ = s.write_all(req.as_bytes());
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if buf.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        Ok(RawResp {
            status,
            head: head.to_string(),
            body: body.to_string(),
        })
    }

    /// Imports a busybox rootfs as `busybox:local`.
    pub fn import_busybox(&self) {
        let tar = busybox_tar(&self.dir);
        let o = self.docker(&["import", tar.to_str().unwrap(), "busybox:local"]);
        assert_eq!(o.code, 0, "import failed: {}", o.stderr);
        assert!(o.stdout.trim().starts_with("sha256:"), "{}", o.stdout);
    }
}

/// A raw response.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Makes `busybox.tar` (a rootfs with /bin/busybox and its applet links) in `dir`.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    berth_testkit::busybox_tar(dir, "busybox.tar", berth_testkit::Users::Basic)
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // Kill every container process this daemon started (their shims then exit).
        let data = self.dir.join("data/containers");
        if let Ok(rd) = std::fs::read_dir(&data) {
            for e in rd.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path().join("config.v2.json")) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                        let pid = v["State"]["Pid"].as_i64().unwrap_or(0);
                        if pid > 1 && v["State"]["Running"].as_bool() == Some(true) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
        }
        if self.child.is_some() {
            // Give the daemon a moment to record exits and unmount.
            std::thread::sleep(Duration::from_millis(300));
        }
        // SIGTERM first: with no container left running berthd removes its bridges and nft table.
        self.terminate();
        self.kill9();
        clean_network(&self.dir.join("data"));
        // Unmount whatever is left under our roots, deepest first.
        let prefix = self.dir.display().to_string();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mps: Vec<String> = info
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mps {
                let _ = berth_runtime::unmount(Path::new(&m));
            }
        }
        let _ = std::fs::remove_file(&self.sock);
        if std::env::var_os("BERTH_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The tag berthd derives its bridge names and nft table from for a non-default data root.
pub fn network_tag(data_root: &Path) -> String {
    let h = data_root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
        });
    format!("{:06x}", h & 0xff_ffff)
}

/// Removes whatever a killed daemon of `data_root` left in the kernel: its bridges, veths on them,
/// its nftables table (a daemon stopped cleanly leaves none of these).
pub fn clean_network(data_root: &Path) {
    let tag = network_tag(data_root);
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    for l in String::from_utf8_lossy(&links.stdout).lines() {
        let name = l
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        let master =
            l.contains(&format!("master bt{tag}0")) || l.contains(&format!("master b{tag}-"));
        if name == format!("bt{tag}0") || name.starts_with(&format!("b{tag}-")) || master {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", &format!("berth_{tag}")])
        .stderr(Stdio::null())
        .status();
}
