//! Shared test harness: a private berthd per test (own data-root, exec-root, short socket path under
//! /tmp), the berth and docker CLIs pointed at it with a private client config, a busybox image made
//! from the host's static busybox, a real `docker-registry`, and a pseudo-terminal driver.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private daemon; on drop its containers, shims, mounts and directory go away.
pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
    pub host: String,
    /// The client config directory (DOCKER_CONFIG) both CLIs use in this test.
    pub config: PathBuf,
}

impl Daemon {
    pub fn start() -> Option<Daemon> {
        if !is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let berthd = bin_dir().join("berthd");
        if !berthd.exists() || !bin_dir().join("berth-shim").exists() {
            eprintln!("skipping: berthd or berth-shim not built");
            return None;
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        // Short: <exec-root>/containers/<64 hex>/shim.sock must fit a unix socket path (107 bytes).
        let dir = PathBuf::from(format!("/tmp/b{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("d.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.join("berthd.log")).unwrap();
        let child = Command::new(&berthd)
            .args(["--data-root", dir.join("data").to_str().unwrap()])
            .args(["--exec-root", dir.join("e").to_str().unwrap()])
            .args(["-H", &host])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let config = dir.join("cfg");
        let d = Daemon {
            child,
            dir,
            host,
            config,
        };
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "berthd did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    fn env(&self, c: &mut Command) {
        c.env("BERTH_HOST", &self.host)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config)
            .env("HOME", &self.dir)
            .env("DOCKER_CLI_HINTS", "false");
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(args);
        self.env(&mut c);
        c
    }

    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args);
        self.env(&mut c);
        c
    }

    /// berth with stdin from /dev/null, bounded in time.
    pub fn run(&self, args: &[&str]) -> Output {
        bounded(self.cmd(args).stdin(Stdio::null()))
    }

    /// The docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        bounded(self.docker_cmd(args).stdin(Stdio::null()))
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        with_stdin(self.cmd(args), input)
    }

    pub fn docker_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        with_stdin(self.docker_cmd(args), input)
    }

    /// Imports the static busybox as `tag`; None when the host has none.
    pub fn busybox(&self, tag: &str) -> Option<()> {
        let tar = busybox_tar(&self.dir)?;
        let o = self.run(&["import", tar.to_str().unwrap(), tag]);
        assert_eq!(code(&o), 0, "import: {}", err(&o));
        Some(())
    }
}

fn with_stdin(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    wait_bounded(child)
}

fn bounded(c: &mut Command) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child)
}

/// Waits at most 120 s for a command (a hung CLI fails the test instead of hanging it).
fn wait_bounded(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let o = child.wait_with_output().unwrap();
    let _ = tx.send(());
    o
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(o) = self.cmd(&["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        // SIGTERM first: with no container left, berthd removes its bridges and nftables table.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(5)
            && matches!(self.child.try_wait(), Ok(None))
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims (and their containers) outlive berthd by design: end the ones this daemon started.
        let dir = self.dir.to_string_lossy().into_owned();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let pid = p.file_name().to_string_lossy().into_owned();
                if !pid.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&format!("{dir}/")) {
                    let _ = Command::new("kill").args(["-9", &pid]).status();
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&format!("{dir}/")))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
        if std::env::var_os("BERTH_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A busybox rootfs tarball made from the host's static busybox; None when the host has none.
pub fn busybox_tar(dir: &Path) -> Option<PathBuf> {
    berth_testkit::busybox()?;
    Some(berth_testkit::busybox_tar(
        dir,
        "rootfs.tar",
        berth_testkit::Users::Basic,
    ))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `docker-registry` on a free loopback port, optionally behind htpasswd; killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Registry {
    pub fn start(dir: &Path, htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = dir.join(format!("registry-{}", SEQ.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let auth = match htpasswd {
            None => String::new(),
            Some((u, p)) => {
                let o = Command::new("htpasswd")
                    .args(["-Bbn", u, p])
                    .output()
                    .unwrap();
                assert!(o.status.success());
                let f = dir.join("htpasswd");
                std::fs::write(&f, o.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                    f.display()
                )
            }
        };
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs berth in a pseudo-terminal (python3's pty, 30x100), and for each step waits for its text then
/// sends its input (`@resize ROWS COLS` resizes the terminal instead); then waits (bounded) for the
/// exit; returns (exit code, everything the terminal showed).
pub fn pty_run(d: &Daemon, args: &[&str], steps: &[(&str, &str)]) -> (i32, String) {
    let script = r##"
import os, pty, sys, time, select, json, fcntl, termios, struct
steps = json.loads(sys.argv[1])
args = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.execv(args[0], args)
buf = b""
def read_until(pat, timeout=20):
    global buf
    end = time.time() + timeout
    while pat not in buf and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    return pat in buf
for wait, send in steps:
    if not read_until(wait.encode()):
        sys.stdout.write("MISSING %r\n" % wait)
    if send.startswith("@resize "):
        rows, cols = map(int, send.split()[1:3])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        time.sleep(0.5)
    else:
        os.write(fd, send.encode())
status = None
end = time.time() + 20
while status is None and time.time() < end:
    read_until(b"__never__", 0.3)
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        status = st
if status is None:
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write("HUNG\n")
sys.stdout.write(buf.decode(errors="replace"))
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 99)
"##;
    let steps: Vec<[&str; 2]> = steps.iter().map(|(a, b)| [*a, *b]).collect();
    let steps = serde_json::to_string(&steps).unwrap();
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(script)
        .arg(steps)
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(args);
    d.env(&mut c);
    let o = bounded(c.stdin(Stdio::null()));
    (code(&o), out(&o))
}
